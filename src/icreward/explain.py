"""Where and when a video drifts from its image: a per-frame reward curve and a per-patch inconsistency map per frame.

`explain(scorer, image, video)` returns an `Explanation`:
- `curve [T]`: each frame judged alone, as a still video of that frame (`still_curve`), on the scorer's own reward
  scale (higher = more consistent). Judged alone, a frame's reward says how far *that* frame is from the image, so
  the curve falls where drift starts; the reward of each prefix (`prefix_curve`) carries the worst frame so far and
  lags. Measured on held-out synthetic local failures (`benchmarks/bench_localisation.py`): the onset is within 2
  frames in 87% of videos from this curve, 77% from the prefix curve, 50% from a pixel-difference curve.
- `maps [T, h, w]` in [0, 1] (higher = more inconsistent): for a learned model, each patch's evidence distances to
  the image (`icreward.models.evidence.evidence_maps`: to the image patch at its place, to the nearest one nearby
  and to the nearest anywhere), as log distances above the floor, weighted by the model's read-out weights of those
  measures and averaged over each patch's 3 x 3 neighbourhood (`evidence_map`); laid out on the whole frame
  (`frame_maps`: 0 outside the centre crop the model sees). One scale for every frame of a video
  (`normalise_maps`), so frames compare, and a video whose largest distance is small stays dim. The IC head's
  attention and the gradient of the reward w.r.t. the pixels localise worse (the benchmark's ablation). For the
  first-frame pixel metrics, the squared pixel error of each frame against the image; other metrics have no map.
- `onset`: the sampled frame where the curve falls to `ONSET_FRACTION` of its whole fall from frame 1
  (`find_onset`); None (no drift) when no frame alone reads below `DRIFT_LEVEL` or the fall is under `DRIFT_DROP`.
  `region`: the ninth of the frame (3 x 3) whose map is highest from the onset on; `summary`: one line.

Which scorers explain: every learned model (IC-Reward of any head, the MLP baseline: maps from their backbone's
patch tokens) and the consistency metrics (a curve; a map for the pixel metrics `first-frame-*`). Motion and
camera metrics judge the whole clip, not a frame against the image, and are refused (`ExplainError`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icreward.errors import IcrewardError

# Whether a video drifts at all: some frame, judged alone, must read below DRIFT_LEVEL (z-scored reward of the shipped
# model) and the curve must fall by at least DRIFT_DROP from its start. Camera motion lowers a frame's reward too, so
# the fall alone cannot tell drift from motion; the level separates them, but only partly: on held-out synthetic
# videos (bench_localisation) 60% of local failures and 20% of consistent videos are called drifting.
DRIFT_LEVEL = 1.0
DRIFT_DROP = 0.25
# Fraction of the curve's whole fall, from the start to its lowest point, at which the onset is placed.
ONSET_FRACTION = 0.7
# A map value (the weighted log-distance above the floor) that reads as fully changed: maps are divided by the
# larger of this and the video's own maximum, so maps of different videos share about one scale and a video that
# changes little is not stretched to full brightness (a consistent held-out synthetic video's largest value: 9.8 at
# the median, grain and motion included).
MAP_FULL_SCALE = 12.0
REGIONS = (("top-left", "top", "top-right"), ("left", "centre", "right"), ("bottom-left", "bottom", "bottom-right"))
WHOLE_FRAME = "whole frame"  # the region when no ninth stands out (the change is everywhere)
REGION_CONTRAST = 1.25  # the top ninth's mean over the frame's mean below which no region stands out
PIXEL_METRICS = ("first-frame-ssim", "first-frame-psnr", "first-frame-mse")


class ExplainError(IcrewardError):
    """A scorer that cannot explain its reward per frame (motion and camera metrics)."""


@dataclass
class Explanation:
    """Where and when one video drifts from its image (see the module docstring)."""

    curve: torch.Tensor  # [T] each sampled frame's reward, judged alone; higher = more consistent
    maps: torch.Tensor | None  # [T, h, w] in [0, 1], higher = more inconsistent; None for metrics with no map
    frame_indices: list[int]  # the source's frame of each sampled frame
    times: list[float] | None  # seconds of those frames, where the file says its frame rate
    reward: float  # the selected head's reward of the whole video
    heads: dict[str, float | None]  # every head's reward (None: no value, e.g. text without a prompt)
    onset: int | None  # index into the sampled frames where drift starts; None if it never drifts
    region: str  # where the map is highest from the onset on (REGIONS), WHOLE_FRAME, or "none"
    summary: str  # one line: "drifts from frame 9 (0.38 s); the top-left region changes most"
    head: str = "consistency"  # the head `reward` is

    def to_json(self, grid: int | None = None) -> dict:
        """A JSON-serialisable dict: floats rounded to 4 digits, maps (a list of frames of rows) resized to
        `grid` x `grid` where given (area averaging, bilinear when enlarging)."""
        maps = None
        if self.maps is not None:
            m = self.maps.detach().float().cpu()
            if grid is not None:
                if grid < 1:
                    raise ValueError(f"grid must be >= 1, got {grid}")
                mode = "area" if grid <= min(m.shape[-2:]) else "bilinear"
                extra = {} if mode == "area" else {"align_corners": False}
                m = F.interpolate(m[None], size=(grid, grid), mode=mode, **extra)[0].clamp(0, 1)  # (T, grid, grid)
            maps = _rounded(m)
        return {
            "reward": round(self.reward, 4),
            "head": self.head,
            "heads": {k: (None if v is None else round(v, 4)) for k, v in self.heads.items()},
            "curve": _rounded(self.curve.detach().float().cpu()),
            "maps": maps,
            "frame_indices": list(self.frame_indices),
            "times": None if self.times is None else [round(t, 4) for t in self.times],
            "onset": self.onset,
            "onset_frame": None if self.onset is None else self.frame_indices[self.onset],
            "region": self.region,
            "summary": self.summary,
        }


def _rounded(x: torch.Tensor):
    return np.round(x.numpy().astype(np.float64), 4).tolist()


# ---- which scorers explain


def _kind(scorer) -> str:
    """ "model" (a learned reward: encode + reward_from_tokens), "pixel" (a first-frame metric), "frame" (a
    consistency metric judged frame by frame); ExplainError for the rest."""
    if hasattr(scorer, "encode") and hasattr(scorer, "reward_from_tokens"):
        return "model"
    name = getattr(scorer, "name", type(scorer).__name__)
    if getattr(scorer, "dimension", "consistency") != "consistency":
        raise ExplainError(
            f"{name} measures {scorer.dimension} over the whole clip, not each frame against the image, so it has no "
            "per-frame explanation; explain with a learned model (default, a checkpoint) or a consistency metric "
            f"({', '.join(PIXEL_METRICS)}, color-hist, vbench-i2v-*, clip-i)"
        )
    return "pixel" if name in PIXEL_METRICS else "frame"


# ---- curves


def still_videos(video: torch.Tensor) -> torch.Tensor:
    """`video [T,3,H,W]` -> `[T, 2, 3, H, W]`: each frame as a still two-frame video (the same frame twice)."""
    return video[:, None].expand(-1, 2, *video.shape[1:])


def still_curve(scorer, image: torch.Tensor, video: torch.Tensor, tokens=None) -> torch.Tensor:
    """`[T]`: the reward of each frame judged alone, as a still video of that frame (same scale as the reward).

    For a learned model from its backbone tokens `(img [1,..], vid [1,T,..])` where given (encoded once)."""
    if tokens is None:
        return scorer.rewards_for_image(image, still_videos(video))
    img_tokens, vid_tokens = tokens
    t = vid_tokens["patch"].shape[1]
    img = {k: v.expand(t, *v.shape[1:]) for k, v in img_tokens.items()}  # (T, ...)
    still = {k: v[0][:, None].expand(-1, 2, *v.shape[2:]) for k, v in vid_tokens.items()}  # (T, 2, ...)
    return scorer.reward_from_tokens(img, still)


def prefix_curve(scorer, image: torch.Tensor, video: torch.Tensor, tokens) -> torch.Tensor:
    """`[T]`: the reward of frames 0..t for each t (frame 0 alone as a still video), from backbone tokens."""
    img_tokens, vid_tokens = tokens
    values = [still_curve(scorer, image, video[:1], (img_tokens, {k: v[:, :1] for k, v in vid_tokens.items()}))]
    for t in range(2, vid_tokens["patch"].shape[1] + 1):
        values.append(scorer.reward_from_tokens(img_tokens, {k: v[:, :t] for k, v in vid_tokens.items()}))
    return torch.cat(values)


def find_onset(
    curve: torch.Tensor, level: float | None = DRIFT_LEVEL, drop: float = DRIFT_DROP, fraction: float = ONSET_FRACTION
) -> int | None:
    """The sampled frame where `curve [T]` (higher = more consistent) starts to fall: the first frame whose fall below
    the start reaches `fraction` of the whole fall to the curve's lowest point. None (no drift) when that whole fall
    is under `drop`, or when no frame after the start reads below `level` (None: no level). A curve that never falls
    but reads below `level` from the start on (a video unlike its image from its first frames) drifts from the first
    frame below `level`.

    The start is frame 1's value, not frame 0's: an I2V model's frame 0 is often the image itself, whose reward
    (every distance at the floor) stands far above that of any moving frame, so a fall from it says nothing about
    drift. A video that drifts from frame 1 on is therefore found later, or not at all."""
    c = curve.detach().float().cpu()
    start = 1 if c.shape[0] > 2 else 0
    fall = (c[start] - c).clamp_min(0)  # (T,) how far each frame is below the start
    fall[:start] = 0
    total = float(fall.max())
    if level is not None and float(c[start:].max()) < level:  # below the level from the start: off from the outset
        return int((c < level).nonzero()[0])
    if not math.isfinite(total) or total < drop or (level is not None and float(c[start:].min()) >= level):
        return None
    return int((fall >= fraction * total).nonzero()[0])


# ---- maps


def evidence_map(scorer, tokens) -> torch.Tensor:
    """`[T, h, w]`, >= 0: each patch's evidence distances to the image (`evidence_maps`: position, local, match per
    token group), as log distances above the floor, weighted by the model's read-out weights of those measures (mean
    plus max aggregate; equal weights for a model without the evidence branch) and summed."""
    from icreward.models.evidence import EPS, MAP_MEASURES, evidence_maps

    img_tokens, vid_tokens = tokens
    if "patch" not in vid_tokens:
        raise ExplainError(f"{scorer.name}'s backbone returns no patch tokens, so there is no map of where")
    groups = scorer.backbone.token_groups
    maps = evidence_maps(img_tokens, vid_tokens, groups)[0] - math.log(EPS)  # (T, N, G*3), 0 where identical
    weights = torch.ones(maps.shape[-1])
    readout = getattr(scorer, "evidence", None)
    if readout is not None:
        named = readout.weights()
        for i, (group, measure) in enumerate((g[0], m) for g in groups for m in MAP_MEASURES):
            pair = [named.get(f"{group}/{measure}/{a}") for a in ("mean", "max")]
            weights[i] = sum(w for w in pair if w is not None) if any(w is not None for w in pair) else 0.0
        weights = weights / weights.sum().clamp_min(1e-12) * len(weights)  # mean weight 1
    values = (maps * weights.to(maps)).sum(-1) / len(groups)  # (T, N): per group, the weighted sum of its 3 measures
    return smooth_map(_to_grid(values))


def smooth_map(maps: torch.Tensor) -> torch.Tensor:
    """`[T, h, w]` averaged over each cell's 3 x 3 neighbourhood (within the frame): a changed object spans several
    patches, while a single patch's distance is noisy (grain, an edge crossing a patch border)."""
    return F.avg_pool2d(maps[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]


def attention_map(scorer, tokens) -> torch.Tensor:
    """`[T, h, w]`: the IC head's attention (mean over its queries) on each patch of each frame (IC-Reward models
    with a head)."""
    img_tokens, vid_tokens = tokens
    _, attention = scorer.head(img_tokens, vid_tokens, return_attention=True)
    t = vid_tokens["patch"].shape[1]
    maps = attention["head"].mean(1).view(t, -1)  # (1, Q, T*N') -> (T, N')
    if maps.shape[-1] == vid_tokens["patch"].shape[2] + 1:
        maps = maps[:, 1:]  # the attention head's cls token dropped
    return _to_grid(maps)


def gradient_map(scorer, image: torch.Tensor, video: torch.Tensor, grid: int | None = None) -> torch.Tensor:
    """`[T, h, w]`: |d reward / d pixel| summed over colour and averaged over each cell of a `grid` x `grid` layout
    (the model's patch grid where it has one, else 16)."""
    with torch.enable_grad():
        frames = video.detach().clone().requires_grad_(True)
        reward = scorer(image[None], frames[None]).sum()
        (grad,) = torch.autograd.grad(reward, frames)
    saliency = grad.abs().sum(1, keepdim=True)  # (T, 1, H, W)
    return F.adaptive_avg_pool2d(saliency, grid or 16)[:, 0]  # (T, grid, grid)


def pixel_error_map(image: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """`[T, H, W]`: squared error of each frame against the image (brought to the frame's size), mean over colour."""
    from icreward.metrics.base import match_image_to_frames

    img = match_image_to_frames(image[None], video[:1])[0]  # (3, h, w)
    return (video - img).square().mean(1)  # (T, h, w)


def frame_maps(maps: torch.Tensor, frame_size: tuple[int, int], config) -> torch.Tensor:
    """Maps `[T, g, g]` of what the model sees (its preprocessing's centre crop, `config` a `PreprocessConfig`) laid
    out on the whole frame of `frame_size` (H, W): `[T, gh, gw]` in cells of the same size, 0 outside the crop (the
    model never sees there). A square frame, or no crop, comes back as it is."""
    h, w = frame_size
    if config.resize is not None and not config.square_resize:
        scale = config.resize / min(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    elif config.square_resize:
        h = w = config.resize
    crop = config.crop
    if crop is None or (h, w) == (crop, crop) or h < crop or w < crop:
        return maps
    cell = crop / maps.shape[-1]
    top, left = round((h - crop) // 2 / cell), round((w - crop) // 2 / cell)
    out = maps.new_zeros(
        maps.shape[0], max(round(h / cell), top + maps.shape[1]), max(round(w / cell), left + maps.shape[2])
    )
    out[:, top : top + maps.shape[1], left : left + maps.shape[2]] = maps
    return out  # (T, gh, gw)


def _to_grid(values: torch.Tensor) -> torch.Tensor:
    """`[T, N]` per-patch values on a square grid -> `[T, side, side]`."""
    side = math.isqrt(values.shape[-1])
    if side * side != values.shape[-1]:
        raise ExplainError(f"cannot lay {values.shape[-1]} patches out on a square grid")
    return values.reshape(values.shape[0], side, side)


def normalise_maps(maps: torch.Tensor, full_scale: float) -> torch.Tensor:
    """Maps `[T, h, w]` >= 0 into [0, 1] with one scale for the whole video: divided by the larger of their maximum
    and `full_scale`, so frames compare and a video with small changes everywhere stays dim."""
    maps = maps.detach().float().clamp_min(0)
    return (maps / max(float(maps.max()), full_scale)).clamp(0, 1)


def strongest_region(maps: torch.Tensor, onset: int | None) -> str:
    """The ninth of the frame (`REGIONS`) whose map is highest, averaged over the frames from `onset` on (every frame
    when None); `WHOLE_FRAME` when it is under `REGION_CONTRAST` times the frame's mean."""
    m = maps[onset or 0 :].float().mean(0)  # (h, w)
    cells = F.adaptive_avg_pool2d(m[None, None], 3)[0, 0]  # (3, 3)
    best = int(cells.flatten().argmax())
    if float(cells.flatten()[best]) < REGION_CONTRAST * float(m.mean()) or float(m.max()) <= 0:
        return WHOLE_FRAME
    return REGIONS[best // 3][best % 3]


# ---- the explanation


def explain(
    scorer,
    image: torch.Tensor,
    video: torch.Tensor,
    prompt: str | None = None,
    *,
    value_range: str = "0,1",
    frame_indices: Sequence[int] | None = None,
    times: Sequence[float] | None = None,
) -> Explanation:
    """Explain the reward of `video [T,3,H,W]` for `image [3,H,W]` (floats in `value_range`, "0,1" or "-1,1"): the
    per-frame curve, the per-frame maps, the onset, the region and a one-line summary (module docstring).

    `frame_indices` / `times` say which frames of a file the T frames are (default: 0..T-1, no times). Raises
    `ExplainError` for a scorer that cannot explain (motion and camera metrics) and `InputError` for bad tensors.
    """
    kind = _kind(scorer)
    image, video = scorer.checked_inputs(image, video, value_range, layout="single")
    t = video.shape[0]
    if t < 2:
        raise IcrewardError(f"explain needs a video of at least 2 frames, got T = {t}")
    frame_indices = list(range(t)) if frame_indices is None else [int(i) for i in frame_indices]
    if len(frame_indices) != t or (times is not None and len(times) != t):
        raise ValueError(f"frame_indices and times need one entry per frame ({t})")
    device = next((p.device for p in scorer.parameters()), torch.device("cpu"))
    image, video = image.to(device), video.to(device)
    prompts = None if prompt is None else [prompt]
    with torch.no_grad():
        if kind == "model":  # one encoder pass serves the heads, the curve and the maps
            tokens = scorer.encode(image[None], video[None])
            heads = scorer.head_values(scorer.heads_from_tokens(*tokens, video[None], prompts))
            curve = still_curve(scorer, image, video, tokens)
            maps = frame_maps(evidence_map(scorer, tokens), tuple(video.shape[-2:]), scorer.preprocess_config)
            maps = normalise_maps(maps, MAP_FULL_SCALE)
        else:
            heads = scorer.head_values(scorer.all_heads(image[None], video[None], prompts))
            curve = still_curve(scorer, image, video)
            maps = pixel_error_map(image, video) if kind == "pixel" else None
            maps = None if maps is None else normalise_maps(maps, 0.05)
    head = scorer.selected_head
    value = heads.get(head)
    # DRIFT_LEVEL and DRIFT_DROP are on the z-scored scale of learned models; a metric's own scale has no such level
    onset = find_onset(curve) if kind == "model" else find_onset(curve, level=None, drop=1e-6)
    region = "none" if maps is None else strongest_region(maps, onset)
    return Explanation(
        curve=curve.detach().float().cpu(),
        maps=None if maps is None else maps.cpu(),
        frame_indices=frame_indices,
        times=None if times is None else [float(x) for x in times],
        reward=float("nan") if value is None else float(value),
        heads=heads,
        onset=onset,
        region=region,
        summary=summarise(onset, region, frame_indices, times),
        head=head,
    )


def summarise(onset: int | None, region: str, frame_indices: Sequence[int], times: Sequence[float] | None) -> str:
    """The one-line summary of an explanation."""
    if onset is None:
        return "no drift found: every frame stays close to the image"
    when = f"drifts from frame {frame_indices[onset]}" + (f" ({times[onset]:.2f} s)" if times is not None else "")
    if region in ("none", WHOLE_FRAME):
        return f"{when}; the whole frame changes" if region == WHOLE_FRAME else when
    return f"{when}; the {region} region changes most"


def frame_timing(path: str | Path, num_frames: int) -> tuple[list[int], list[float] | None]:
    """Which frames of the video file `path` `load_video` samples to `num_frames`, and their times in seconds where
    the file says its frame rate (a folder of frames or a `.npy` array: no times)."""
    from icreward.media import IMAGE_EXTENSIONS, sample_indices

    path = Path(path)
    if path.is_dir():
        n = sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return sample_indices(n, num_frames), None
    if path.suffix.lower() == ".npy":
        return sample_indices(int(np.load(path, mmap_mode="r").shape[0]), num_frames), None
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)
        rate = stream.average_rate or stream.guessed_rate
    indices = sample_indices(n, num_frames)
    fps = float(rate) if rate else 0.0
    return indices, ([i / fps for i in indices] if fps > 0 else None)


def explain_files(
    scorer,
    image_path: str | Path,
    video_paths: Sequence[str | Path],
    prompt: str | None = None,
    *,
    num_frames: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> list[Explanation]:
    """Explain several videos of one image file (decoded once): one `Explanation` per video, in order, with each
    video's sampled frames and their times. `num_frames` defaults to the scorer's; `precision` is fp32, or bf16 /
    fp16 autocast on `device`. A file that cannot be read raises `MediaError` naming it."""
    from icreward.media import load_image, load_video
    from icreward.precision import autocast

    _kind(scorer)  # refuse before anything is decoded
    context = autocast(device, precision)
    scorer = scorer.to(device).eval()
    t = num_frames or scorer.num_frames
    image = load_image(image_path, max_side=scorer.max_side)
    out = []
    for path in video_paths:
        video = load_video(path, num_frames=t, max_side=scorer.max_side)
        indices, times = frame_timing(path, t)
        with context:
            out.append(explain(scorer, image, video, prompt, frame_indices=indices, times=times))
    return out
