"""The reward function's cost in a training loop: ms per frame and peak memory of `icreward.guidance.RewardFunction`.

    python benchmarks/bench_reward_fn.py [--model default] [--head H] [--frames 16] [--batch 1]
        [--sizes 256x256 512x320] [--repeats 5] [--device cpu|cuda] [--threads N] [--json OUT]

For each frame size (WxH) it times the reward on a seeded batch of `--batch` videos of `--frames` frames in [-1, 1]
(what a VAE decodes) with their conditioning images: forward only (under `torch.no_grad()`, as best-of-N or a
policy-gradient reward runs it), and forward + backward to the frames (reward backpropagation, VADER / DRaFT), with
and without gradient checkpointing of the encoder, in fp32 and under bf16 autocast. Each configuration runs in its
own process, so that its peak memory is its own: on CPU the growth of the peak resident set over the process's
state just before the first call (model loaded, inputs made); on CUDA `torch.cuda.max_memory_allocated` over the
same point. "Held for backward" is what autograd keeps between the reward's forward and its backward (counted
with `torch.autograd.graph.saved_tensors_hooks`, each storage once, the input frames' included): what the reward adds
to a training step's graph while the generator's part of it is alive too, and what checkpointing reduces; the peak
also holds what the backward recomputes. Times are the median (and minimum) of `--repeats` calls after that first
one, in ms per frame (call time / (batch x frames)). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = [  # (mode, precision, checkpointing)
    ("forward", "fp32", False),
    ("forward", "bf16", False),
    ("forward+backward", "fp32", True),
    ("forward+backward", "fp32", False),
    ("forward+backward", "bf16", True),
    ("forward+backward", "bf16", False),
]

# Run in the child: one configuration, timed, with its peak memory.
CHILD = r"""
import json, resource, statistics, sys, time
import torch
from icreward.guidance import RewardFunction

cfg = json.loads(sys.argv[1])
if cfg["threads"]:
    torch.set_num_threads(cfg["threads"])
device = torch.device(cfg["device"])
fn = RewardFunction(cfg["model"], value_range="[-1,1]", head=cfg["head"], checkpointing=cfg["checkpointing"],
                    device=device)
g = torch.Generator().manual_seed(0)
b, t, w, h = cfg["batch"], cfg["frames"], cfg["width"], cfg["height"]
image = (torch.rand(b, 3, h, w, generator=g) * 2 - 1).to(device)
drift = torch.linspace(0, 0.3, t).view(1, t, 1, 1, 1)
video = ((1 - drift) * image[:, None].cpu() + drift * (torch.rand(b, t, 3, h, w, generator=g) * 2 - 1)).to(device)
backward = cfg["mode"] == "forward+backward"
autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize(device)

saved = {}  # storage -> bytes of the tensors autograd keeps for backward (the input video's storage included)

def pack(t):
    saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return t

def call():
    saved.clear()
    frames = video.detach().requires_grad_(backward)
    with autocast, torch.set_grad_enabled(backward), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        reward = fn(image, frames)
    if backward:
        (-reward.mean()).backward()
    sync()
    return reward

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)

sync()
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
before = rss_mib()
call()  # the first call: its peak memory (and warm-up)
held = sum(saved.values()) / 2**20
peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else rss_mib() - before
times = []
for _ in range(cfg["repeats"]):
    start = time.perf_counter()
    reward = call()
    times.append(time.perf_counter() - start)
per_frame = [1000 * s / (b * t) for s in times]
print(json.dumps({"ms_per_frame": statistics.median(per_frame), "ms_per_frame_min": min(per_frame),
                  "peak_mib": peak, "saved_mib": held,
                  "reward": reward.detach().float().mean().item(), "head": fn.head,
                  "threads": torch.get_num_threads()}))
"""


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size WxH such as 512x320, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"sides of at least 8 pixels, got {text!r}")
    return w, h


def run_config(args: argparse.Namespace, size: tuple[int, int], mode: str, precision: str, ckpt: bool) -> dict:
    cfg = {
        "model": args.model,
        "head": args.head,
        "device": args.device,
        "threads": args.threads,
        "batch": args.batch,
        "frames": args.frames,
        "width": size[0],
        "height": size[1],
        "mode": mode,
        "precision": precision,
        "checkpointing": ckpt,
        "repeats": args.repeats,
    }
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_reward_fn: {mode} {precision} at {size}: {done.stderr.strip().splitlines()[-1]}")
    return {**cfg, **json.loads(done.stdout.strip().splitlines()[-1])}


def table(rows: list[dict]) -> str:
    lines = [
        "| frames (WxH) | pass | precision | checkpointing | ms/frame (median) | ms/frame (min) "
        "| held for backward MiB "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ckpt = "yes" if r["checkpointing"] else "no"
        ckpt = ckpt if r["mode"] == "forward+backward" else "-"
        held = f"{r['saved_mib']:.0f}" if r["mode"] == "forward+backward" else "-"
        lines.append(
            f"| {r['frames']} x {r['width']}x{r['height']} | {r['mode']} | {r['precision']} | {ckpt} | "
            f"{r['ms_per_frame']:.2f} | {r['ms_per_frame_min']:.2f} | {held} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--head", default=None, help="default: guidance where the model has it")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[(256, 256), (512, 320)])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each child (default: torch's own)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = [run_config(args, size, *config) for size in args.sizes for config in CONFIGS]
    head = rows[0]["head"]
    print(f"model {args.model}, head {head}, batch {args.batch}, device {args.device}, threads {rows[0]['threads']}\n")
    print(table(rows))
    if args.json is not None:
        from icreward.atomic import atomic_write

        with atomic_write(args.json) as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
