"""`icreward synth`: generate a labelled failure-case benchmark (videos + split manifests)."""

from __future__ import annotations

import argparse
import time
from collections import Counter

from icreward.cli.common import MAX_FRAMES, MIN_FRAMES, add_quiet_option, int_range, positive_int, seed_value


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="generate a labelled failure-case benchmark (videos + split manifests)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (train/val/test.jsonl, videos.jsonl, synth.json, images/, videos/): new, empty, or an "
        "earlier synth output (its synth files are replaced); never inside, equal to or holding --images",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder that is not an earlier synth output; only synth's own files are "
        "replaced, other files are kept",
    )
    p.add_argument("--images", help="folder of source images to use instead of procedural scenes")
    p.add_argument("--n", type=int_range(3), default=None, help="number of source images, >= 3 (default: 150)")
    p.add_argument("--seed", type=seed_value, default=0, help="(default: 0)")
    p.add_argument("--holdout-modes", default="", help="comma-separated failure modes kept out of train/val")
    p.add_argument(
        "--modes",
        default=None,
        help="comma-separated failure modes to draw, or 'all' for every registered mode; 'motion' and 'text' stand "
        "for the motion modes (jitter, pingpong, stutter) and the text modes (camera_mismatch, subject_opposite, "
        "motion_missing) (frozen is always drawn; default: the first eleven, subject_drift .. subject_duplicate "
        "and frozen, without the identity modes subject_swap, identity_morph, layout_shuffle and clip_replacement "
        "or the motion and text modes)",
    )
    p.add_argument(
        "--real-share",
        type=float,
        default=None,
        help="share of source images made from real imagery, in [0, 1] (default: 0, all procedural): half are "
        "library photos with emoji sprites, half real video clips; needs the Debian packages opencv-doc, "
        "fonts-noto-color-emoji and mate-backgrounds (installed with apt-get when run as root); not with --images",
    )
    p.add_argument(
        "--frames",
        type=int_range(MIN_FRAMES, MAX_FRAMES),
        default=None,
        help=f"frames per video, {MIN_FRAMES}..{MAX_FRAMES} (default: 16)",
    )
    p.add_argument("--size", type=int_range(16, 4096), default=None, help="video side in pixels, even (default: 128)")
    p.add_argument("--tie-margin", type=float, default=None, help="|score_a - score_b| at or below this is a tie")
    p.add_argument(
        "--workers", type=positive_int, default=None, help="processes rendering videos (default: min(2, CPU count))"
    )
    add_quiet_option(p)
    return p


def config_from_args(args: argparse.Namespace):
    """A SynthConfig from the parsed options (None means the default)."""
    from dataclasses import replace

    from icreward.synth import FAILURE_MODES, SynthConfig
    from icreward.synth.failures import MOTION_MODES, TEXT_MODES

    holdout = tuple(m.strip() for m in (args.holdout_modes or "").split(",") if m.strip())
    modes = None
    if args.modes is not None:
        modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        groups = {"motion": MOTION_MODES, "text": TEXT_MODES}
        modes = tuple(FAILURE_MODES) if modes == ("all",) else tuple(x for m in modes for x in groups.get(m, (m,)))
        modes = tuple(dict.fromkeys(modes))  # each mode once, in the order given
    given = {"n": args.n, "seed": args.seed, "frames": args.frames, "size": args.size, "tie_margin": args.tie_margin}
    given |= {"real_share": args.real_share, "modes": modes}
    given = {k: v for k, v in given.items() if v is not None}
    config = replace(SynthConfig(), holdout_modes=holdout, images=args.images, **given)
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    """Generate the benchmark and print counts per split, per mode and per label."""
    from icreward.synth import generate
    from icreward.synth.dataset import check_output
    from icreward.synth.plan import SPLITS

    config = config_from_args(args)
    check_output(config, args.out, args.overwrite, flag="--out")  # before anything is rendered
    start = time.perf_counter()
    summary = generate(config, args.out, workers=args.workers, progress=not args.quiet, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    counts = summary["counts"]
    print(f"wrote {args.out} in {elapsed:.1f} s (seed {config.seed}, {config.n} source images)")
    for split in SPLITS:
        labels = counts["pair_labels"][split]
        print(
            f"  {split:5s}: {counts['images'][split]:4d} images {counts['videos'][split]:5d} videos "
            f"{counts['pairs'][split]:5d} pairs  (A {labels['A']}, B {labels['B']}, tie {labels['tie']})"
        )
    per_mode = Counter()
    for split in SPLITS:
        per_mode.update(counts["videos_per_mode"][split])
    print("  videos per mode: " + ", ".join(f"{m} {n}" for m, n in per_mode.items()))
    if config.holdout_modes:
        print(f"  held out of train/val: {', '.join(config.holdout_modes)}")
    return 0
