"""`patch-features`: a weight-free encoder of classical per-patch statistics, the offline stand-in for a ViT.

No pretrained vision encoder can be had offline, and a randomly initialised ViT gives features a small data set
cannot teach much. This encoder has no parameters and describes each patch by what consistency judgements look
at: its colour (mean and spread per channel), its edges (a magnitude-weighted histogram of gradient orientations)
and its texture energy; with `structure: s`, also the layout of light and dark inside the patch (its grey levels
on an s x s grid, centred and normalised), which the statistics pool away: a different object of the same colours
and textures changes it. It returns the same named tokens as every backbone, so the learned heads on top of it are
the same code that runs on DINOv2 for users with hub access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icreward.backbones.registry import Backbone, register_backbone
from icreward.transforms import PreprocessConfig

LAYOUT_FLOOR = 0.02  # grey-level spread per layout cell below which a patch counts as flat
CHUNK_PIXELS = 2**18  # pixels per pass (16 images of 128 x 128): each per-pixel map of a chunk stays in the CPU's cache


@dataclass
class PatchFeaturesConfig:
    image_size: int = 64  # input side after preprocessing (square)
    patch_size: int = 8  # side of a patch; image_size must be a multiple
    orientations: int = 8  # bins of the gradient-orientation histogram (over 0..pi, unsigned)
    structure: int = 0  # side of the per-patch grey layout grid (0: none); must divide patch_size


class PatchFeatures(Backbone):
    """Per-patch `[mean RGB, std RGB, orientation histogram, gradient energy, (grey layout)]`; cls = the same over
    the image."""

    def __init__(self, config: PatchFeaturesConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if config.structure < 0 or (config.structure and config.patch_size % config.structure):
            raise ValueError(f"structure must be 0 or divide patch_size {config.patch_size}, got {config.structure}")
        self.config = config
        layout = config.structure**2
        self.dim = self.patch_dim = 3 + 3 + config.orientations + 1 + layout
        # Channel groups of a token, each compared as a whole by the consistency evidence (icreward.models.evidence).
        o = config.orientations
        self.token_groups = [
            ("colour", 0, 3, "l2"),
            ("contrast", 3, 6, "l2"),
            ("edges", 6, 6 + o, "l2"),
            ("energy", 6 + o, 7 + o, "l2"),
        ]
        if layout:
            self.token_groups = [*self.token_groups, ("structure", 7 + o, 7 + o + layout, "l2")]
        # Pixels stay in [0, 1]: the statistics are read on the raw colours, so no mean/std normalisation.
        self.preprocess_config = PreprocessConfig(
            resize=config.image_size, crop=config.image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
        self.register_buffer("kernels", torch.stack([sobel, sobel.T])[:, None], persistent=False)  # (2, 1, 3, 3)
        angles = math.pi * torch.arange(config.orientations) / config.orientations
        self.register_buffer("bin_dirs", torch.stack([angles.cos(), angles.sin()], -1), persistent=False)  # (O, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`x [B,3,H,W]` -> `{"cls": [B,D], "patch": [B,N,D]}`; on one intra-op thread, a chunk of images at a time.

        Every feature is per image, so chunks give the values of one pass, bit for bit (chunks are at least two
        images: a batch of one can round differently); they keep the per-pixel intermediates (`[chunk, O, H, W]`)
        in cache: on one thread, a batch of 136 images at 128 px took 350 ms instead of 720. With several threads
        each op is split over them already, and the chunks' many short parallel regions cost more than they save
        where the cores are shared (0.6x, measured at a load average of 3 on 2 cores), so the batch goes in one pass.
        """
        per_chunk = max(2, CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))
        if x.shape[0] < 2 * per_chunk or torch.get_num_threads() > 1:
            return self._features(x)
        parts = [self._features(chunk) for chunk in x.tensor_split(x.shape[0] // per_chunk)]  # each >= per_chunk
        # patch in the memory layout of one pass, (B, D, N) transposed: what reads it rounds alike
        patch = torch.cat([p["patch"].transpose(1, 2) for p in parts]).transpose(1, 2)  # (B, N, D)
        return {"cls": torch.cat([p["cls"] for p in parts]), "patch": patch}

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        p = self.config.patch_size
        grey = x.mean(1, keepdim=True)  # (B, 1, H, W)
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.kernels)  # (B, 2, H, W): d/dx, d/dy
        magnitude = (g.square().sum(1, keepdim=True) + 1e-6).sqrt()  # (B, 1, H, W)
        # Unsigned orientation votes by a smooth kernel (cos^2 of the angle to each bin): no atan2, smooth gradients.
        unit = g / magnitude  # (B, 2, H, W)
        cos = torch.einsum("bchw,oc->bohw", unit, self.bin_dirs)  # (B, O, H, W)
        cos2 = cos.square()  # (B, O, H, W)
        cos4 = cos2 * cos2  # products, not pow(): pow with exponent 4 takes the slow general path
        votes = magnitude * (cos4 * cos4)  # (B, O, H, W): cos^8
        pool = nn.functional.avg_pool2d
        mean = pool(x, p)  # (B, 3, H/p, W/p)
        std = (pool(x.square(), p) - mean.square()).clamp_min(1e-6).sqrt()  # (B, 3, H/p, W/p)
        hist = pool(votes, p)  # (B, O, H/p, W/p)
        energy = pool(magnitude, p)  # (B, 1, H/p, W/p)
        parts = [mean, std, hist, energy]
        whole = [x.mean((2, 3)), x.std((2, 3)), votes.mean((2, 3)), magnitude.mean((2, 3))]  # (B, 3), (B, 3), ...
        if self.config.structure:
            s = self.config.structure
            parts.append(self._layout(pool(grey, p // s), s))  # (B, s*s, H/p, W/p)
            whole.append(self._layout(F.adaptive_avg_pool2d(grey, s), s).flatten(1))  # (B, s*s): the frame's layout
        grid = torch.cat(parts, 1)  # (B, D, H/p, W/p)
        patch = grid.flatten(2).transpose(1, 2)  # (B, N, D)
        return {"cls": torch.cat(whole, 1), "patch": patch}  # cls: the same statistics over the whole image

    @staticmethod
    def _layout(cells: torch.Tensor, s: int) -> torch.Tensor:
        """Grey levels `(B, 1, h*s, w*s)` on an s x s grid per patch -> `(B, s*s, h, w)`: each patch's grid minus its
        mean, over its norm plus `LAYOUT_FLOOR` (so a flat patch reads as no layout, not as amplified noise)."""
        b, _, hs, ws = cells.shape
        grid = cells.view(b, hs // s, s, ws // s, s).permute(0, 2, 4, 1, 3).reshape(b, s * s, hs // s, ws // s)
        grid = grid - grid.mean(1, keepdim=True)
        return grid / (grid.square().sum(1, keepdim=True).sqrt() + LAYOUT_FLOOR * s)

    def blocks(self) -> list[nn.Module]:
        return []


@register_backbone("patch-features")
def patch_features(**kwargs) -> PatchFeatures:
    """Weight-free per-patch colour, edge and texture statistics (64x64 input, 8x8 patches, 15-d tokens; with
    `structure=s`, s*s more channels of grey-level layout)."""
    return PatchFeatures(PatchFeaturesConfig(**kwargs))
