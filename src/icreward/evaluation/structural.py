"""Structural corruptions for the real-video robustness check: content moves or is replaced while the colours stay.

A reward that reads only colour statistics (a histogram, per-patch means pooled over the frame) cannot see these: each
keeps the frame's per-channel histogram exactly or nearly (`content_roll`, `block_scramble` and
`histmatched_transplant` exactly, `region_rotate` up to float rounding at 180 degrees and up to interpolation and its
rim at other angles).
They are written for the check alone: the training engine (`icreward.synth`) never makes them, so they measure
whether a reward sees layout and content rather than palette.

The contract is that of `icreward.evaluation.corruptions`: `fn(video [T,3,H,W] in [0,1], severity, rng)`, frame 0
unchanged, the change growing from frame 1 to `severity` at the last frame, severity 0 the identity, a larger
severity moving further for one RNG state, deterministic per RNG. `histmatched_transplant` also takes a `donor`
video (another image's video of the same shape); `DONOR_CORRUPTIONS` names the corruptions that need one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from icreward.evaluation.corruptions import Corruption, growth, pixel_grid


def _central_box(h: int, w: int, rng: np.random.Generator, cover: float) -> tuple[float, float, float, float]:
    """A box of `cover` of each side near the frame centre (jittered by up to 10% of a side): `(cy, cx, hh, hw)`,
    its centre and half sizes in pixels."""
    cy, cx = h * (0.5 + rng.uniform(-0.1, 0.1)), w * (0.5 + rng.uniform(-0.1, 0.1))
    hh, hw = min(cy, h - cy, cover * h / 2), min(cx, w - cx, cover * w / 2)
    return cy, cx, hh, hw


def block_scramble(
    video: torch.Tensor, severity: float, rng: np.random.Generator, grid: int = 4, cover: float = 0.6
) -> torch.Tensor:
    """The blocks of a central region (`cover` of each side, cut into `grid` x `grid` blocks) trade places in one
    cycle, hard-edged: a `growth` share of the blocks (in a fixed random order, so a larger severity moves a
    superset) each take another's content. The region's pixels are only permuted, so the histogram is exact; unlike
    the held-out `local_patch_swap` (a few separate pairs over the whole frame), the middle of the picture, where
    the subject usually is, becomes a puzzle."""
    t, _, h, w = video.shape
    cy, cx, hh, hw = _central_box(h, w, rng, cover)
    bh, bw = max(1, int(2 * hh) // grid), max(1, int(2 * hw) // grid)  # block size
    top, left = int(cy - grid * bh / 2), int(cx - grid * bw / 2)
    order = rng.permutation(grid * grid)
    corners = [(top + (b // grid) * bh, left + (b % grid) * bw) for b in order]
    out = video.clone()
    for i, a in enumerate(growth(t, severity).tolist()):
        moved = corners[: int(round(a * grid * grid))]
        if len(moved) < 2:
            continue
        for (y, x), (sy, sx) in zip(moved, moved[1:] + moved[:1], strict=True):
            out[i, :, y : y + bh, x : x + bw] = video[i, :, sy : sy + bh, sx : sx + bw]
    return out


def region_rotate(
    video: torch.Tensor, severity: float, rng: np.random.Generator, radius: tuple[float, float] = (0.25, 0.4)
) -> torch.Tensor:
    """A disc near the centre (radius drawn from `radius` times the shorter side) turns in place, by up to 180
    degrees at severity 1, with a rim of 1 pixel (hard edge) or a tenth of the radius (soft edge), drawn at random.
    The disc's content stays in the disc, so its colours stay; at 180 degrees about a point of the pixel grid its
    pixels are permuted (up to float rounding). The synthetic structure distortion warps smoothly and never turns a
    region over."""
    t, _, h, w = video.shape
    r = rng.uniform(*radius) * min(h, w)
    cy, cx = (round(2 * h * (0.5 + rng.uniform(-0.05, 0.05))) / 2, round(2 * w * (0.5 + rng.uniform(-0.05, 0.05))) / 2)
    rim = 1.0 if rng.integers(2) == 0 else max(1.0, 0.1 * r)
    ys, xs = pixel_grid(h, w)
    inside = ((r - ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()) / rim).clamp(0, 1)  # (H, W): 1 inside, 0 outside
    out = video.clone()
    for i, a in enumerate(growth(t, severity).tolist()):
        if a <= 0:
            continue
        cos, sin = np.cos(np.pi * a), np.sin(np.pi * a)
        sx = cx + cos * (xs - cx) + sin * (ys - cy)  # where each output pixel reads from, (H, W)
        sy = cy - sin * (xs - cx) + cos * (ys - cy)
        grid = torch.stack([2 * sx / w - 1, 2 * sy / h - 1], -1)[None].float()  # (1, H, W, 2), x then y
        turned = F.grid_sample(video[i : i + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[i] = video[i] * (1 - inside) + turned[0].clamp(0, 1) * inside
    return out


def content_roll(
    video: torch.Tensor, severity: float, rng: np.random.Generator, shift: tuple[float, float] = (0.25, 0.5)
) -> torch.Tensor:
    """The frame's content shifts cyclically (what leaves one edge comes back at the other), by up to a fraction
    drawn from `shift` of each side at severity 1, in a random direction: every pixel is kept, so the histogram is
    exact, while the layout breaks and a hard seam crosses the frame. The synthetic camera moves bring in new
    content at the edges and never wrap."""
    t, _, h, w = video.shape
    fy, fx = rng.uniform(*shift, 2) * rng.choice([-1, 1], 2)
    out = video.clone()
    for i, a in enumerate(growth(t, severity).tolist()):
        out[i] = video[i].roll((round(a * fy * h), round(a * fx * w)), dims=(-2, -1))
    return out


def _match_histogram(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`source` `(3, h, w)` with each channel's values replaced by `reference`'s `(3, h, w)` in the same rank order:
    the result has exactly the reference's per-channel histogram and the source's layout."""
    flat_src, flat_ref = source.flatten(1), reference.flatten(1)  # (3, h * w)
    ranks = flat_src.argsort(1).argsort(1)
    return flat_ref.sort(1).values.gather(1, ranks).view_as(source)


def histmatched_transplant(
    video: torch.Tensor, severity: float, rng: np.random.Generator, *, donor: torch.Tensor, cover: float = 0.6
) -> torch.Tensor:
    """A central rectangle (up to `cover` of each side at severity 1, growing from its centre) shows the same place
    of `donor` (another image's video, `(T, 3, H, W)` like `video`), frame by frame, with each channel
    histogram-matched to the pixels it replaces: the region's per-channel histogram, and so the frame's, stays
    exactly, but its content is another scene. The synthetic content replacement keeps the other content's own
    colours, and the held-out `occluder` is a flat pattern of random colours."""
    if donor.shape != video.shape:
        raise ValueError(f"donor of shape {tuple(donor.shape)} for a video of shape {tuple(video.shape)}")
    t, _, h, w = video.shape
    cy, cx, hh, hw = _central_box(h, w, rng, cover)
    out = video.clone()
    for i, a in enumerate(growth(t, severity).tolist()):
        top, bottom = round(cy - a * hh), round(cy + a * hh)
        left, right = round(cx - a * hw), round(cx + a * hw)
        if bottom > top and right > left:
            region = (slice(None), slice(top, bottom), slice(left, right))
            out[i][region] = _match_histogram(donor[i][region], video[i][region])
    return out


STRUCTURAL_CORRUPTIONS: dict[str, Corruption] = {
    fn.__name__: fn for fn in [block_scramble, region_rotate, content_roll, histmatched_transplant]
}
DONOR_CORRUPTIONS = frozenset({"histmatched_transplant"})  # called with `donor=` another image's video
