"""Rewards in reduced precision: how far bf16 (and fp16 where the device has it) autocast moves each model's rewards
from fp32 on real I2V media, whether any same-image ordering flips, and the speed ratio bf16 / fp32.

    python benchmarks/bench_precision.py [--roots ../shared/real-i2v ../shared/real-i2v-pia] [--rounds 2]
        [--batch-size 8] [--device cpu] [--no-hf] [--seed 0]

For each `--roots` folder (a `manifest.jsonl` of real (image, video) pairs), every distinct image is scored against
every video of that folder. Each model scores those pairs from tensors (`icreward.scoring.score_tensors`, media
decoded once at the model's frame count and size) in fp32 and in each reduced precision the device supports
(`icreward.precision`). Printed per model and precision, as a markdown table: max and mean |reward - fp32 reward|,
the number of same-image video pairs (v, w) whose order (reward of v vs reward of w) flips against fp32, and the
speed ratio (videos/s in that precision / videos/s in fp32), timed in `--rounds` rounds, the precisions one after
another within each round so that a slow spell of a shared machine hits them alike (median of per-round ratios).

Models: the shipped model (`default`), `metric:color-hist`, `metric:vbench-i2v-pixel`, `metric:vbench-i2v-hog`,
`metric:first-frame-ssim`, and `metric:vbench-i2v-subject` on a randomly initialised (seeded) small `hf:` ViT
backbone saved to a temporary folder (needs `transformers`; nothing is downloaded; `--no-hf` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import icreward
from icreward.media import load_image, load_video
from icreward.precision import supported
from icreward.scoring import score_tensors

SHARED = (Path(__file__).parents[1] / ".." / "shared").resolve()
DEFAULT_ROOTS = [SHARED / "real-i2v", SHARED / "real-i2v-pia"]
MODELS = [
    "default",
    "metric:color-hist",
    "metric:vbench-i2v-pixel",
    "metric:vbench-i2v-hog",
    "metric:first-frame-ssim",
]
HF_NAME = "metric:vbench-i2v-subject (random small hf: ViT)"


def random_vit(folder: Path, seed: int) -> str:
    """A seeded random small ViT (hidden 192, 4 layers, 3 heads, patch 16 at 112 px: DINO ViT-S/16's kind of
    network, shrunk so that the benchmark stays in minutes) saved into `folder` with an ImageNet preprocessor."""
    import transformers as T

    torch.manual_seed(seed)
    config = T.ViTConfig(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, image_size=112
    )
    T.ViTModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    processor = {
        "size": {"shortest_edge": 112},
        "crop_size": {"height": 112, "width": 112},
        "do_center_crop": True,
        "resample": 3,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "rescale_factor": 1 / 255,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return f"hf:{folder}"


def read_sets(roots: list[Path]) -> list[tuple[list[Path], list[Path]]]:
    """Per folder: its distinct images and all its videos (every image is scored against every video)."""
    sets = []
    for root in roots:
        records = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
        images = list(dict.fromkeys(root / r["image"] for r in records))
        sets.append((images, [root / r["video"] for r in records]))
    return sets


_MEDIA: dict = {}


def media(path: Path, num_frames: int | None, max_side: int | None) -> torch.Tensor:
    key = (path, num_frames, max_side)
    if key not in _MEDIA:
        if num_frames is None:
            _MEDIA[key] = load_image(path, max_side=max_side)
        else:
            _MEDIA[key] = load_video(path, num_frames=num_frames, max_side=max_side)
    return _MEDIA[key]


def flips(ref: list[float], other: list[float], groups: list[list[int]]) -> tuple[int, int, float]:
    """(same-image video pairs whose order differs between `ref` and `other`, same-image video pairs, the largest
    |ref difference| of a flipped pair)."""
    flipped = total = 0
    widest = 0.0
    for idx in groups:
        for a, i in enumerate(idx):
            for j in idx[a + 1 :]:
                total += 1
                s_ref = (ref[i] > ref[j]) - (ref[i] < ref[j])
                s_other = (other[i] > other[j]) - (other[i] < other[j])
                if s_ref != s_other:
                    flipped += 1
                    widest = max(widest, abs(ref[i] - ref[j]))
    return flipped, total, widest


def measure(scorer, sets, precisions, *, rounds: int, batch_size: int, device: str) -> dict[str, dict]:
    images, videos, groups = [], [], []
    for set_images, set_videos in sets:
        for image in set_images:
            groups.append(list(range(len(images), len(images) + len(set_videos))))
            for video in set_videos:
                images.append(media(image, None, scorer.max_side))
                videos.append(media(video, scorer.num_frames, scorer.max_side))
    scorer = scorer.to(device).eval()
    rewards: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    score_tensors(scorer, images[:batch_size], videos[:batch_size], batch_size=batch_size, device=device)  # warm-up
    for _ in range(rounds):
        for p in precisions:
            start = time.perf_counter()
            rewards[p] = score_tensors(scorer, images, videos, batch_size=batch_size, device=device, precision=p)
            seconds[p].append(time.perf_counter() - start)
    out = {}
    for p in precisions:
        both = [i for i, (a, b) in enumerate(zip(rewards[p], rewards["fp32"], strict=True)) if None not in (a, b)]
        diff = [abs(rewards[p][i] - rewards["fp32"][i]) for i in both]
        keep = set(both)
        flipped, total, widest = flips(rewards["fp32"], rewards[p], [[i for i in g if i in keep] for g in groups])
        ratio = statistics.median(f / s for f, s in zip(seconds["fp32"], seconds[p], strict=True))
        out[p] = {
            "max": max(diff, default=float("nan")),
            "mean": sum(diff) / len(diff) if diff else float("nan"),
            "not_finite": sum(r is None for r in rewards[p]),
            "flips": flipped,
            "pairs": total,
            "widest": widest,
            "n": len(images),
            "videos_per_s": len(images) / statistics.median(seconds[p]),
            "speed_ratio": ratio,
        }
    return out


def format_table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| model | precision | max abs diff | mean abs diff | order flips | not finite | videos/s | speed vs fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, per in results.items():
        for p, r in per.items():
            if p == "fp32":
                cells = [f"`{name}`", p, "0", "0", "–", str(r["not_finite"]), f"{r['videos_per_s']:.1f}", "1.00"]
            else:
                cells = [
                    f"`{name}`",
                    p,
                    f"{r['max']:.2e}",
                    f"{r['mean']:.2e}",
                    f"{r['flips']} / {r['pairs']}" + (f" (gap ≤ {r['widest']:.1e})" if r["flips"] else ""),
                    str(r["not_finite"]),
                    f"{r['videos_per_s']:.1f}",
                    f"{r['speed_ratio']:.2f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roots", type=Path, nargs="+", default=DEFAULT_ROOTS, help="folders with manifest.jsonl")
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds (rewards are those of the last)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-hf", action="store_true", help="leave out the random hf: ViT metric")
    parser.add_argument("--models", nargs="*", default=MODELS, help="models besides the hf: ViT metric")
    args = parser.parse_args(argv)

    missing = [r for r in args.roots if not (r / "manifest.jsonl").is_file()]
    if missing:
        print(f"bench_precision: no manifest.jsonl in {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    sets = read_sets(args.roots)
    precisions = [p for p in ("fp32", "bf16", "fp16") if p in supported(torch.device(args.device).type)]
    models: dict[str, tuple[str, dict]] = {m: (m, {}) for m in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_hf:
            try:
                models[HF_NAME] = ("metric:vbench-i2v-subject", {"backbone": random_vit(Path(tmp), args.seed)})
            except ImportError:
                print("bench_precision: no transformers, the hf: ViT metric is left out", file=sys.stderr)
        results = {}
        for name, (model, kwargs) in models.items():
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            scorer = icreward.load(model, **kwargs)
            results[name] = measure(
                scorer, sets, precisions, rounds=args.rounds, batch_size=args.batch_size, device=args.device
            )
            _MEDIA.clear()  # decoded media at this model's size and frame count: the next may read others
            print(f"{name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
            print("\n".join(format_table({name: results[name]}).splitlines()[2:]), file=sys.stderr)
    n_pairs = next(iter(results.values()))["fp32"]["n"]
    print(
        f"Rewards under autocast vs fp32 on {args.device} ({torch.get_num_threads()} threads, torch "
        f"{torch.__version__}): {n_pairs} (image, video) pairs, each image of "
        f"{', '.join(r.name for r in args.roots)} against each video of its folder; order flips count same-image "
        "video pairs ordered differently from fp32 (gap: the widest fp32 reward gap among them; pairs with a "
        f"non-finite reward left out); speed from tensors, median of {args.rounds} rounds.\n"
    )
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
