"""Colour-histogram agreement between the image and each frame: catches tints, exposure drift and colour swaps."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from icreward.interface import Scorer, register_metric
from icreward.metrics.base import crop_to_aspect, resize_to


def soft_color_histogram(x: torch.Tensor, bins: int = 8, bandwidth: float = 0.5, joint: bool = True) -> torch.Tensor:
    """Differentiable colour histograms of `[N, 3, H, W]` in [0, 1]: `[N, bins**3]` (joint) or `[N, 3 * bins]`.

    Each channel value votes for the bins with centres `(k + 0.5) / bins`, with Gaussian weights of width
    `bandwidth` bin widths normalised to sum to 1, so a pixel's mass is 1; as `bandwidth` goes to 0 this becomes
    hard binning. A joint histogram sums to 1; the per-channel one sums to 1 per channel.
    """
    centres = (torch.arange(bins, dtype=x.dtype, device=x.device) + 0.5) / bins
    sigma = bandwidth / bins
    v = x.flatten(2)  # (N, 3, P)
    w = torch.softmax(-((v[..., None] - centres) ** 2) / (2 * sigma**2), dim=-1)  # (N, 3, P, bins)
    if not joint:
        return w.mean(2).flatten(1)  # (N, 3 * bins)
    rg = torch.einsum("npr,npg->nprg", w[:, 0], w[:, 1]).flatten(2)  # (N, P, bins**2)
    return torch.einsum("npq,npb->nqb", rg, w[:, 2]).flatten(1) / v.shape[-1]  # (N, bins**3)


@register_metric("color-hist")
class ColorHistogram(Scorer):
    """Histogram intersection `sum_k min(h_image, h_frame)` of soft colour histograms, averaged over frames: in
    [0, 1], 1 when every frame's colour distribution equals the image's.

    Kwargs: `bins` (per channel, default 8, so 512 joint RGB bins), `bandwidth` (Gaussian soft-binning width in bin
    widths, default 0.5), `joint` (joint RGB histogram, default True; False: three per-channel histograms with their
    intersections averaged), `size` (working resolution, default 64).
    Common size: the image, cropped to the video's aspect ratio, and the frames are each resized to `size` x `size`
    (bilinear, antialiased); histograms are normalised by pixel count, so only their content matters.
    Differentiable (the intersection's min passes gradient to the smaller bin).
    """

    name = "color-hist"
    max_side = 256

    def __init__(self, bins: int = 8, bandwidth: float = 0.5, joint: bool = True, size: int = 64):
        super().__init__()
        self.bins, self.bandwidth, self.joint, self.size = bins, bandwidth, joint, size

    def forward(self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None) -> torch.Tensor:
        b, t = video.shape[:2]
        image = resize_to(crop_to_aspect(image, *video.shape[-2:]), (self.size, self.size))
        frames = resize_to(video.flatten(0, 1), (self.size, self.size))
        h = soft_color_histogram(torch.cat([image, frames]), self.bins, self.bandwidth, self.joint)  # (B + B*T, K)
        h_image, h_frames = h[:b, None], h[b:].unflatten(0, (b, t))  # (B, 1, K), (B, T, K)
        overlap = torch.minimum(h_image, h_frames).sum(-1)  # (B, T)
        return overlap.mean(1) if self.joint else overlap.mean(1) / 3
