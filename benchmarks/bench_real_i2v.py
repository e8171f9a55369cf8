"""Robustness of rewards on real I2V outputs: does each image's own video beat another image's video, held-out
corruptions of itself and structural corruptions (content moved or replaced, colours kept)?

    python benchmarks/bench_real_i2v.py [--models M ...] [--roots DIR ...] [--split all|select|report] [--seed 0]
        [--max-side 256] [--json-out results.json]

Builds the cases of `icreward.evaluation.robustness.build_real_i2v_check` once from the real (image, video) pairs
under `--roots` (default: `shared/real-i2v` (DynamiCrafter) and `shared/real-i2v-pia` (PIA) beside the repository),
restricted to one half of the fixed split by input image: `select` (about a third of each folder's images: choose
recipes on it), `report` (the rest: the final figure; the default, so a number quoted from this script is the one
nobody chose on) or `all` (both). It scores them with every weight-free consistency metric (`metric:<name>` for
each of `list_metrics(offline_only=True, dimension="consistency")`, or those named by `--metrics`) plus each
`--models` entry (`default`, a checkpoint folder, a hub id or `metric:<name>`). Prints which split it ran, a
markdown table of accuracy in % (a tie counts half): overall, against another image's video, against held-out
corruptions, against structural corruptions and per corruption; then names the best weight-free metric overall and
per family. `--json-out` writes the results (without the per-case rows unless `--rows`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SHARED = (Path(__file__).parents[1] / ".." / "shared").resolve()
DEFAULT_ROOTS = [SHARED / "real-i2v", SHARED / "real-i2v-pia"]
FAMILY_COLUMNS = {"other_image": "other-image", "heldout": "held-out", "structural": "structural"}


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per model, accuracy % overall, per family and per corruption."""
    corruptions = list(dict.fromkeys(c for r in results.values() for c in r["per_corruption"]))
    header = ["model", "overall", *FAMILY_COLUMNS.values(), *corruptions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        cells = [f"`{name}`", percent(r["accuracy"]), *(percent(r["per_family"][f]) for f in FAMILY_COLUMNS)]
        cells += [percent(r["per_corruption"].get(c)) for c in corruptions]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_lines(results: dict[str, dict], weight_free: list[str]) -> list[str]:
    """The best weight-free metric overall and per family present (ties: the first listed)."""
    lines = []
    for label, value in [("overall", lambda r: r["accuracy"])] + [
        (column, lambda r, f=f: r["per_family"][f]) for f, column in FAMILY_COLUMNS.items()
    ]:
        scored = [n for n in weight_free if value(results[n]) is not None]
        if scored:
            best = max(scored, key=lambda n: value(results[n]))
            lines.append(f"- {label}: `{best}` ({percent(value(results[best]))}%)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[], help="models scored besides the weight-free metrics")
    parser.add_argument("--metrics", nargs="+", help="weight-free metrics to score (default: every one)")
    parser.add_argument("--roots", type=Path, nargs="+", default=DEFAULT_ROOTS, help="folders of real pairs")
    parser.add_argument("--split", choices=["all", "select", "report"], default="report", help="half of the split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the other videos and the corruptions")
    parser.add_argument("--severities", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--corruptions", nargs="+", help="corruptions to apply (default: both families, all)")
    parser.add_argument("--sources", nargs="+", help="pair ids to build cases for (default: all of the split)")
    parser.add_argument("--others-per-video", type=int, default=4, help="other-image videos per video")
    parser.add_argument("--max-side", type=int, default=256, help="longer side media are loaded at")
    parser.add_argument("--num-frames", type=int, default=16, help="frames sampled from each video")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json-out", type=Path, help="write the results (split, cases, per model) as JSON")
    parser.add_argument("--rows", action="store_true", help="with --json-out: keep one row per case")
    args = parser.parse_args(argv)

    absent = [r / "manifest.jsonl" for r in args.roots if not (r / "manifest.jsonl").exists()]
    if absent:
        print(
            f"bench_real_i2v: no real I2V pairs at {', '.join(map(str, absent))}; the repository is meant to sit "
            "beside shared/, or give --roots",
            file=sys.stderr,
        )
        return 2

    import torch

    import icreward
    from icreward.evaluation.robustness import build_real_i2v_check, evaluate_real_i2v
    from icreward.loading import list_metrics

    torch.manual_seed(0)
    weight_free = [f"metric:{m}" for m in (args.metrics or list_metrics(offline_only=True, dimension="consistency"))]
    models = list(dict.fromkeys(weight_free + args.models))

    start = time.perf_counter()
    cases = build_real_i2v_check(
        args.roots,
        split=args.split,
        seed=args.seed,
        severities=args.severities,
        corruptions=args.corruptions,
        sources=args.sources,
        others_per_video=args.others_per_video,
        num_frames=args.num_frames,
        max_side=args.max_side,
    )
    build_s = time.perf_counter() - start
    n_sources = {f: len({c.source for c in cases if c.folder == f}) for f in dict.fromkeys(c.folder for c in cases)}
    print(f"{len(cases)} cases from {sum(n_sources.values())} real pairs in {build_s:.1f}s", file=sys.stderr)

    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for name in models:
        start = time.perf_counter()
        results[name] = evaluate_real_i2v(icreward.load(name), cases, batch_size=args.batch_size)
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f}s", file=sys.stderr)

    counts = {f: sum(c.family == f for c in cases) for f in FAMILY_COLUMNS}
    folders = ", ".join(f"{n} videos of {f}" for f, n in n_sources.items())
    print(
        f"Accuracy % on split `{args.split}` (seed {args.seed}): {len(cases)} cases from {folders}; "
        f"{counts['other_image']} against another image's video, {counts['heldout']} against held-out corruptions, "
        f"{counts['structural']} against structural corruptions (severities "
        f"{', '.join(f'{s:g}' for s in args.severities)}); a tie counts half.\n"
    )
    print(format_table(results))
    print("\nBest weight-free metric:\n" + "\n".join(best_lines(results, weight_free)))
    if args.json_out:
        keep = (lambda r: r) if args.rows else (lambda r: {k: v for k, v in r.items() if k != "rows"})
        payload = {
            "split": args.split,
            "seed": args.seed,
            "roots": [str(r) for r in args.roots],
            "severities": args.severities,
            "n_cases": len(cases),
            "cases_per_family": counts,
            "videos_per_folder": n_sources,
            "build_seconds": build_s,
            "seconds": seconds,
            "models": {name: keep(r) for name, r in results.items()},
        }
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
