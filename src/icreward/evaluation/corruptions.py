"""Corruptions of real I2V videos that the training engine never makes, for the real-video robustness check
(`icreward.evaluation.robustness`).

Every corruption is `fn(video [T,3,H,W] in [0,1], severity, rng) -> video [T,3,H,W] in [0,1]`, deterministic for an
RNG state and leaving its input untouched: frame 0 is returned unchanged (an I2V model pins it to the image), the
change starts at frame 1 and grows along the video to `severity` at the last frame (`growth`), severity 0 is the
identity, and for one RNG state a larger severity moves the video further from the original.

`HELDOUT_CORRUPTIONS` (here) use other mechanisms than the synthetic failure modes of `icreward.synth.frame_failures`
and `icreward.synth.failures` (channel permutation, sensor noise, block rearrangement, DCT compression, mirroring,
occlusion, inversion, frame order, reframing, toon rendering, blown highlights), so the accuracy on them measures
how a reward generalises to failures it was not trained on. `STRUCTURAL_CORRUPTIONS`
(`icreward.evaluation.structural`) move or replace content while keeping the colours.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from icreward.rules import LUMA

Corruption = Callable[[torch.Tensor, float, np.random.Generator], torch.Tensor]


def growth(frames: int, severity: float) -> torch.Tensor:
    """How far a corruption has developed at each frame, `(T,)`: 0 at frame 0, rising linearly to `severity`."""
    return severity * torch.linspace(0, 1, frames)


def pixel_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates `(H, W)` each: rows `ys`, columns `xs`."""
    return torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")


def channel_swap(video: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Two colour channels cross-fade into each other (R<->B, R<->G or G<->B). A transposition mirrors hues, which
    no hue rotation, tint or saturation change (the synthetic colour drift) can produce."""
    a = growth(len(video), severity).view(-1, 1, 1, 1)
    order = ([2, 1, 0], [1, 0, 2], [0, 2, 1])[rng.integers(3)]
    return video * (1 - a) + video[:, order] * a


def gaussian_noise(video: torch.Tensor, severity: float, rng: np.random.Generator, sigma: float = 0.25) -> torch.Tensor:
    """Independent per-pixel, per-channel Gaussian grain of standard deviation up to `sigma`, fresh every frame: a
    sensor-like colour noise, where the synthetic flicker boils smooth grey noise (with fine grain of at most
    0.04, the same in every channel)."""
    a = growth(len(video), severity).view(-1, 1, 1, 1)
    noise = torch.from_numpy(rng.standard_normal(video.shape, dtype=np.float32))
    return (video + sigma * a * noise).clamp(0, 1)


def local_patch_swap(
    video: torch.Tensor, severity: float, rng: np.random.Generator, grid: int = 4, max_pairs: int = 4
) -> torch.Tensor:
    """Rectangles of the frame trade places, hard-edged: one pair from frame 1, up to `severity * max_pairs` pairs by
    the last frame. Colours and textures all stay in the frame, only the layout breaks (the synthetic modes warp
    smoothly or bring in other content). Rectangles sit in distinct cells of a `grid` x `grid` layout, so they
    never overlap and a larger severity swaps a superset."""
    t, _, h, w = video.shape
    ch, cw = max(1, h // grid), max(1, w // grid)  # cell size
    ph, pw = max(1, int(0.8 * ch)), max(1, int(0.8 * cw))  # rectangle size, placed at random inside its cell
    cells = rng.permutation(grid * grid)[: 2 * max_pairs]
    corners = [
        ((c // grid) * ch + rng.integers(ch - ph + 1), (c % grid) * cw + rng.integers(cw - pw + 1)) for c in cells
    ]
    active = torch.ceil(growth(t, severity) * max_pairs - 1e-6).clamp(min=0).int().tolist()
    out = video.clone()
    for i, n in enumerate(active):
        for (ya, xa), (yb, xb) in zip(corners[0 : 2 * n : 2], corners[1 : 2 * n : 2], strict=True):
            out[i, :, ya : ya + ph, xa : xa + pw] = video[i, :, yb : yb + ph, xb : xb + pw]
            out[i, :, yb : yb + ph, xb : xb + pw] = video[i, :, ya : ya + ph, xa : xa + pw]
    return out


def _jpeg(frame: torch.Tensor, quality: int) -> torch.Tensor:
    """`(3, H, W)` encoded as a JPEG at `quality` (4:2:0 chroma) and decoded again."""
    pixels = (frame.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255


def jpeg_artifacts(
    video: torch.Tensor, severity: float, rng: np.random.Generator, best: int = 90, worst: int = 5
) -> torch.Tensor:
    """Frames re-encoded as JPEGs of falling quality (`best` to `worst` at severity 1): 8x8 DCT blocking, ringing
    and chroma bleeding, unlike the synthetic detail loss (blur, pixelation, low resolution, bit-depth posterise).
    The RNG is unused."""
    out = video.clone()
    for i, a in enumerate(growth(len(video), severity).tolist()):
        if a > 0:
            out[i] = _jpeg(video[i], round(best - (best - worst) * a))
    return out


def mirror_drift(video: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The video cross-fades into its own left-right mirror image: the same content, colours and histogram, with
    the layout flipped (the synthetic replacement brings in other content). The RNG is unused."""
    a = growth(len(video), severity).view(-1, 1, 1, 1)
    return video * (1 - a) + video.flip(-1) * a


def occluder(video: torch.Tensor, severity: float, rng: np.random.Generator, max_cover: float = 0.6) -> torch.Tensor:
    """An opaque rectangle (solid, striped or checkered) grows near the centre to `max_cover` of each side: a
    foreign object in front of the scene, where the synthetic modes only change the scene's own layers."""
    t, _, h, w = video.shape
    ys, xs = pixel_grid(h, w)
    cy, cx = h * (0.5 + rng.uniform(-0.1, 0.1)), w * (0.5 + rng.uniform(-0.1, 0.1))
    aspect = rng.uniform(0.8, 1.2, 2)
    colours = torch.from_numpy(rng.uniform(0, 1, (2, 3))).float().view(2, 3, 1, 1)
    style, period, angle = rng.integers(3), rng.uniform(0.04, 0.1) * max(h, w), rng.uniform(0, np.pi)
    if style == 0:  # solid
        second = torch.zeros(h, w, dtype=torch.bool)
    elif style == 1:  # stripes at a random angle
        second = (xs * np.cos(angle) + ys * np.sin(angle)) / period % 1 < 0.5
    else:  # checkerboard
        second = ((xs // period) + (ys // period)) % 2 == 1
    pattern = torch.where(second, colours[1], colours[0])  # (3, H, W)
    half = growth(t, severity).view(t, 1, 1) * max_cover / 2
    inside = ((ys - cy).abs() < half * h * aspect[0]) & ((xs - cx).abs() < half * w * aspect[1])  # (T, H, W)
    return torch.where(inside[:, None], pattern, video)


def invert_region(
    video: torch.Tensor, severity: float, rng: np.random.Generator, max_radius: float = 0.6
) -> torch.Tensor:
    """Colours invert (x -> 1 - x) inside a disc that spreads from a random point to `max_radius` of the longer
    side, with a soft rim: a non-monotone tone change, local, that no hue, tint, exposure or contrast drift makes."""
    t, _, h, w = video.shape
    ys, xs = pixel_grid(h, w)
    cy, cx = h * rng.uniform(0.2, 0.8), w * rng.uniform(0.2, 0.8)
    distance = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt() / max(h, w)  # (H, W)
    radius = growth(t, severity).view(t, 1, 1) * max_radius
    inside = ((radius - distance) / 0.02).clamp(0, 1)[:, None]  # (T, 1, H, W): 0 outside, 1 inside, 0.02 rim
    return video + inside * (1 - 2 * video)


def temporal_shuffle(video: torch.Tensor, severity: float, rng: np.random.Generator, keep: int = 2) -> torch.Tensor:
    """Frames after the first `keep` leave their place: a `severity` share of them (late frames more likely first)
    trade places in one cycle, so each moved frame shows another's content. Every frame's content is kept, only
    the order breaks; the synthetic modes all keep the order (frozen removes motion, flicker jitters frames)."""
    t = len(video)
    tail = np.arange(keep, t)
    priority = tail[np.argsort(rng.uniform(0, 1, len(tail)) - np.linspace(0, 1, len(tail)))]  # late ones first
    moved = priority[: int(round(severity * len(tail)))]
    out = video.clone()
    if len(moved) >= 2:
        out[moved] = video[np.roll(moved, -1)]
    return out


def letterbox_shrink(
    video: torch.Tensor, severity: float, rng: np.random.Generator, min_scale: float = 0.5
) -> torch.Tensor:
    """The whole frame shrinks toward the centre (to `min_scale` of its size at severity 1) inside black borders: a
    reframing failure. The synthetic camera moves keep the frame filled and their shrink acts on the subject only.
    The RNG is unused."""
    t, _, h, w = video.shape
    out = video.clone()
    for i, a in enumerate(growth(t, severity).tolist()):
        nh, nw = max(1, round(h * (1 - (1 - min_scale) * a))), max(1, round(w * (1 - (1 - min_scale) * a)))
        if (nh, nw) == (h, w):
            continue
        small = F.interpolate(video[i : i + 1], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (h - nh) // 2, (w - nw) // 2
        out[i] = 0
        out[i, :, top : top + nh, left : left + nw] = small[0].clamp(0, 1)
    return out


def _bilateral(x: torch.Tensor, radius: int, sigma_space: float, sigma_range: float = 0.1) -> torch.Tensor:
    """Bilateral filter of `(N, 3, H, W)` (Tomasi & Manduchi 1998): each pixel becomes the mean of its
    `(2 radius + 1)^2` neighbours weighted by closeness in space and in grey level, which smooths within regions and
    keeps the edges between them."""
    h, w = x.shape[-2:]
    grey = torch.einsum("c,nchw->nhw", torch.tensor(LUMA), x)[:, None]  # (N, 1, H, W)
    padded = F.pad(torch.cat([x, grey], 1), (radius,) * 4, mode="replicate")  # (N, 4, H + 2r, W + 2r)
    total, weight = torch.zeros_like(x), torch.zeros_like(grey)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[..., radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            log_wt = (shifted[:, 3:] - grey).square_().mul_(-1 / (2 * sigma_range**2))
            wt = log_wt.add_(-(dx * dx + dy * dy) / (2 * sigma_space**2)).exp_()  # (N, 1, H, W)
            total.addcmul_(wt, shifted[:, :3])
            weight += wt
    return total / weight


def _toon(frames: torch.Tensor, levels: int) -> torch.Tensor:
    """A cartoon rendering of `(N, 3, H, W)`, after Winnemoeller et al. 2006: two bilateral passes (edge-preserving
    smoothing), grey level banded into `levels` flat tones with the hue kept, and dark lines inked on the strongest
    10% of edges of each frame."""
    radius = max(2, max(frames.shape[-2:]) // 128)  # 2 pixels at 256, 4 at 512
    smooth = _bilateral(_bilateral(frames, radius, radius), radius, radius)
    grey = torch.einsum("c,nchw->nhw", torch.tensor(LUMA), smooth)
    banded = ((grey * levels).floor().clamp(0, levels - 1) + 0.5) / levels
    toon = smooth * (banded / grey.clamp(min=1e-3))[:, None]
    padded = F.pad(grey[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # (N, H + 2, W + 2)
    gx, gy = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2], padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]  # (N, H, W)
    edges = torch.hypot(gx, gy)
    threshold = torch.quantile(edges.flatten(1), 0.9, dim=1).view(-1, 1, 1) + 1e-6
    lines = ((edges - threshold) / threshold).clamp(0, 1)
    return (toon * (1 - 0.9 * lines[:, None])).clamp(0, 1)


def style_posterize_edges(video: torch.Tensor, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The video turns into a cartoon (`_toon`, with 3 to 5 tone bands): flat cel-shaded regions and inked edges,
    the "cartoon look" reward hacking seen when fine-tuning generators. The synthetic detail loss blurs, pixelates
    or cuts bit depth per channel; it never flattens regions while sharpening and drawing edges."""
    levels = int(rng.integers(3, 6))
    a = growth(len(video), severity).view(-1, 1, 1, 1)
    out = video.clone()
    if severity > 0 and len(video) > 1:
        out[1:] = video[1:] * (1 - a[1:]) + _toon(video[1:], levels) * a[1:]
    return out


def overexposure(
    video: torch.Tensor, severity: float, rng: np.random.Generator, max_stops: float = 4.0, glow: float = 0.6
) -> torch.Tensor:
    """Exposure rises in linear light by up to `max_stops` stops (16x at 4) and the light beyond white blooms into
    its neighbours: blown, glowing highlights. The synthetic exposure drift is a gain of at most 2.5x on the
    gamma-encoded values, without bloom. The RNG is unused."""
    t, _, h, w = video.shape
    gain = 2 ** (max_stops * growth(t, severity)).view(t, 1, 1, 1)
    exposed = video**2.2 * gain  # linear light
    excess = (exposed - 1).clamp(min=0)
    small = F.interpolate(excess, size=(max(1, h // 8), max(1, w // 8)), mode="area")
    small = F.avg_pool2d(F.avg_pool2d(small, 3, 1, 1, count_include_pad=False), 3, 1, 1, count_include_pad=False)
    bloom = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    out = (exposed + glow * bloom).clamp(0, 1) ** (1 / 2.2)
    out[0] = video[0]
    return out


HELDOUT_CORRUPTIONS: dict[str, Corruption] = {
    fn.__name__: fn
    for fn in [
        channel_swap,
        gaussian_noise,
        local_patch_swap,
        jpeg_artifacts,
        mirror_drift,
        occluder,
        invert_region,
        temporal_shuffle,
        letterbox_shrink,
        style_posterize_edges,
        overexposure,
    ]
}
