"""Robustness of rewards on real I2V outputs: does each image's own video beat another image's video and held-out
corruptions of itself?

    python benchmarks/bench_real_i2v.py [--models M ...] [--root ../shared/real-i2v] [--seed 0] [--max-side 256]

Builds the cases of `icreward.evaluation.robustness.build_real_i2v_tests` once from the real (image, video) pairs under
`--root` (default: `shared/real-i2v` beside the repository) and scores them with every weight-free metric
(`metric:<name>` for each of `list_metrics(offline_only=True)`) plus each `--models` entry (a checkpoint folder, a
hub id or `metric:<name>`). Prints a markdown table of accuracy in % (a tie counts half): overall, against another
image's video, against corruptions, and per held-out corruption; then names the best weight-free metric.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_ROOT = (Path(__file__).parents[1] / ".." / "shared" / "real-i2v").resolve()


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per model, accuracy % overall, by kind and per corruption."""
    corruptions = list(next(iter(results.values()))["per_corruption"])
    header = ["model", "overall", "other-image", "corruption", *corruptions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        cells = [f"`{name}`", percent(r["accuracy"]), percent(r["accuracy_other_image"])]
        cells += [percent(r["accuracy_corruption"]), *(percent(r["per_corruption"].get(c)) for c in corruptions)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[], help="models scored besides the weight-free metrics")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with manifest.jsonl of real pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    parser.add_argument("--severities", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--max-side", type=int, default=256, help="longer side media are loaded at")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    if not (args.root / "manifest.jsonl").exists():
        print(
            f"bench_real_i2v: no real I2V pairs at {args.root} (expected {args.root / 'manifest.jsonl'}); the "
            "repository is meant to sit beside shared/, or give --root",
            file=sys.stderr,
        )
        return 2

    import torch

    import icreward
    from icreward.evaluation.robustness import build_real_i2v_tests, evaluate_real_i2v
    from icreward.loading import list_metrics

    torch.manual_seed(0)
    weight_free = [f"metric:{m}" for m in list_metrics(offline_only=True)]
    models = list(dict.fromkeys(weight_free + args.models))

    start = time.perf_counter()
    cases = build_real_i2v_tests(args.root, seed=args.seed, severities=args.severities, max_side=args.max_side)
    n_sources = len({c.source for c in cases})
    print(f"{len(cases)} cases from {n_sources} real pairs in {time.perf_counter() - start:.1f}s", file=sys.stderr)

    results: dict[str, dict] = {}
    for name in models:
        start = time.perf_counter()
        results[name] = evaluate_real_i2v(icreward.load(name), cases, batch_size=args.batch_size)
        print(f"{name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)

    n_other = sum(c.kind == "other_image" for c in cases)
    print(
        f"Accuracy % on {len(cases)} cases from {n_sources} real I2V pairs under {args.root}: {n_other} against "
        f"another image's video, {len(cases) - n_other} against held-out corruptions (severities "
        f"{', '.join(f'{s:g}' for s in args.severities)}); a tie counts half.\n"
    )
    print(format_table(results))
    best = max(weight_free, key=lambda n: results[n]["accuracy"])
    print(f"\nBest weight-free metric: `{best}` ({percent(results[best]['accuracy'])}% overall).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
