"""ViT-B/16 scoring throughput: `metric:vbench-i2v-subject` against VBench's own per-frame loop, and the matmul rate.

    python benchmarks/bench_vit_b.py [--videos 4] [--repeats 3] [--batch-sizes 4] [--device auto]
        [--modes fp32 bf16-autocast bf16-weights] [--matmul-size 2048] [--threads N] [--seed 0]
    (also: python benchmarks/bench_throughput.py --vit-b [the same options])

The encoder is DINO ViT-B/16 as VBench's i2v_subject runs it (12 layers, width 768, 12 heads, MLP 3072, patch 16 at
224, shorter side 256 bicubic, centre crop 224, ImageNet normalisation), with seeded random weights: a transformers
`ViTConfig` built here and saved to a temporary folder, loaded as the `hf:<folder>` backbone (nothing is downloaded;
random weights cost what trained ones cost). The inputs are `--videos` seeded 16-frame 512x320 H.264 mp4 files, each
with a 512x320 PNG image. In the same rounds (one configuration after another within each round, so a slow spell of
a shared machine hits them all alike) it times:
  - the peer: VBench's i2v_subject loop reimplemented faithfully: per video, the image and then each frame through
    the encoder one at a time (batch 1, fp32, the explicit-matmul attention of DINO's own ViT), cosine similarities
    read back as Python floats frame by frame, `0.4 max(c) + 0.3 mean(s) + 0.3 min(s)`; decoding as ours;
  - ours, `icreward.load("metric:vbench-i2v-subject", backbone="hf:<folder>")`, from decoded tensors in memory
    (`--batch-sizes` videos per forward) and from the files through `icreward.scoring.score_items` (decode included,
    overlapped with the forward), in each `--modes`: `fp32`; `bf16-autocast` (fp32 weights, `torch.autocast`: what
    `--precision bf16` does); `bf16-weights` (the backbone loaded with `backbone_kwargs={"dtype": "bfloat16"}`, run
    without autocast); on a CPU both bf16 modes run the fused layers of `icreward.backbones.fused_vit`, and
    `bf16-autocast-unfused` / `bf16-weights-unfused` (`fused=False`) run transformers' own forward beside them; on
    CUDA also `fp16-autocast` and `fp16-weights`;
  - square `--matmul-size` matmuls in fp32 and in bf16 (and fp16 on CUDA): the dense rate of the same machine.
FLOPs: `torch.utils.flop_counter` counts one 224 image through the encoder (17.6 GMAC = 35.1 GFLOP, FLOPs = 2 x MACs,
attention included); a video is 1 + T images. Utilisation = achieved GFLOP/s / the same-dtype matmul rate of the same
round (median of the per-round ratios). A breakdown of where the time goes follows: decoding, preprocessing, the
encoder per attention kernel (SDPA vs eager), per weight dtype and per batch shape, and a profile of the fastest
configuration split into matmul and attention kernels against everything else. On CUDA every timed call ends with
`torch.cuda.synchronize()`; nothing else changes, so the same command runs there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import icreward
from icreward.media import load_image, load_video, write_video
from icreward.metrics.vbench import VBENCH_WEIGHTS
from icreward.precision import autocast
from icreward.scoring import Item, score_items
from icreward.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess

METRIC = "metric:vbench-i2v-subject"
FRAMES, WIDTH, HEIGHT = 16, 512, 320
# DINO ViT-B/16 (facebook/dino-vitb16, what VBench's i2v_subject loads), as a transformers ViTConfig.
DINO_VITB16 = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    image_size=224,
    patch_size=16,
    layer_norm_eps=1e-6,
    qkv_bias=True,
)
# VBench's DINO preprocessing: shorter side 256 (bicubic), centre crop 224, ImageNet mean and std.
VBENCH_PREPROCESSOR = {
    "size": {"shortest_edge": 256},
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "resample": 3,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
    "rescale_factor": 1 / 255,
}
MODE_DTYPE = {
    "fp32": torch.float32,
    "bf16-autocast": torch.bfloat16,
    "bf16-weights": torch.bfloat16,
    "bf16-autocast-unfused": torch.bfloat16,
    "bf16-weights-unfused": torch.bfloat16,
    "fp16-autocast": torch.float16,
    "fp16-weights": torch.float16,
}
WEIGHTS = {"bf16-weights": "bfloat16", "bf16-weights-unfused": "bfloat16", "fp16-weights": "float16"}


def mode_precision(mode: str) -> str:
    """What `--precision` a mode runs under: autocast modes their dtype, the others fp32 (no autocast)."""
    return mode[:4] if "autocast" in mode else "fp32"


def mode_backbone_kwargs(mode: str, **kwargs) -> dict:
    """`backbone_kwargs` of a mode: its weight dtype, and `fused=False` for transformers' own forward."""
    if mode in WEIGHTS:
        kwargs["dtype"] = WEIGHTS[mode]
    if mode.endswith("unfused"):
        kwargs["fused"] = False
    return kwargs


# Kernels of the dense work: linear layers (addmm / mm / bmm, oneDNN's own linear) and fused attention.
MATMUL_OPS = ("addmm", "mm", "bmm", "matmul", "linear", "scaled_dot_product", "flash_attention", "mkldnn", "conv")


# ---- inputs


def random_dino_vitb16(folder: Path, seed: int) -> str:
    """A DINO ViT-B/16-shaped transformers `ViTModel` with seeded random weights and VBench's preprocessing, saved
    into `folder`; returns its backbone name `hf:<folder>`."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.ViTModel(transformers.ViTConfig(**DINO_VITB16), add_pooling_layer=False)
    model.eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VBENCH_PREPROCESSOR))
    return f"hf:{folder}"


def make_videos(root: Path, n: int, seed: int) -> list[Item]:
    """`n` seeded (PNG image, 16-frame 512x320 H.264 mp4) pairs: a smooth random scene the camera pans across, with
    a drifting colour cast in every other video; the image is the scene's first view."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        coarse = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
        scene = np.asarray(Image.fromarray(coarse).resize((WIDTH + 4 * FRAMES, HEIGHT), Image.Resampling.BICUBIC))
        frames = np.stack([scene[:, 4 * t : 4 * t + WIDTH] for t in range(FRAMES)]).astype(np.float32)  # (T, H, W, 3)
        if i % 2:
            frames[..., i % 3] *= np.linspace(1.0, 0.6, FRAMES)[:, None, None]
        frames = np.clip(frames + rng.normal(0, 3, frames.shape), 0, 255).astype(np.uint8)
        Image.fromarray(scene[:, :WIDTH]).save(root / f"image{i}.png")
        write_video(root / f"video{i}.mp4", frames)
        items.append(Item(f"v{i}", root / f"image{i}.png", root / f"video{i}.mp4"))
    return items


# ---- the peer: VBench's i2v_subject loop


def vbench_loop(encoder: torch.nn.Module, items: Sequence[Item], device: torch.device, max_side: int) -> list[float]:
    """VBench's i2v_subject, per video: the image, then every frame, one at a time through the fp32 encoder; the
    cosine similarities read back frame by frame; `0.4 max(c) + 0.3 mean(s) + 0.3 min(s)` (VBench++'s weights)."""
    w_image, w_mean, w_min = VBENCH_WEIGHTS["vbench"]
    config = encoder.preprocess_config
    scores = []
    for item in items:
        image = load_image(item.image, max_side=max_side)  # (3, H, W)
        video = load_video(item.video, num_frames=FRAMES, max_side=max_side)  # (T, 3, H, W)
        with torch.no_grad():
            image_features = F.normalize(encoder(preprocess(image[None], config).to(device))["cls"], dim=-1)
            conformity, consecutive, former = [], [], None
            for frame in video:
                features = F.normalize(encoder(preprocess(frame[None], config).to(device))["cls"], dim=-1)  # (1, D)
                if former is not None:
                    consecutive.append(max(0.0, F.cosine_similarity(former, features).item()))
                conformity.append(max(0.0, F.cosine_similarity(image_features, features).item()))
                former = features
        scores.append(w_image * max(conformity) + w_mean * float(np.mean(consecutive)) + w_min * min(consecutive))
    return scores


# ---- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(calls: dict, repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Seconds of each call in each of `repeats` rounds (the calls one after another within a round), after `warmup`
    untimed calls of each: `{name: [seconds per round]}`."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def matmul_call(n: int, dtype: torch.dtype, device: torch.device, min_seconds: float) -> tuple[Callable, int]:
    """A call looping square `n x n` matmuls for about `min_seconds`, and the FLOPs it does."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    synchronize(device)
    start = time.perf_counter()
    torch.mm(a, b)
    synchronize(device)
    iters = max(1, round(min_seconds / max(time.perf_counter() - start, 1e-6)))

    def call() -> None:
        for _ in range(iters):
            torch.mm(a, b)

    return call, 2 * n**3 * iters


def count_image_flops(encoder: torch.nn.Module, device: torch.device) -> int:
    """FLOPs of one 224 image through the encoder (attention through the math kernel, which the counter sees)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.zeros(1, 3, 224, 224, device=device))
    return counter.get_total_flops()


def matmul_share(fn: Callable[[], object]) -> tuple[float, list[tuple[str, float]]]:
    """Share of CPU self time in dense kernels (`MATMUL_OPS`) during one `fn()`, and the five costliest other ops."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(t for _, t in events)
    dense = sum(t for name, t in events if any(op in name for op in MATMUL_OPS))
    others = sorted(((n, t / total) for n, t in events if not any(op in n for op in MATMUL_OPS)), key=lambda x: -x[1])
    return dense / total, others[:5]


# ---- output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4, help="512x320 mp4 files (16 frames) made and scored")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of every configuration")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4], help="videos per forward pass")
    parser.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu, cuda, cuda:1...")
    parser.add_argument(
        "--modes", nargs="+", default=None, choices=list(MODE_DTYPE), help="default: all the device has"
    )
    parser.add_argument("--matmul-size", type=int, default=None, help="side of the timed matmuls (cpu 2048, cuda 8192)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="skip VBench's loop (it is the slowest)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the breakdown of where the time goes")
    args = parser.parse_args(argv)
    if min(args.videos, args.repeats, *args.batch_sizes) < 1:
        parser.error("--videos, --repeats and --batch-sizes must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from icreward.precision import supported

    have = supported(device.type)
    # fp16 on a CPU: no native fp16 matmul here, so it is left out unless asked for; the fused layers are CPU-only
    default_modes = [
        m
        for m in MODE_DTYPE
        if m[:4] in have
        and (device.type == "cuda" or not m.startswith("fp16"))
        and (device.type == "cpu" or not m.endswith("unfused"))
    ]
    modes = args.modes or default_modes
    n_matmul = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    start, load_before = time.perf_counter(), os.getloadavg()[0]

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench-vit-b-") as tmp:
        root = Path(tmp)
        log(f"making {args.videos} videos and a random DINO ViT-B/16")
        items = make_videos(root, args.videos, args.seed)
        backbone = random_dino_vitb16(root / "vitb16", args.seed)
        scorers = {}
        for mode in modes:
            if mode.endswith("autocast") and "fp32" in scorers:  # the same weights, under autocast
                scorers[mode] = scorers["fp32"]
                continue
            kwargs = mode_backbone_kwargs(mode)
            scorers[mode] = icreward.load(METRIC, backbone=backbone, backbone_kwargs=kwargs).to(device).eval()
        peer = icreward.load(METRIC, backbone=backbone, backbone_kwargs={"attn_implementation": "eager"})
        peer_encoder = peer.embedder.backbone.to(device)
        any_scorer = next(iter(scorers.values()))
        max_side = any_scorer.max_side
        image_flops = count_image_flops(peer_encoder, device)
        video_flops = (FRAMES + 1) * image_flops

        images = [load_image(it.image, max_side=max_side) for it in items]
        videos = [load_video(it.video, num_frames=FRAMES, max_side=max_side) for it in items]

        def tensor_call(scorer, image: torch.Tensor, video: torch.Tensor, mode: str) -> Callable[[], torch.Tensor]:
            def call() -> torch.Tensor:
                with torch.no_grad(), autocast(device, mode_precision(mode)):
                    return scorer(image, video)

            return call

        def file_call(scorer, mode: str, batch_size: int) -> Callable[[], None]:
            def call() -> None:
                results = list(
                    score_items(
                        scorer,
                        items,
                        batch_size=batch_size,
                        device=device,
                        precision=mode_precision(mode),
                        progress=False,
                    )
                )
                if any(r.error for r in results):
                    raise RuntimeError(f"could not score: {[r.error for r in results if r.error]}")

            return call

        calls, videos_per_call = {}, {}
        dtypes = sorted({MODE_DTYPE[m] for m in modes} | ({torch.float32} if not args.no_peer else set()), key=str)
        for dtype in dtypes:
            calls["matmul", str(dtype)], videos_per_call["matmul", str(dtype)] = matmul_call(
                n_matmul, dtype, device, 0.5
            )
        if not args.no_peer:
            calls["peer", "files"] = lambda: vbench_loop(peer_encoder, items, device, max_side)
            videos_per_call["peer", "files"] = len(items)
        for bs in args.batch_sizes:
            reps = math.ceil(bs / len(items))
            image = torch.stack((images * reps)[:bs]).to(device)  # (B, 3, H, W)
            video = torch.stack((videos * reps)[:bs]).to(device)  # (B, T, 3, H, W)
            for mode in modes:
                calls[mode, f"tensors b{bs}"] = tensor_call(scorers[mode], image, video, mode)
                videos_per_call[mode, f"tensors b{bs}"] = bs
                calls[mode, f"files b{bs}"] = file_call(scorers[mode], mode, bs)
                videos_per_call[mode, f"files b{bs}"] = len(items)
        log(f"timing {len(calls)} configurations in {args.repeats} rounds on {device}")
        times = time_rounds(calls, args.repeats, device)

        # Ours against the peer on the same videos: the rewards must agree (fp32, same encoder and decode).
        peer_scores = vbench_loop(peer_encoder, items, device, max_side)
        ours = [r.reward for r in score_items(scorers[modes[0]], items, device=device, progress=False)]
        agreement = max(abs(a - b) for a, b in zip(peer_scores, ours, strict=True))

        breakdown = None
        if not args.no_breakdown:
            log("breakdown")
            breakdown = where_time_goes(
                items, images, videos, backbone, scorers, modes, args, device, max_side, image_flops
            )

    rates = {key[1]: [f / t / 1e9 for t in times[key]] for key, f in videos_per_call.items() if key[0] == "matmul"}
    print(
        f"\nViT-B/16 (DINO config, random weights) scoring {args.videos} files of {FRAMES} frames {WIDTH}x{HEIGHT} + "
        f"image; {image_flops / 1e9:.1f} GFLOP per 224 image, {video_flops / 1e9:.0f} GFLOP per video; device "
        f"{device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}; torch "
        f"{torch.__version__}, threads {torch.get_num_threads()}; {args.repeats} rounds; load average "
        f"{load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end, {os.cpu_count()} CPUs. "
        f"|ours fp32 - VBench loop| <= {agreement:.1e} on these videos.\n"
    )
    rows = []
    peer_key = ("peer", "files")
    for key, ts in times.items():
        if key[0] == "matmul":
            continue
        dtype = torch.float32 if key == peer_key else MODE_DTYPE[key[0]]
        vps = [videos_per_call[key] / t for t in ts]
        gflops = [v * video_flops / 1e9 for v in vps]
        util = median_ratio(gflops, rates[str(dtype)])
        vs_peer = (
            median_ratio(times[peer_key], [t / videos_per_call[key] * len(items) for t in ts])
            if (peer_key in times)
            else math.nan
        )
        name = "VBench i2v_subject loop (per frame, fp32, eager)" if key == peer_key else f"`{METRIC}` {key[0]}"
        what = (
            "files, decode included, batch 1 frame"
            if key == peer_key
            else key[1].replace("files", "files, decode included,")
        )
        rows.append(
            [
                name,
                what,
                f"{statistics.median(vps):.3f}",
                f"{statistics.median(gflops):.0f}",
                f"{util:.0%}",
                str(dtype).removeprefix("torch."),
                f"{vs_peer:.2f}x",
            ]
        )
    print(
        markdown_table(
            ["scorer", "input", "videos/s", "GFLOP/s", "of the matmul rate", "matmul dtype", "vs VBench loop"], rows
        )
    )
    rate_rows = [
        [f"{n_matmul} x {n_matmul} {d.removeprefix('torch.')}", f"{statistics.median(r):.0f}", f"{max(r):.0f}"]
        for d, r in rates.items()
    ]
    print("\nSquare matmuls in the same rounds (GFLOP/s)\n")
    print(markdown_table(["matmul", "median", "best"], rate_rows))
    if breakdown:
        print(breakdown)
    log("done")
    return 0


def where_time_goes(items, images, videos, backbone, scorers, modes, args, device, max_side, flops) -> str:
    """Tables of the time per stage (decode, preprocess, encoder per kernel / dtype / batch shape) and of the dense
    share of the fastest configuration's profile."""
    bs = args.batch_sizes[0]
    reps = math.ceil(bs / len(items))
    config = next(iter(scorers.values())).embedder.preprocess_config
    image = torch.stack((images * reps)[:bs]).to(device)
    video = torch.stack((videos * reps)[:bs]).to(device)
    pixels = torch.cat([preprocess(image, config), preprocess(video, config).flatten(0, 1)])  # (B + B*T, 3, 224, 224)
    from icreward.backbones.fused_vit import fused_kernels_available

    fused = device.type == "cpu" and fused_kernels_available()
    encoders = {}
    for mode in modes:
        own = "sdpa" if mode.endswith("unfused") or not (fused and mode.startswith("bf16")) else "fused"
        encoders[mode, own] = scorers[mode].embedder.backbone
        if mode.endswith("unfused"):
            continue
        kwargs = mode_backbone_kwargs(mode, attn_implementation="eager", fused=False)
        encoders[mode, "eager"] = (
            encoders["fp32", "eager"]
            if mode.endswith("autocast") and ("fp32", "eager") in encoders
            else icreward.load(METRIC, backbone=backbone, backbone_kwargs=kwargs).embedder.backbone.to(device)
        )

    def run(encoder, x: torch.Tensor, mode: str) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad(), autocast(device, mode_precision(mode)):
                return encoder(x)

        return call

    def decode() -> None:
        for it in items:
            load_image(it.image, max_side=max_side)
            load_video(it.video, num_frames=FRAMES, max_side=max_side)

    calls = {
        "decode the files (one thread)": decode,
        "preprocess (resize 256, crop 224, normalise)": lambda: (preprocess(image, config), preprocess(video, config)),
    }
    for (mode, kernel), encoder in encoders.items():
        calls[f"encoder {mode}, {kernel} attention, {pixels.shape[0]} images"] = run(encoder, pixels, mode)
    fastest = next((key for key in encoders if key[0] == "bf16-weights"), next(iter(encoders)))
    per_video = pixels.shape[0] // bs

    def one_video_at_a_time() -> None:
        for i in range(bs):
            run(encoders[fastest], pixels[i * per_video : (i + 1) * per_video], fastest[0])()

    calls[f"encoder {fastest[0]}, {fastest[1]}, {per_video} images x {bs} calls"] = one_video_at_a_time
    flops_of = {name: pixels.shape[0] * flops for name in calls if name.startswith("encoder")}
    if fastest[1] == "fused":  # the ceiling: the same GEMMs with nothing around them, and the square rate beside
        name = "the fused encoder's GEMMs alone (packed bf16, no epilogue, no attention)"
        calls[name], flops_of[name] = gemms_alone(encoders[fastest].model, pixels.shape[0])
        name = f"square {args.matmul_size or 2048}² bf16 matmuls"
        calls[name], flops_of[name] = matmul_call(args.matmul_size or 2048, torch.bfloat16, device, 0.5)
    times = time_rounds(calls, args.repeats, device)
    rows = []
    for name, ts in times.items():
        t = statistics.median(ts)
        gflops = f"{flops_of[name] / t / 1e9:.0f}" if name in flops_of else "-"
        rows.append([name, f"{1000 * t:.0f}", f"{1000 * t / bs:.0f}", gflops])
    out = [
        f"\nWhere the time goes: a batch of {bs} videos ({pixels.shape[0]} images), median of {args.repeats} rounds\n",
        markdown_table(["stage", "ms", "ms per video", "GFLOP/s"], rows),
    ]
    if device.type == "cpu":
        dense, others = matmul_share(run(encoders[fastest], pixels, fastest[0]))
        top = ", ".join(f"{name} {share:.1%}" for name, share in others)
        out.append(
            f"\nProfile of the encoder in {fastest[0]} ({fastest[1]}): {dense:.1%} of its CPU time in matmul and "
            f"attention kernels; the costliest other ops: {top}"
        )
    return "\n".join(out)


def gemms_alone(model: torch.nn.Module, images: int) -> tuple[Callable[[], None], int]:
    """A call running only the GEMMs `FusedViT` runs for `images` 224 images (the q/k/v, output and MLP
    projections of every layer, chunk by chunk, on random bf16 inputs of their shapes), and their FLOPs."""
    from icreward.backbones.fused_vit import FusedViT

    fused = FusedViT(model)
    config = model.config
    tokens = (config.image_size // config.patch_size) ** 2 + 1  # (224 / 16)^2 patches + CLS
    per_chunk = max(1, fused.chunk_tokens // tokens)
    chunks, rows = math.ceil(images / per_chunk), per_chunk * tokens
    width, mlp = config.hidden_size, config.intermediate_size
    x, h = torch.randn(rows, width, dtype=torch.bfloat16), torch.randn(rows, mlp, dtype=torch.bfloat16)
    linear = torch.ops.mkldnn._linear_pointwise

    def call() -> None:
        for _ in range(chunks):
            for p in fused.layers:
                for weights, inputs in ((p["qkv"], x), (p["o"], x), (p["fc1"], x), (p["fc2"], h)):
                    linear(inputs, *weights, "none", [], "")

    per_layer = 2 * rows * (width * 3 * width + width * width + 2 * width * mlp)
    return call, chunks * len(fused.layers) * per_layer


if __name__ == "__main__":
    raise SystemExit(main())
