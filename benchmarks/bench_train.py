"""Training throughput of the real trainer: feature cache vs none, bf16 vs fp32, for two model configurations.

    python benchmarks/bench_train.py [--pairs 32] [--epochs 3] [--batch-size 8] [--frames 16] [--video-side 128]
        [--models attention default]

Makes a small dataset (consistent and inconsistent H.264 videos of random images) in a temporary folder, then trains
with `icreward.training.train` in each setting and prints a markdown table of pairs/second from the median step time,
for each `--models`:
  - `attention`: the IC-Reward config of `TrainConfig` (attention head, d_model 128, depth 2) on a frozen tiny-vit;
  - `default`: the shipped default's recipe config (its backbone, `head: map` with the evidence branch, read from the
    packaged checkpoint's recorded hyperparameters), whose head reads the tokens through the parameter-free evidence
    alone, so the cache holds the evidence of each (image, video) as well and a cached step is the head alone.
The first epoch is warm-up; the steps of the others are timed (training steps only: no validation, no saving).
"cache (warm)" reads what an earlier run stored; "no cache" decodes the media and runs the backbone (and the
evidence) at every step (num_workers=0).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from icreward.loading import default_checkpoint
from icreward.manifest import write_manifest
from icreward.media import write_video
from icreward.training import TrainConfig, train
from icreward.training.trainer import cpu_has_native_bf16


def make_dataset(root: Path, n_pairs: int, frames: int, side: int, seed: int = 0) -> Path:
    """`n_pairs` pairs over n_pairs / 4 source images: a drifting copy of the image vs another image or noise."""
    rng = np.random.default_rng(seed)
    n_src = max(2, n_pairs // 4)
    images = []
    for s in range(n_src):
        coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        images.append(np.array(Image.fromarray(coarse).resize((side, side), Image.BICUBIC)))
        Image.fromarray(images[-1]).save(root / f"img{s}.png")
    records = []
    for i in range(n_pairs):
        s = i % n_src
        good = np.stack([np.roll(images[s], (k, k // 2), axis=(0, 1)) for k in range(frames)])
        bad = np.stack([images[(s + 1) % n_src]] * frames) if i % 2 else rng.integers(0, 256, good.shape, np.uint8)
        write_video(root / f"good{i}.mp4", good)
        write_video(root / f"bad{i}.mp4", bad)
        label = "A" if i % 3 else "B"
        a, b = (f"good{i}.mp4", f"bad{i}.mp4") if label == "A" else (f"bad{i}.mp4", f"good{i}.mp4")
        records.append({"id": str(i), "image": f"img{s}.png", "video_a": a, "video_b": b, "label": label})
    write_manifest(root / "train.jsonl", records)
    return root / "train.jsonl"


def measure(config: TrainConfig) -> dict:
    """Median step time over the epochs after the first (robust to other load on the machine), as pairs/second.

        Step rows (`log_every=1`) carry the seconds since their epoch began, so their differences are step times. A
    minimum far below the median means other work shared the CPU.
    """
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = train(config.replace(log_every=1))
    total = time.perf_counter() - start
    if config.cache:
        assert result.cache_misses == 0, "the cache should be warm"
    steps = [row for row in result.history if row["kind"] == "step" and row["epoch"] > 1]
    durations = [
        row["seconds"] - (prev["seconds"] if prev is not None and prev["epoch"] == row["epoch"] else 0.0)
        for prev, row in zip([None, *steps[:-1]], steps, strict=True)
    ]
    step_s = float(np.median(durations))
    return {
        "pairs_per_s": config.batch_size / step_s,
        "ms_per_step": 1000 * step_s,
        "min_ms": 1000 * min(durations),
        "run_s": total,
    }


def model_settings(name: str) -> dict:
    """TrainConfig fields of a benchmarked model configuration (see the module docstring)."""
    if name == "attention":
        return {}
    recorded = json.loads((default_checkpoint() / "config.json").read_text())["training"]["hyperparameters"]
    return {k: recorded[k] for k in ("model_type", "backbone", "backbone_kwargs", "backbone_policy", "model")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up, the others are timed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--video-side", type=int, default=128, help="side of the generated videos and images")
    parser.add_argument("--models", nargs="+", default=["attention", "default"], choices=["attention", "default"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        data = make_dataset(root, args.pairs, args.frames, args.video_side)
        made = time.perf_counter() - start
        print(f"dataset: {args.pairs} pairs, {args.frames} frames of {args.video_side} px ({made:.1f} s)")
        base = TrainConfig(
            data=str(data),
            num_frames=args.frames,
            epochs=args.epochs,
            batch_size=args.batch_size,
            cache_dir=str(root / "cache"),
            progress=False,
            tensorboard=False,
            log_every=0,
        )
        rows = []  # (model, setting, measurement, cache-building run or None)
        for model in args.models:
            for precision in ("fp32", "bf16"):
                run = base.replace(precision=precision, cache_dir=str(root / f"cache-{model}"), **model_settings(model))
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    built = train(run.replace(out=str(root / f"cold-{model}-{precision}"), epochs=1))
                cold = {"run_s": time.perf_counter() - start, "files": built.cache_misses}
                warm = measure(run.replace(out=str(root / f"warm-{model}-{precision}")))
                plain = measure(run.replace(out=str(root / f"plain-{model}-{precision}"), cache=False))
                rows += [
                    (model, f"frozen + cache (warm), {precision}", warm, cold),
                    (model, f"frozen, no cache, {precision}", plain, None),
                ]
    print(
        f"\nT={args.frames}, batch {args.batch_size}, {torch.get_num_threads()} threads, CPU native bf16: "
        f"{cpu_has_native_bf16()}, timed epochs: {args.epochs - 1}; models: attention = IC-Reward default config "
        "(d_model 128, depth 2) on a frozen tiny-vit; default = the shipped default's recipe config (map head + "
        "evidence on patch-features), its evidence cached too\n"
    )
    print(
        "| model | setting | pairs/s | ms/step (median) | ms/step (min) | vs no cache fp32 | "
        "cold run: cache + 1 epoch (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model, name, m, cold in rows:
        reference = next(r[2]["pairs_per_s"] for r in rows if r[0] == model and r[1] == "frozen, no cache, fp32")
        build = f"{cold['run_s']:.1f} ({cold['files']} files)" if cold else "-"
        speedup = m["pairs_per_s"] / reference
        times = f"{m['ms_per_step']:.0f} | {m['min_ms']:.0f}"
        print(f"| {model} | {name} | {m['pairs_per_s']:.1f} | {times} | {speedup:.2f}x | {build} |")


if __name__ == "__main__":
    main()
