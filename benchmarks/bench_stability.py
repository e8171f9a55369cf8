"""Stability of a reward under frame sampling: the real I2V pairs scored at several frame counts and reversed.

    python benchmarks/bench_stability.py [--model default] [--frames 8 16] [--root ../shared/real-i2v]

Scores each real (image, video) pair of `--root/manifest.jsonl` with its video sampled uniformly to each T of
`--frames`, and reversed at the largest T (`icreward.evaluation.robustness.sampling_stability`). Prints a markdown
table of the rewards per pair, then the largest change against the spread of the rewards over the pairs (their standard
deviation at the largest T) in %: a reward that measures the video rather than its sampling moves by a small
fraction of the spread. The issue's bar: under 10% between 8 and 16 frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_ROOT = (Path(__file__).parents[1] / ".." / "shared" / "real-i2v").resolve()


def format_table(result: dict, frames: list[int]) -> str:
    """Markdown: one row per pair with its reward at each T and reversed, then the summary rows."""
    top = max(frames)
    header = ["pair", *(f"T={t}" for t in frames), f"T={top} reversed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for i, pair_id in enumerate(result["ids"]):
        cells = [f"{result['rewards'][t][i]:+.3f}" for t in frames] + [f"{result['reversed'][i]:+.3f}"]
        lines.append(f"| {pair_id} | " + " | ".join(cells) + " |")
    spread = result["spread"]
    lines += [
        "",
        f"spread (std over pairs at T={top}): {spread:.3f}; range {result['range']:.3f}",
        f"largest change across frame counts: {result['max_change']:.3f} = {100 * result['max_change'] / spread:.1f}%"
        " of the spread",
        f"largest change on reversal: {result['max_reversal_change']:.3f} = "
        f"{100 * result['max_reversal_change'] / spread:.1f}% of the spread",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model name (default: the shipped model)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="frame counts to compare")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with manifest.jsonl of real pairs")
    args = parser.parse_args(argv)
    if not (args.root / "manifest.jsonl").exists():
        print(f"bench_stability: no real I2V pairs at {args.root}; give --root", file=sys.stderr)
        return 2

    import icreward
    from icreward.evaluation.robustness import sampling_stability

    frames = sorted(set(args.frames))
    result = sampling_stability(icreward.load(args.model), args.root, frames)
    print(f"`{args.model}` on the {len(result['ids'])} real pairs under {args.root}:\n")
    print(format_table(result, frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
