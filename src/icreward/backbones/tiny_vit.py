"""A small ViT, randomly initialised: for tests and as the trunk of the project's own small encoders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from icreward.backbones.registry import Backbone, register_backbone
from icreward.transforms import PreprocessConfig


@dataclass
class TinyViTConfig:
    image_size: int = 64  # input side after preprocessing (square)
    patch_size: int = 8  # side of a patch; image_size must be a multiple
    dim: int = 64  # token width
    depth: int = 2  # number of transformer blocks
    heads: int = 4  # attention heads per block
    mlp_ratio: float = 2.0  # hidden width of each block's MLP, relative to dim


class TinyViT(Backbone):
    def __init__(self, config: TinyViTConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        self.config = config
        self.dim = config.dim
        self.preprocess_config = PreprocessConfig(resize=config.image_size, crop=config.image_size)
        n = (config.image_size // config.patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, config.dim, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, config.dim) * 0.02)
        layer = dict(
            d_model=config.dim,
            nhead=config.heads,
            dim_feedforward=int(config.dim * config.mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(**layer) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        x = x + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return {"cls": x[:, 0], "patch": x[:, 1:]}

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)


@register_backbone("tiny-vit")
def tiny_vit(**kwargs) -> TinyViT:
    """Random-init tiny ViT (64x64 input, 8x8 patches, 64-d, 2 blocks); kwargs override TinyViTConfig fields."""
    return TinyViT(TinyViTConfig(**kwargs))
