"""Failure modes that act on rendered frames alone, so they apply to any video (synthetic or a real I2V output).

Each is a function `(frames, severity, rng) -> frames` on `(T, 3, H, W)` tensors in [0, 1]. Like an I2V model
going wrong, each one leaves frame 0 untouched and grows along the video from a random onset
(`onset_ramp`); for a fixed RNG state, a larger severity gives a larger change at every frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from icreward.rules import LUMA
from icreward.synth.textures import value_noise

_RGB_TO_YIQ = torch.tensor([list(LUMA), [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def onset_ramp(rng: np.random.Generator, frames: int) -> np.ndarray:
    """How far a failure has developed at each frame, `(T,)` in [0, 1]: 0 at frame 0, a random onset in the first
    half of the video, then growth (linear, accelerating or decelerating) to 1 at the last frame."""
    u = np.linspace(0.0, 1.0, frames)
    onset = rng.uniform(0.0, 0.5)
    ramp = np.clip((u - onset) / (1 - onset), 0, 1) ** rng.uniform(0.6, 2.0)
    ramp[0] = 0.0
    return ramp


def strength(rng: np.random.Generator, frames: int, severity: float) -> torch.Tensor:
    """`severity * onset_ramp` as a `(T,)` float tensor."""
    return torch.from_numpy(severity * onset_ramp(rng, frames)).float()


def hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate hue of `(T, 3, ...)` by `angle` `(T,)` radians in YIQ space (linear: works on premultiplied colour)."""
    c, s = angle.cos(), angle.sin()
    rot = torch.zeros(angle.shape[0], 3, 3)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, c, -s, s, c
    m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ  # (T, 3, 3)
    return torch.einsum("tij,tj...->ti...", m, x)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("j,tj...->t...", _RGB_TO_YIQ[0], x).unsqueeze(1)


def color_drift(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Global tone drift: one to three of hue rotation, (de)saturation, exposure, tint and contrast growing."""
    t = frames.shape[0]
    m = strength(rng, t, severity)
    view = m.view(t, 1, 1, 1)
    out = frames
    for kind in rng.permutation(["hue", "saturation", "exposure", "tint", "contrast"])[: rng.integers(1, 4)]:
        if kind == "hue":
            out = hue_rotate(out, m * rng.choice([-1, 1]) * rng.uniform(0.6, 1.6))
        elif kind == "saturation":
            factor = 1 + view * rng.choice([-0.9, 1.5])
            out = _luma(out) + (out - _luma(out)) * factor
        elif kind == "exposure":
            out = out * 2 ** (view * rng.choice([-1, 1]) * rng.uniform(0.7, 1.3))
        elif kind == "tint":
            gains = torch.from_numpy(rng.uniform(-0.5, 0.5, 3)).float().view(1, 3, 1, 1)
            out = out * (1 + view * gains)
        else:
            mean = out.mean((1, 2, 3), keepdim=True)
            out = mean + (out - mean) * (1 + view * rng.choice([-0.7, 1.0]))
    return out.clamp(0, 1)


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """A smooth random displacement field `(H, W, 2)` with values in [-1, 1]."""
    cells = rng.uniform(1.5, 4.0)
    field = torch.stack([value_noise(rng, h, w, cells, octaves=2) - 0.5 for _ in range(2)], -1)
    return field / field.abs().max().clamp(min=1e-6)


def structure_distortion(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Smooth warps that grow and wander over time, over the whole frame or melting one region."""
    t, _, h, w = frames.shape
    m = strength(rng, t, severity)
    start, end = _smooth_field(rng, h, w), _smooth_field(rng, h, w)
    u = torch.linspace(0, 1, t).view(t, 1, 1, 1)
    field = start * (1 - u) + end * u  # (T, H, W, 2)
    amplitude = rng.uniform(0.15, 0.3)
    if rng.random() < 0.5:  # local: a region melts
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        cx, cy, r = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0.3, 0.6)
        field = field * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r**2)).view(1, h, w, 1)
        amplitude *= 1.8
    identity = F.affine_grid(torch.eye(2, 3).expand(t, 2, 3), [t, 3, h, w], align_corners=False)
    grid = identity + amplitude * m.view(t, 1, 1, 1) * field
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of `(1, 3, H, W)`, reflect-padded."""
    if sigma < 0.05:
        return x
    radius = max(1, min(math.ceil(3 * sigma), x.shape[-1] - 1, x.shape[-2] - 1))
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)  # (3, 1, 1, 2r+1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.transpose(-1, -2), groups=3)


def _resample(x: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """Shrink `(1, 3, H, W)` by `factor` (area) and enlarge it back (`nearest`: blocks, `bilinear`: low-res)."""
    if factor <= 1.01:
        return x
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def detail_loss(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Detail washing out over time: one or two of blur, blockiness, low resolution and posterisation."""
    t, _, h, _ = frames.shape
    m = strength(rng, t, severity).tolist()
    kinds = list(rng.permutation(["blur", "blocks", "lowres", "posterise"])[: rng.integers(1, 3)])
    blur_px, block, levels = rng.uniform(1.5, 3.0) * h / 128, h / 16 * rng.uniform(0.6, 1.0), rng.uniform(4.5, 6.0)
    out = []
    for frame, s in zip(frames, m, strict=True):
        x = frame[None]
        if "blur" in kinds:
            x = _gaussian_blur(x, s * blur_px)
        if "blocks" in kinds:
            x = _resample(x, 1 + s * (block - 1), "nearest")
        if "lowres" in kinds:
            x = _resample(x, 1 + s * (block - 1), "bilinear")
        if "posterise" in kinds and s > 0:
            q = 2 ** (8 - s * levels) - 1
            x = (x * q).round() / q
        out.append(x[0])
    return torch.stack(out).clamp(0, 1)


def flicker(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Temporal jitter growing over time: one to three of brightness, colour, boiling texture and frame shake."""
    t, _, h, w = frames.shape
    m = strength(rng, t, severity).view(t, 1, 1, 1)
    out = frames
    for kind in rng.permutation(["brightness", "colour", "texture", "shake"])[: rng.integers(1, 4)]:
        if kind == "brightness":
            out = out * (1 + m * rng.uniform(0.15, 0.35) * torch.from_numpy(rng.standard_normal((t, 1, 1, 1))).float())
        elif kind == "colour":
            out = out * (1 + m * 0.15 * torch.from_numpy(rng.standard_normal((t, 3, 1, 1))).float())
        elif kind == "texture":
            cells = rng.uniform(4, 12)
            boil = torch.stack([value_noise(rng, h, w, cells) - 0.5 for _ in range(t)]).unsqueeze(1)
            fine = torch.from_numpy(rng.standard_normal((t, 1, h, w))).float()
            out = out + m * (rng.uniform(0.15, 0.3) * boil + 0.04 * fine)
        else:
            shift = m.view(t, 1) * rng.uniform(0.02, 0.05) * torch.from_numpy(rng.standard_normal((t, 2))).float()
            theta = torch.eye(2, 3).repeat(t, 1, 1)
            theta[:, :, 2] = shift
            grid = F.affine_grid(theta, [t, 3, h, w], align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp(0, 1)


def frozen(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """A static video: frame 0 held for the whole clip (consistent, but no motion). Severity and RNG are unused."""
    return frames[:1].expand_as(frames).clone()


# ---- motion failures: the content stays faithful, the motion is unnatural


def jitter(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The first frame shaken in place: small random per-frame translations and rotations around the start (up to
    about 3% of the frame and 0.03 rad at severity 1), with no net path (a generator that cannot move the scene)."""
    t, _, h, w = frames.shape
    shift = severity * rng.uniform(0.02, 0.06) * rng.standard_normal((t, 2))
    angle = severity * rng.uniform(0.01, 0.03) * rng.standard_normal(t)
    shift[0], angle[0] = 0.0, 0.0
    c, s = np.cos(angle), np.sin(angle)
    theta = torch.from_numpy(np.stack([np.stack([c, -s, shift[:, 0]], -1), np.stack([s, c, shift[:, 1]], -1)], 1))
    grid = F.affine_grid(theta.float(), [t, 3, h, w], align_corners=False)
    out = F.grid_sample(frames[:1].expand(t, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)  # fmt: skip
    out[0] = frames[0]
    return out.clamp(0, 1)


def pingpong_index(frames: int, severity: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """`(T,)` frame indices of a back-and-forth loop: forward to a turn, then back the same way. The turn is at
    `(1 - severity / 2)` of the clip: at severity 1 the video plays to its middle and back to (about) its start."""
    turn = int(round((1 - severity / 2) * (frames - 1)))
    t = np.arange(frames)
    return np.where(t <= turn, t, np.maximum(0, 2 * turn - t))


def pingpong(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The faithful video played forward to a turn and back (`pingpong_index`): every frame is faithful, the motion
    reverses."""
    return frames[torch.from_numpy(pingpong_index(frames.shape[0], severity))]


def stutter_index(frames: int, severity: float, rng: np.random.Generator) -> np.ndarray:
    """`(T,)` frame indices of a stuttering video: each run of 2 to `2 + round(3 * severity)` frames holds the
    run's first frame, then jumps to where the video should be (the motion keeps its speed, in jerks)."""
    index, start = np.zeros(frames, dtype=np.int64), 0
    while start < frames:
        length = int(rng.integers(2, 3 + round(3 * severity)))
        index[start : start + length] = start
        start += length
    return index


def stutter(frames: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Frames held in runs, then jumping (`stutter_index`): jerky motion of faithful frames."""
    return frames[torch.from_numpy(stutter_index(frames.shape[0], severity, rng))]
