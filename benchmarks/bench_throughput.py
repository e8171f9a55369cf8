"""Scoring throughput: the default reward model against VBench i2v_subject on the same encoder, and the FLOP bound.

    python benchmarks/bench_throughput.py [--model default] [--repeats 9] [--warmup 2] [--batch-size 8]
        [--num-frames T] [--side 256] [--root ../shared/real-i2v] [--matmul-sizes 1024 256] [--seed 0]
        [--threads N] [--file-passes 4] [--glibc-malloc]
    python benchmarks/bench_throughput.py --vit-b [options of benchmarks/bench_vit_b.py]

`--vit-b` runs the ViT-B/16 case instead (`benchmarks/bench_vit_b.py`: a DINO ViT-B/16 with random weights on
512x320 mp4 files, VBench's own per-frame loop beside it, the matmul rate and the utilisation; CUDA when present).

Loads `--model` (a checkpoint folder or any name `icreward.load` takes) and `metric:vbench-i2v-subject` built on
the model's own backbone (name and kwargs from its config), so both run the same encoder, then prints markdown
tables of videos scored per second:
  - from tensors in memory: a seeded batch of `--batch-size` videos `[B,T,3,side,side]` in [0, 1] (T: the model's
    `num_frames`), under `torch.no_grad()` after warm-up, in fp32 and under bf16 autocast;
  - end to end from files: the real (image, video) pairs of `--root/manifest.jsonl`, listed `--file-passes` times
    (a stream of several batches, as a real manifest is: decoding overlaps the forward only from the second batch
    on), through `icreward.scoring.score_items` (the batched path of `icreward score`), decode included; skipped
    with a message when the folder is missing. Decoding alone is timed beside them.
The configurations are timed in rounds, one after another within each round, so that a slow spell of this shared
machine hits them all alike; tables give the median (and minimum) over rounds, and the model-vs-metric ratio is the
median of the per-round ratios.

The floating-point bound: `torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of scoring one video (image +
T frames) through the backbone alone and through the whole model; the machine's dense matmul rate is measured with
timed loops of square fp32 and bf16 matmuls; bound videos/s = best rate / FLOPs per video. FlopCounterMode counts
matmul, convolution and attention only (attention is counted through PyTorch's math kernel, since the fused CPU
kernel is invisible to it), not resizing, pooling, normalisation or other elementwise work, which is most of what
the weight-free `patch-features` encoder does: the bound is far above what is reached, and the measured time per
stage (preprocess, backbone, head) shows what bounds the real throughput instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import icreward
from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.scoring import Item, score_items
from icreward.transforms import preprocess

DEFAULT_ROOT = (Path(__file__).parents[1] / ".." / "shared" / "real-i2v").resolve()
METRIC = "metric:vbench-i2v-subject"
PRECISIONS = ("fp32", "bf16")


# ---- counting and bounding floating-point work


def count_flops(fn: Callable[..., object], *args: object) -> int:
    """FLOPs that FlopCounterMode sees in one forward `fn(*args)`: matmuls, convolutions and attention.

    Attention runs through the math kernel while counting: the fused CPU kernel is not counted at all. Autograd stays
    on (nothing runs backward): FlopCounterMode's module tracker fails on parameters expanded under `no_grad`.
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def bound_videos_per_second(gflops_per_s: float, flops_per_video: int) -> float:
    """The most videos a second that `gflops_per_s` allows when each needs `flops_per_video`."""
    return gflops_per_s * 1e9 / flops_per_video


def matmul_rates(sizes: Sequence[int], repeats: int, min_seconds: float = 0.05) -> dict[tuple[str, int], list[float]]:
    """GFLOP/s of square `n x n` matmuls per (precision, n), one value per round; each timed call loops enough
    matmuls to last about `min_seconds`."""
    calls, flops = {}, {}
    for precision in PRECISIONS:
        for n in sizes:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            iters = loop_length(lambda a=a, b=b: torch.mm(a, b), min_seconds)
            calls[precision, n] = lambda a=a, b=b, iters=iters: [torch.mm(a, b) for _ in range(iters)]
            flops[precision, n] = 2 * n**3 * iters
    times = time_rounds(calls, repeats, warmup=1)
    return {key: [flops[key] / t / 1e9 for t in ts] for key, ts in times.items()}


# ---- timing


def loop_length(fn: Callable[[], object], min_seconds: float) -> int:
    """How many calls of `fn` in a row last about `min_seconds` (found by doubling a timed loop)."""
    iters = 1
    while True:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds / 4:
            return max(1, round(iters * min_seconds / elapsed))
        iters *= 2


def time_rounds(calls: dict, repeats: int, warmup: int = 2) -> dict:
    """Seconds of each call in each of `repeats` rounds (the calls one after another within a round), after
    `warmup` untimed calls of each: `{name: [seconds per round]}`."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def autocast(precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def tensor_call(scorer: Scorer, image: torch.Tensor, video: torch.Tensor, precision: str) -> Callable[[], torch.Tensor]:
    """One batch scored from memory in `precision`."""

    def call() -> torch.Tensor:
        with torch.no_grad(), autocast(precision):
            return scorer(image, video)

    return call


def unsupported(call: Callable[[], torch.Tensor]) -> str | None:
    """Why `call` cannot be benchmarked (it raises or returns non-finite rewards), or None."""
    try:
        out = call()
    except (RuntimeError, TypeError, ValueError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None if bool(torch.isfinite(out).all()) else "non-finite rewards"


def model_stage_calls(model: Scorer, image: torch.Tensor, video: torch.Tensor, precision: str) -> dict:
    """The model's forward cut at its stages, each callable alone on the output of the one before:
    preprocess (resize and crop to the backbone's input), backbone, head (with the evidence branch inside)."""
    config = model.preprocess_config

    def run(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad(), autocast(precision):
                return fn()

        return call

    def prepare() -> torch.Tensor:
        return torch.cat([preprocess(image, config), preprocess(video, config).flatten(0, 1)])  # (B + B*T, 3, h, w)

    pixels = prepare()
    img_tokens, vid_tokens = run(lambda: model.encode(image, video))()
    calls = {
        "preprocess (resize, crop)": run(prepare),
        "backbone": run(lambda: model.backbone(pixels)),
        "head (transformer + evidence)": run(lambda: model.head(img_tokens, vid_tokens)),
    }
    if getattr(model, "evidence", None) is not None:
        calls["  of which evidence branch"] = run(lambda: model.evidence(img_tokens, vid_tokens))
    calls["whole forward"] = run(lambda: model(image, video))
    return calls


def decode_items(scorer: Scorer, items: Sequence[Item], num_frames: int) -> None:
    """Load every item's media as `score_items` does (same sizes, two decoding threads), without scoring."""
    from icreward.media import load_image, load_video

    def load(item: Item) -> None:
        load_image(item.image, max_side=scorer.max_side)
        load_video(item.video, num_frames=num_frames, max_side=scorer.max_side)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(load, items))


def file_call(scorer: Scorer, items: Sequence[Item], batch_size: int, num_frames: int) -> Callable[[], None]:
    """One pass of `score_items` over `items`, failing loudly on any item it could not score."""

    def call() -> None:
        results = list(score_items(scorer, items, batch_size=batch_size, num_frames=num_frames, progress=False))
        errors = [f"{r.key}: {r.error}" for r in results if r.error]
        if errors:
            raise IcrewardError(f"could not score {len(errors)} items: {'; '.join(errors)}")

    return call


def time_files(
    root: Path, scorers: dict[str, Scorer], batch_size: int, num_frames: int, repeats: int, passes: int = 1
) -> tuple[list[Item], dict[str, list[float]]]:
    """The (image, video) items of `root/manifest.jsonl`, listed `passes` times over (a stream of several batches,
    so decoding the next overlaps the forward of the last, as in a real run), and the seconds per round of a
    `score_items` pass of each scorer over them, and of decoding them alone (`"decode"`, at the first scorer's
    sizes). No items and no times, with a message on stderr, when the manifest is missing."""
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        print(f"bench_throughput: no real I2V pairs at {manifest}; skipping scoring from files", file=sys.stderr)
        return [], {}
    from icreward.manifest import load_manifest

    records = load_manifest(manifest).records
    items = [Item(f"{r.id}-{k}", r.image, r.video) for k in range(passes) for r in records]
    calls = {kind: file_call(scorer, items, batch_size, num_frames) for kind, scorer in scorers.items()}
    calls["decode"] = lambda: decode_items(next(iter(scorers.values())), items, num_frames)
    return items, time_rounds(calls, repeats, warmup=1)


# ---- output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, first column left-aligned and the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-round ratios `numerators[i] / denominators[i]`."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def throughput_table(rows: Sequence[tuple[str, str, str, int, Sequence[float] | str]]) -> str:
    """Rows `(scorer, input, precision, videos per timed unit, seconds per round or why it was not timed)`."""
    cells = []
    for scorer, what, precision, videos, times in rows:
        if isinstance(times, str):
            cells.append([scorer, what, precision, f"unsupported: {times}", "-", "-"])
            continue
        median = statistics.median(times)
        cells.append(
            [scorer, what, precision, f"{videos / median:.1f}", f"{1000 * median:.1f}", f"{1000 * min(times):.1f}"]
        )
    return markdown_table(
        ["scorer", "input (one timed unit)", "precision", "videos/s", "ms/unit median", "ms min"], cells
    )


def bound_table(flops: dict[str, int], peak: dict[str, float], measured: dict[str, float]) -> str:
    """Per part: counted MFLOP per video, the videos/s the peak matmul rate of each precision allows, and the
    measured fp32 videos/s (where known) against that bound."""
    rows = []
    for part, count in flops.items():
        bound = {p: bound_videos_per_second(peak[p], count) if count else math.inf for p in PRECISIONS}
        real = measured.get(part)
        reached = [f"{real:.1f}", f"{real / bound['fp32']:.2%}"] if real is not None else ["-", "-"]
        rows.append([part, f"{count / 1e6:.2f}", *(f"{bound[p]:.0f}" for p in PRECISIONS), *reached])
    header = ["part", "MFLOP/video", "bound fp32 videos/s", "bound bf16 videos/s", "measured fp32 videos/s"]
    return markdown_table([*header, "measured / bound"], rows)


def share_table(stage_times: dict[str, dict[str, list[float]]]) -> str:
    """Median ms of each stage per precision and its share of the whole forward."""
    rows = []
    for stage in stage_times["fp32"]:
        cells = [stage]
        for p in PRECISIONS:
            t, whole = statistics.median(stage_times[p][stage]), statistics.median(stage_times[p]["whole forward"])
            cells += [f"{1000 * t:.1f}", f"{t / whole:.0%}"]
        rows.append(cells)
    return markdown_table(["stage", "fp32 ms", "fp32 share", "bf16 ms", "bf16 share"], rows)


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:5.1f} s] {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--vit-b" in argv:
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_vit_b

        return bench_vit_b.main([a for a in argv if a != "--vit-b"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="checkpoint folder or any name icreward.load takes")
    parser.add_argument(
        "--compare", default=None, help="a second model timed in the same rounds (e.g. an earlier checkpoint folder)"
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds of every configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each in-memory configuration first")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per batch (tensors and files)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the model's)")
    parser.add_argument("--side", type=int, default=256, help="side of the square in-memory frames and images")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with manifest.jsonl of real pairs")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[1024, 256], help="sides of the timed matmuls")
    parser.add_argument("--seed", type=int, default=0, help="seed of the in-memory inputs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--file-passes", type=int, default=4, help="times the real pairs are listed in the scored stream"
    )
    parser.add_argument(
        "--glibc-malloc", action="store_true", help="keep malloc's defaults (the command keeps freed memory)"
    )
    args = parser.parse_args(argv)
    kept = not args.glibc_malloc and icreward.retain_freed_memory()  # what `icreward score` does at start
    if min(args.repeats, args.batch_size, args.side, args.num_frames or 1, args.file_passes, *args.matmul_sizes) < 1:
        parser.error("--repeats, --batch-size, --num-frames, --side, --file-passes, --matmul-sizes must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        model = icreward.load(args.model)
    except IcrewardError as e:
        print(f"bench_throughput: cannot load --model {args.model!r}: {e}", file=sys.stderr)
        return 2
    if not all(hasattr(model, name) for name in ("backbone", "encode", "head")):
        print(f"bench_throughput: --model {args.model!r} is not a learned reward model", file=sys.stderr)
        return 2
    backbone, backbone_kwargs = model.config.backbone, model.config.backbone_kwargs
    metric = icreward.load(METRIC, backbone=backbone, backbone_kwargs=backbone_kwargs)
    scorers = {"model": model, "metric": metric}
    names = {"model": f"`{args.model}`", "metric": f"`{METRIC}`"}
    if args.compare:
        try:
            scorers["compare"] = icreward.load(args.compare)
        except IcrewardError as e:
            print(f"bench_throughput: cannot load --compare {args.compare!r}: {e}", file=sys.stderr)
            return 2
        names["compare"] = f"`{args.compare}`"
    frames, b = args.num_frames or model.num_frames, args.batch_size

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    image = torch.rand(b, 3, args.side, args.side, generator=generator)
    video = torch.rand(b, frames, 3, args.side, args.side, generator=generator)

    log("counting FLOPs", start)
    config = model.preprocess_config
    one_video = torch.cat([preprocess(image[:1], config), preprocess(video[0], config)])  # (1 + T, 3, h, w)
    backbone_flops, model_flops = count_flops(model.backbone, one_video), count_flops(model, image[:1], video[:1])
    flops = {
        "backbone alone": backbone_flops,
        "head (whole - backbone)": model_flops - backbone_flops,
        "whole model": model_flops,
        "metric": count_flops(metric, image[:1], video[:1]),
    }

    log(f"timing square matmuls {args.matmul_sizes}", start)
    rates = matmul_rates(args.matmul_sizes, args.repeats)
    peak = {p: max(max(r) for (q, _), r in rates.items() if q == p) for p in PRECISIONS}

    log("timing scoring from tensors", start)
    calls = {(kind, p): tensor_call(scorer, image, video, p) for p in PRECISIONS for kind, scorer in scorers.items()}
    skipped = {key: reason for key, call in calls.items() if (reason := unsupported(call)) is not None}
    timed = {key: call for key, call in calls.items() if key not in skipped}
    tensor_times = time_rounds(timed, args.repeats, args.warmup)

    log("timing the model's stages", start)
    stage_times = {
        p: time_rounds(model_stage_calls(model, image, video, p), args.repeats, args.warmup) for p in PRECISIONS
    }

    log(f"timing scoring from the files under {args.root}", start)
    items, file_times = time_files(args.root, scorers, b, frames, args.repeats, args.file_passes)

    from icreward.training.trainer import cpu_has_native_bf16

    print(
        f"\nVideos scored per second: `{args.model}` vs `{METRIC}`, both on `{backbone}`"
        f"{f' {backbone_kwargs}' if backbone_kwargs else ''}; T = {frames}; torch {torch.__version__}, threads: "
        f"{torch.get_num_threads()}, CPU native bf16: {cpu_has_native_bf16()}; {args.repeats} timed rounds; "
        f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end, on {os.cpu_count()} CPUs; freed "
        f"memory {'kept (as `icreward score` does)' if kept else 'returned to the system (malloc defaults)'}\n"
    )
    shape = f"tensors [{b},{frames},3,{args.side},{args.side}]"
    rows = [(names[k], shape, p, b, tensor_times.get((k, p), skipped.get((k, p)))) for p in PRECISIONS for k in scorers]
    files = (
        f"{len(items)} file pairs ({len(items) // args.file_passes} x {args.file_passes}), max side {model.max_side}"
    )
    rows += [
        (names[k], f"{files}, decode included", "fp32", len(items), file_times[k]) for k in file_times if k in scorers
    ]
    if file_times:
        rows.append(("decoding alone (2 threads)", files, "-", len(items), file_times["decode"]))
    print(throughput_table(rows))

    ratios = [
        f"{median_ratio(tensor_times['model', p], tensor_times['metric', p]):.2f}x from tensors in {p}"
        for p in PRECISIONS
        if ("model", p) in tensor_times and ("metric", p) in tensor_times
    ]
    if file_times:
        ratios.append(f"{median_ratio(file_times['model'], file_times['metric']):.2f}x from files")
    print(f"\nModel time / metric time per video (median of per-round ratios): {', '.join(ratios)}")
    if "compare" in scorers:
        ratios = [
            f"{median_ratio(tensor_times['model', p], tensor_times['compare', p]):.2f}x from tensors in {p}"
            for p in PRECISIONS
            if ("model", p) in tensor_times and ("compare", p) in tensor_times
        ]
        if "compare" in file_times:
            ratios.append(f"{median_ratio(file_times['model'], file_times['compare']):.2f}x from files")
        print(f"Model time / compared model's time per video (same rounds): {', '.join(ratios)}")

    print(f"\nDense matmul rate, GFLOP/s over {args.repeats} rounds (the bound below uses the best)\n")
    rate_rows = [
        [f"{n} x {n}", *(f"{f(rates[p, n]):.4g}" for p in PRECISIONS for f in (statistics.median, max))]
        for n in args.matmul_sizes
    ]
    print(markdown_table(["square matmul", "fp32 median", "fp32 best", "bf16 median", "bf16 best"], rate_rows))

    measured = {
        "backbone alone": b / statistics.median(stage_times["fp32"]["backbone"]),
        "head (whole - backbone)": b / statistics.median(stage_times["fp32"]["head (transformer + evidence)"]),
    }
    measured |= {
        part: b / statistics.median(tensor_times[kind, "fp32"])
        for part, kind in (("whole model", "model"), ("metric", "metric"))
        if (kind, "fp32") in tensor_times
    }
    print(
        f"\nFLOP bound per video (image + {frames} frames) = best matmul rate / FLOPs counted by FlopCounterMode. It "
        "counts matmul, conv and attention only, not resizing, pooling or elementwise work (most of the weight-free "
        "encoder), so real throughput sits far below it: see the time per stage after it.\n"
    )
    print(bound_table(flops, peak, measured))

    print(f"\nWhere the model's time goes, batch of {b} from tensors (median ms; share of the whole forward)\n")
    print(share_table(stage_times))
    log("done", start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
