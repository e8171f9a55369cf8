"""Distributed scoring: `icreward score --manifest` in one process and under `torchrun` with several, side by side.

    python benchmarks/bench_distributed.py [--videos 200] [--nproc 2] [--repeats 2] [--model default]
        [--side 128] [--frames 16] [--threads 1] [--decode-workers N] [--seed 0] [--keep DIR]

Makes `--videos` seeded (image, video) pairs (`--frames`-frame H.264 mp4 files of `--side` px: a smooth random scene
panned, half of them with a drifting colour cast) and a manifest of them in a temporary folder, then times, in
alternating rounds, the same command run as a user would:
  - `icreward score --manifest M --out O1 --model MODEL --quiet` (one process);
  - `torchrun --standalone --nproc_per_node N $(which icreward) score --manifest M --out ON --model MODEL --quiet`;
both with `OMP_NUM_THREADS=--threads` (and torch's intra-op threads the same) in every process, and, given
`--decode-workers N`, that many decoding threads (0: decoding in the main thread, so with `--threads 1` each process
runs one thread; default: the command's own, two). It checks that the
outputs are the same bytes and prints a markdown table of wall time (the whole command: start-up, loading the model,
decoding, scoring and, for several processes, the merge), videos per second and the speed-up. The start-up of one
process alone (`icreward score` of a one-line manifest) is timed too, so the speed-up of the scoring itself can be
read beside that of the whole command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_manifest(root: Path, n: int, side: int, frames: int, seed: int) -> Path:
    """`n` seeded (PNG image, mp4 video) pairs over `n // 4` scenes and their manifest `root/manifest.jsonl`."""
    from icreward.media import write_video

    rng = np.random.default_rng(seed)
    scenes = []
    for s in range(max(1, n // 4)):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        scenes.append(np.asarray(Image.fromarray(coarse).resize((side + 2 * frames, side), Image.Resampling.BICUBIC)))
        Image.fromarray(scenes[-1][:, :side]).save(root / f"image{s}.png")
    lines = []
    for i in range(n):
        s = i % len(scenes)
        step = 1 + i % 3
        clip = np.stack([np.roll(scenes[s], -step * t, axis=1)[:, :side] for t in range(frames)]).astype(np.float32)
        if i % 2:
            clip[..., i % 3] *= np.linspace(1.0, 0.5, frames)[:, None, None]
        clip = np.clip(clip + rng.normal(0, 2, clip.shape), 0, 255).astype(np.uint8)
        write_video(root / f"video{i}.mp4", clip)
        lines.append(json.dumps({"id": f"v{i:04d}", "image": f"image{s}.png", "video": f"video{i}.mp4"}))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of `command`; raises with its stderr when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds (each: one process, then --nproc processes)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--side", type=int, default=128, help="side of the square videos and images")
    parser.add_argument("--frames", type=int, default=16, help="frames of each video file")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument(
        "--decode-workers", type=int, default=None, help="`icreward score --decode-workers` (default: the command's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="make the data here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    if min(args.videos, args.nproc, args.repeats, args.threads) < 1 or args.side % 2:
        parser.error("--videos, --nproc, --repeats and --threads must be at least 1, --side even")
    icreward_bin = shutil.which("icreward") or str(Path(sys.executable).parent / "icreward")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    env.pop("WORLD_SIZE", None)

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        manifest = make_manifest(root, args.videos, args.side, args.frames, args.seed)
        print(f"made {args.videos} pairs in {time.perf_counter() - start:.1f} s under {root}", file=sys.stderr)
        one_line = root / "one.jsonl"
        one_line.write_text(manifest.read_text().splitlines()[0] + "\n")

        def single(out: Path, what: Path = manifest) -> list[str]:
            workers = [] if args.decode_workers is None else ["--decode-workers", str(args.decode_workers)]
            command = [icreward_bin, "score", "--manifest", str(what), "--out", str(out), "--model", args.model]
            return [*command, *workers, "--quiet"]

        def several(out: Path) -> list[str]:
            return [torchrun, "--standalone", "--nproc_per_node", str(args.nproc), *single(out)]

        times: dict[str, list[float]] = {"single": [], "several": [], "start-up": []}
        for r in range(args.repeats):
            for kind, command in (("single", single), ("several", several)):
                out = root / f"out-{kind}-{r}.jsonl"
                out.unlink(missing_ok=True)
                times[kind].append(timed(command(out), env))
                print(f"round {r + 1}: {kind} {times[kind][-1]:.1f} s", file=sys.stderr)
            out = root / f"out-one-{r}.jsonl"
            out.unlink(missing_ok=True)
            times["start-up"].append(timed(single(out, one_line), env))
        reference = (root / "out-single-0.jsonl").read_bytes()
        identical = all(
            (root / f"out-{kind}-{r}.jsonl").read_bytes() == reference
            for r in range(args.repeats)
            for kind in ("single", "several")
        )
        lines = len(reference.splitlines())

    t1, tn, t0 = (statistics.median(times[k]) for k in ("single", "several", "start-up"))
    ratios = [a / b for a, b in zip(times["single"], times["several"], strict=True)]
    print(
        f"\n`icreward score --manifest` of {args.videos} videos ({args.frames} frames, {args.side} px), model "
        f"{args.model}, OMP_NUM_THREADS={args.threads} in every process, decode workers "
        f"{'the default' if args.decode_workers is None else args.decode_workers}, {os.cpu_count()} CPUs, median of "
        f"{args.repeats} rounds; outputs byte-identical: {identical} ({lines} lines)\n"
    )
    print("| run | wall s (whole command) | videos/s | speed-up | scoring s (wall - start-up) | speed-up of scoring |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| 1 process | {t1:.1f} | {args.videos / t1:.1f} | 1.00x | {t1 - t0:.1f} | 1.00x |")
    print(
        f"| torchrun, {args.nproc} processes | {tn:.1f} | {args.videos / tn:.1f} | {statistics.median(ratios):.2f}x "
        f"| {tn - t0:.1f} | {(t1 - t0) / (tn - t0):.2f}x |"
    )
    print(f"\nStart-up of one process (`icreward score` of a one-line manifest): {t0:.1f} s")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
