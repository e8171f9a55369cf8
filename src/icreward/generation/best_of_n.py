"""Best-of-N with a diffusers image-to-video pipeline: N seeded candidates of one image, scored and ranked.

```python
import torch
from diffusers import StableVideoDiffusionPipeline
from icreward.generation import best_of_n
pipe = StableVideoDiffusionPipeline.from_pretrained("stabilityai/stable-video-diffusion-img2vid-xt",
                                                    torch_dtype=torch.float16).to("cuda")
ranked = best_of_n.best_of_n(pipe, "cat.png", n=4, num_frames=25, decode_chunk_size=8)
ranked[0].seed, ranked[0].reward, ranked[0].frames.shape  # the best: its seed, reward and (T, 3, H, W) frames
```

Candidate i is generated with `torch.Generator("cpu").manual_seed(seed + i)`, one pipeline call each (`batch=1`),
so the same arguments give the same candidates, and calling the pipeline yourself with that generator gives that
candidate again.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from icreward.errors import IcrewardError
from icreward.interface import Scorer


class BestOfNError(IcrewardError, ValueError):
    """An argument of `best_of_n` is wrong, or the pipeline is not one it can drive (what and how to fix it)."""


@dataclass
class Candidate:
    """One generated video: `seed` (its generator's), `frames [T,3,H,W]` float32 in [0, 1] on the CPU, `reward` (the
    ranking head's value; None where that head has none), `heads` (every head's value by name, None where it has
    none) and `rank` (1 = best)."""

    seed: int
    frames: torch.Tensor
    reward: float | None
    heads: dict[str, float | None] = field(default_factory=dict)
    rank: int = 0


def best_of_n(
    pipeline: Any,
    image: str | Path | torch.Tensor | Any,
    prompt: str | None = None,
    n: int = 4,
    *,
    seed: int = 0,
    scorer: str | Scorer = "default",
    head: str | None = None,
    batch: int = 1,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    **pipeline_kwargs: Any,
) -> list[Candidate]:
    """N candidate videos of `image` from a diffusers I2V `pipeline`, ranked by reward, best first.

    - `image`: a file, a PIL image or a `[3,H,W]` float tensor in [0, 1]. The pipeline gets it as a PIL image; the
      reward compares the videos with it resized to the frames' size (what the pipeline conditioned on).
    - `prompt`: given to pipelines that take one (Wan, CogVideoX, LTX; SVD takes none) and to the reward (the text
      head and guidance read it).
    - `seed`: candidate i uses `torch.Generator("cpu").manual_seed(seed + i)`.
    - `scorer`, `head`: the reward (`icreward.load` name or a `Scorer`) and the head that ranks (default:
      `guidance` where the model has it, `icreward.guidance.default_head`). Every head is computed in the same pass.
    - `batch`: candidates per pipeline call, each with its own generator (a pipeline that takes a prompt gets one
      copy per video, others `num_videos_per_prompt`). Wan draws all noise per video, so its candidates do not
      depend on `batch` (up to float rounding); SVD draws its image-noise augmentation from a call's first
      generator, so with `batch > 1` its candidates differ from `batch=1`'s (still reproducible at the same
      `batch`).
    - `device`, `precision`: where and how the reward runs (default: the pipeline's device, fp32).
    - `pipeline_kwargs`: passed to every call (`num_frames`, `num_inference_steps`, `height`, `width`,
      `decode_chunk_size`, `guidance_scale`, ...). `output_type` is set to "pt".

    Rewards read the frames as generated (at most the scorer's `num_frames`, 16 for the shipped model, spread
    uniformly). They differ somewhat from `icreward score` on written mp4s, which reads compressed frames, the image
    at its own size, and repeats frames of videos shorter than `num_frames`. Equal rewards keep seed order.
    """
    from icreward.guidance import default_head, select_frames
    from icreward.loading import load
    from icreward.precision import autocast

    for name, value, low in (("n", n, 1), ("batch", batch, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BestOfNError(f"{name}: a whole number >= {low}, got {value!r}")
    if "output_type" in pipeline_kwargs or "generator" in pipeline_kwargs:
        raise BestOfNError("output_type and generator are set by best_of_n (frames as tensors, one seed per video)")
    params = _call_parameters(pipeline)
    if batch > 1 and "num_videos_per_prompt" not in params and not (prompt and "prompt" in params):
        raise BestOfNError(f"batch={batch}: {type(pipeline).__name__} makes one video per call; use batch=1")
    scorer = load(scorer) if isinstance(scorer, str) else scorer
    head = head if head is not None else default_head(scorer)
    scorer.check_head(head)
    if head == "text" and not prompt:
        raise BestOfNError("head 'text' scores each video against its prompt: give a prompt")
    device = torch.device(device) if device is not None else _pipeline_device(pipeline)
    scorer = scorer.to(device).eval()
    autocast(device, precision)  # an unknown precision, or one the device lacks, fails before any generation

    picture, reference = _image(image)
    call = dict(pipeline_kwargs, image=picture, output_type="pt")
    if prompt is not None and "prompt" in params:
        call["prompt"] = prompt
    candidates: list[Candidate] = []
    seeds = list(range(seed, seed + n))
    for start in range(0, n, batch):
        chunk = seeds[start : start + batch]
        generators = [torch.Generator("cpu").manual_seed(s) for s in chunk]
        extra = {}
        if len(chunk) > 1 and "prompt" in call:  # one prompt per video: Wan repeats its image embedding per prompt
            extra["prompt"] = [prompt] * len(chunk)
        elif len(chunk) > 1:
            extra["num_videos_per_prompt"] = len(chunk)
        out = pipeline(**{**call, **extra}, generator=generators if len(chunk) > 1 else generators[0])
        frames = video_frames(out, pipeline, len(chunk))  # (b, T, 3, H, W) in [0, 1], CPU float32
        scored = select_frames(frames, scorer.num_frames, skip_first=False).to(device)
        ref = _resized(reference, frames.shape[-2:]).to(device)  # (3, H, W)
        with torch.no_grad(), autocast(device, precision):
            heads = scorer.all_heads(ref.expand(len(chunk), *ref.shape), scored, [prompt] * len(chunk))
        values = {k: v.float().cpu().tolist() for k, v in heads.items()}
        for i, s in enumerate(chunk):
            named = {k: (v[i] if math.isfinite(v[i]) else None) for k, v in values.items()}
            candidates.append(Candidate(seed=s, frames=frames[i], reward=named.get(head), heads=named))
    candidates.sort(key=lambda c: (c.reward is None, -(c.reward or 0.0), c.seed))
    for rank, c in enumerate(candidates, start=1):
        c.rank = rank
    return candidates


def video_frames(output: Any, pipeline: Any, expected: int) -> torch.Tensor:
    """The videos of a pipeline call's output as `[B,T,3,H,W]` float32 in [0, 1] on the CPU: `output.frames` (or
    the output's first item) given as a `[B,T,C,H,W]` tensor (`output_type="pt"`), a `[B,T,H,W,C]` array, or a
    list of `[T,C,H,W]` tensors."""
    import numpy as np

    frames = getattr(output, "frames", None)
    if frames is None and isinstance(output, Sequence) and output:
        frames = output[0]
    if isinstance(frames, list) and frames and all(isinstance(f, torch.Tensor) for f in frames):
        frames = torch.stack(frames)
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    name = type(pipeline).__name__
    if not isinstance(frames, torch.Tensor) or frames.dim() != 5:
        what = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise BestOfNError(f"{name} returned {what} as frames; expected videos [B,T,C,H,W] with output_type='pt'")
    if frames.shape[2] != 3 and frames.shape[-1] == 3:
        frames = frames.permute(0, 1, 4, 2, 3)  # (B, T, H, W, C) -> (B, T, C, H, W)
    if frames.shape[0] != expected or frames.shape[2] != 3:
        raise BestOfNError(
            f"{name} returned frames of shape {list(frames.shape)}; expected {expected} video(s) [B,T,3,H,W]"
        )
    return frames.float().clamp(0, 1).cpu()


def _call_parameters(pipeline: Any) -> set[str]:
    if not callable(pipeline):
        raise BestOfNError(f"pipeline: a diffusers pipeline object, got {type(pipeline).__name__}")
    params = set(inspect.signature(pipeline.__call__).parameters)
    missing = [p for p in ("image", "generator", "output_type") if p not in params]
    if missing:
        raise BestOfNError(
            f"{type(pipeline).__name__} is not an image-to-video pipeline best_of_n can drive: its call takes no "
            f"{', '.join(missing)} (image-to-video pipelines: StableVideoDiffusion, WanImageToVideo, "
            "CogVideoXImageToVideo, LTXImageToVideo)"
        )
    return params


def _pipeline_device(pipeline: Any) -> torch.device:
    device = getattr(pipeline, "_execution_device", None) or getattr(pipeline, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


def _image(image: Any) -> tuple[Any, torch.Tensor]:
    """`(PIL image for the pipeline, [3,H,W] float tensor in [0, 1] for the reward)` of a file, a PIL image or a
    tensor."""
    import numpy as np
    from PIL import Image

    from icreward.media import load_image

    if isinstance(image, str | Path):
        tensor = load_image(image, max_side=None)
    elif isinstance(image, Image.Image):
        tensor = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise BestOfNError(f"image: a [3,H,W] float tensor in [0, 1], got {image.dtype} {list(image.shape)}")
        tensor = image.detach().float().cpu()
        lo, hi = float(tensor.min()), float(tensor.max())
        if not (math.isfinite(lo) and math.isfinite(hi) and lo >= -1e-3 and hi <= 1 + 1e-3):
            raise BestOfNError(f"image: values span [{lo:.4g}, {hi:.4g}]; give them in [0, 1]")
        tensor = tensor.clamp(0, 1)
    else:
        raise BestOfNError(f"image: a file, a PIL image or a [3,H,W] tensor in [0, 1], got {type(image).__name__}")
    array = (tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(array), tensor


def _resized(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """`image [3,H,W]` resized to `size` (bicubic, antialiased, clamped to [0, 1]), as pipelines resize their input."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = torch.nn.functional.interpolate(image[None], size=tuple(size), mode="bicubic", antialias=True)
    return out[0].clamp(0, 1)  # (3, H, W)
