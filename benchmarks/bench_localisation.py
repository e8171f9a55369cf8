"""Localisation of `icreward explain`: where (maps) and when (curves) held-out synthetic local failures happen.

    python benchmarks/bench_localisation.py [--model default] [--n 60] [--seed 20261] [--tune]

Cases: `icreward.evaluation.localisation.local_cases` (procedural scenes of a seed no recipe of the shipped model
draws from; vanishing, duplicated, drifting and swapped subjects and local content replacement, with per-frame
masks and onsets from `icreward.synth.masks`). Prints a markdown table, method x (pointing, AUROC, onset within 2,
mean onset error, n): the map candidates (what `explain` ships, its parts, the IC head's attention, the gradient of
the reward) and the curve candidates (each frame judged alone, the reward of each prefix), against the
motion-compensated pixel-difference baseline. Then whether `explain` calls a video drifting (failure videos, and
held-out consistent videos), and the time of one `explain` call on a 16-frame video with the model loaded.
`--tune` prints the onset rule's fraction on a calibration seed (`seed + 2`), which is where ONSET_FRACTION was chosen.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


def map_methods(model) -> dict:
    """Map candidates: name -> fn(image, video) -> maps [T, h, w]."""
    from icreward import explain as X
    from icreward.evaluation.localisation import compensated_difference, to_cells
    from icreward.models.evidence import EPS, evidence_maps

    cache: dict = {}

    def tokens(image, video):
        key = id(video)
        if key not in cache:
            cache.clear()
            with torch.no_grad():
                cache[key] = model.encode(image[None], video[None])
        return cache[key]

    def channel(index):
        def fn(image, video):
            tok = tokens(image, video)
            groups = model.backbone.token_groups
            with torch.no_grad():
                maps = evidence_maps(*tok, groups)[0] - math.log(EPS)  # (T, N, G*3)
            return X.smooth_map(X._to_grid(maps[..., index::3].sum(-1)))

        return fn

    def unsmoothed(image, video):
        with torch.no_grad():
            maps = evidence_maps(*tokens(image, video), model.backbone.token_groups)[0] - math.log(EPS)
        return X._to_grid(maps.sum(-1))  # (T, h, w): every distance, equal weights, no smoothing

    side = None

    def baseline(image, video):
        nonlocal side
        side = side or X.evidence_map(model, tokens(image, video)).shape[-1]
        return to_cells(compensated_difference(image, video), side)

    methods = {
        "explain map (shipped): evidence distances x read-out weights, 3x3 smoothed": lambda i, v: X.evidence_map(
            model, tokens(i, v)
        ),
        "  evidence, unweighted and unsmoothed": unsmoothed,
        "  position distance only (smoothed)": channel(0),
        "  local distance only (smoothed)": channel(1),
        "  match distance only (smoothed)": channel(2),
    }
    if getattr(model.config, "head", None) in ("map", "attention"):
        methods["IC head attention"] = lambda i, v: X.attention_map(model, tokens(i, v))
    methods["gradient: abs(d reward / d pixel), per patch"] = lambda i, v: X.gradient_map(
        model, i, v, X.evidence_map(model, tokens(i, v)).shape[-1]
    )
    methods["baseline: abs(frame - image) after camera compensation"] = baseline
    return methods


def curve_methods(model) -> dict:
    """Curve candidates: name -> fn(image, video) -> curve [T] (higher = more consistent)."""
    from icreward import explain as X
    from icreward.evaluation.localisation import compensated_difference

    def still(image, video):
        with torch.no_grad():
            return X.still_curve(model, image, video, model.encode(image[None], video[None]))

    def prefix(image, video):
        with torch.no_grad():
            return X.prefix_curve(model, image, video, model.encode(image[None], video[None]))

    return {
        "explain curve (shipped): each frame judged alone": still,
        "  reward of each prefix (frames 0..t)": prefix,
        "baseline: minus mean abs(frame - image), camera compensated": lambda i, v: (
            -compensated_difference(i, v).mean((1, 2))
        ),
    }


def time_explain(model, image, video, repeats: int = 5) -> float:
    """Median seconds of one `explain` call (after one warm-up call)."""
    from icreward.explain import explain

    explain(model, image, video)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        explain(model, image, video)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=60, help="local failure cases (default 60)")
    parser.add_argument("--consistent", type=int, default=40, help="consistent videos for the false-drift rate")
    parser.add_argument("--seed", type=int, default=None, help="held-out seed (default: HELDOUT_SEED)")
    parser.add_argument("--tune", action="store_true", help="also print the onset fraction ablation (seed + 2)")
    parser.add_argument(
        "--gradient-cases", type=int, default=20, help="cases the gradient map is scored on (about 1 s each; 0: none)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)  # the machine the goals are stated for

    import icreward
    from icreward import explain as X
    from icreward.evaluation import localisation as L

    seed = L.HELDOUT_SEED if args.seed is None else args.seed
    start = time.perf_counter()
    model = icreward.load(args.model).eval()
    cases = L.local_cases(args.n, seed=seed)
    modes = {m: sum(c.failure.mode == m for c in cases) for m in dict.fromkeys(c.failure.mode for c in cases)}
    print(f"{len(cases)} held-out local failures (seed {seed}): {modes}; model {args.model}\n")

    def onset(curve):  # when: where the curve falls, however small the fall (whether it drifts: scored below)
        return X.find_onset(curve, level=None, drop=1e-6)

    rows = {}
    for name, fn in map_methods(model).items():
        scored = cases[: args.gradient_cases] if "gradient" in name else cases
        if scored:
            rows[name] = L.evaluate(lambda i, v, fn=fn: (fn(i, v), None), scored, onset).row()
    for name, fn in curve_methods(model).items():
        rows[name] = L.evaluate(lambda i, v, fn=fn: (None, fn(i, v)), cases, onset).row()
    print(L.markdown_table(rows))

    def drifts(image, video) -> bool:
        return X.explain(model, image, video).onset is not None

    found = np.mean([drifts(c.image, c.failure.video) for c in cases])
    consistent = L.consistent_videos(args.consistent, seed=seed + 1)
    false = np.mean([drifts(i, v) for i, v in consistent])
    print(
        f"\nexplain says 'drifts': {found:.0%} of the {len(cases)} failure videos, {false:.0%} of "
        f"{len(consistent)} consistent held-out videos (DRIFT_LEVEL {X.DRIFT_LEVEL}, DRIFT_DROP {X.DRIFT_DROP})"
    )
    raw = []
    for i, v in consistent[:20]:
        with torch.no_grad():
            raw.append(float(X.evidence_map(model, model.encode(i[None], v[None])).max()))
    print(
        f"largest raw map value of consistent videos: median {np.median(raw):.2f}, 90th percentile "
        f"{np.percentile(raw, 90):.2f} (maps are divided by max(MAP_FULL_SCALE = {X.MAP_FULL_SCALE}, the video's))"
    )

    if args.tune:
        tune = L.local_cases(args.n, seed=seed + 2)
        still = curve_methods(model)["explain curve (shipped): each frame judged alone"]
        curves = [(c, still(c.image, c.failure.video)) for c in tune]
        print(f"\nonset fraction on the calibration seed {seed + 2} ({len(tune)} cases):")
        for fraction in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9):
            errors = np.array(
                [L.onset_error(X.find_onset(k, None, 1e-6, fraction), c.failure.onset, k.shape[0]) for c, k in curves]
            )
            print(f"  fraction {fraction}: within 2 {np.mean(errors <= 2):.3f}, mean error {errors.mean():.2f}")

    case = cases[0]
    seconds = time_explain(model, case.image, case.failure.video)
    print(f"\nexplain on one {case.failure.video.shape[0]}-frame video, model loaded, 2 threads: {seconds:.3f} s")
    print(f"benchmark time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
