"""The VBench I2V formula on weight-free embeddings: raw pixels and a HOG-like descriptor. Both run offline."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from icreward.interface import register_metric
from icreward.metrics.base import Embedder, resize_to
from icreward.metrics.vbench import VBenchI2V
from icreward.rules import LUMA


class PixelEmbedder(Embedder):
    """A `size` x `size` thumbnail, mean-centred per image, flattened and L2-normalised: `[N, 3 * size**2]`.

    The cosine of two such vectors is the Pearson correlation of the thumbnails' pixel values: it sees layout and
    colour, and ignores a uniform brightness offset.
    """

    def __init__(self, size: int = 32):
        super().__init__()
        self.size = size

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(x, (self.size, self.size))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)  # (N, 3 * size * size)
        return F.normalize(v - v.mean(1, keepdim=True), dim=1)


class HOGEmbedder(Embedder):
    """A HOG-like descriptor (Dalal & Triggs 2005) in torch, differentiable: `[N, (cells - 1)**2 * 4 * bins]`.

    On the grey (Rec. 601) thumbnail of `size` x `size`: central-difference gradients; each pixel votes its gradient
    magnitude into `bins` unsigned orientation bins over [0, pi), spread by a von Mises kernel whose weight halves
    half a bin from a bin's centre (a smooth stand-in for HOG's linear interpolation between neighbouring bins,
    without atan2, whose gradient is undefined on flat regions); votes are averaged over `cell` x `cell` cells;
    overlapping 2x2-cell blocks are L2-Hys normalised (L2, clipped at 0.2, L2 again).
    """

    def __init__(self, size: int = 64, cell: int = 8, bins: int = 9, eps: float = 1e-3):
        super().__init__()
        if size % cell or size // cell < 2:
            raise ValueError(f"size ({size}) must be a multiple of cell ({cell}) with at least 2 cells a side")
        self.size, self.cell, self.bins, self.eps = size, cell, bins, eps
        centres = (torch.arange(bins) + 0.5) * math.pi / bins
        self.register_buffer("doubled_centres", torch.stack([torch.cos(2 * centres), torch.sin(2 * centres)]), False)
        self.concentration = math.log(2) / (1 - math.cos(math.pi / bins))  # weight 1/2 at half a bin

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(x, (self.size, self.size))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        grey = F.pad((x * luma).sum(1, keepdim=True), (1, 1, 1, 1), mode="replicate")  # (N, 1, S + 2, S + 2)
        gx = grey[..., 1:-1, 2:] - grey[..., 1:-1, :-2]  # (N, 1, S, S)
        gy = grey[..., 2:, 1:-1] - grey[..., :-2, 1:-1]
        sq = gx**2 + gy**2
        magnitude = torch.sqrt(sq + self.eps**2)
        doubled = torch.cat([gx**2 - gy**2, 2 * gx * gy], dim=1) / (sq + self.eps**2)  # (N, 2, S, S): cos, sin 2θ
        cos_to_centre = torch.einsum("nchw,ck->nkhw", doubled, self.doubled_centres.to(x.dtype))  # (N, bins, S, S)
        votes = magnitude * torch.softmax(self.concentration * cos_to_centre, dim=1)
        cells = F.avg_pool2d(votes, self.cell)  # (N, bins, C, C)
        blocks = torch.cat(  # (N, 4 * bins, C - 1, C - 1): each 2x2-cell block
            [cells[..., :-1, :-1], cells[..., 1:, :-1], cells[..., :-1, 1:], cells[..., 1:, 1:]], dim=1
        )
        blocks = F.normalize(blocks, dim=1, eps=self.eps).clamp_max(0.2)
        return F.normalize(blocks, dim=1, eps=self.eps).flatten(1)


@register_metric("vbench-i2v-pixel")
class VBenchI2VPixel(VBenchI2V):
    """The VBench I2V formula (see vbench-i2v-subject) on `PixelEmbedder` thumbnails; weight-free, differentiable.

    Kwargs: `size` (thumbnail side, default 32), `weights` (default VBench++'s (0.4, 0.3, 0.3)).
    Common size: the image, cropped to the video's aspect ratio, and the frames are each resized to
    `size` x `size` (bilinear, antialiased).
    """

    name = "vbench-i2v-pixel"
    max_side = 256

    def __init__(self, size: int = 32, weights: str | Sequence[float] = "vbench"):
        super().__init__(PixelEmbedder(size), weights)


@register_metric("vbench-i2v-hog")
class VBenchI2VHOG(VBenchI2V):
    """The VBench I2V formula on `HOGEmbedder` descriptors (edge layout, insensitive to colour and exposure);
    weight-free, differentiable.

    Kwargs: `size` (default 64), `cell` (pixels a side, default 8), `bins` (orientations, default 9), `weights`.
    Common size: the image, cropped to the video's aspect ratio, and the frames are each resized to
    `size` x `size` (bilinear, antialiased), so the descriptors have the same cells.
    """

    name = "vbench-i2v-hog"
    max_side = 256

    def __init__(self, size: int = 64, cell: int = 8, bins: int = 9, weights: str | Sequence[float] = "vbench"):
        super().__init__(HOGEmbedder(size, cell, bins), weights)
