"""What the handcrafted metrics share: framing the image like the video, and encoding image and frames together.
Their inputs are checked where every scorer's are, in `Scorer.__call__` (`icreward.interface.check_reward_inputs`).

Common-size rule, for every metric: the image is first centre-cropped to the video's aspect ratio (what I2V
pipelines do to their conditioning image; a no-op when the ratios already agree), then each metric brings image and
frames to one size (its class docstring says how).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from icreward.backbones import Backbone, build_backbone
from icreward.transforms import PreprocessConfig, preprocess


def crop_to_aspect(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop `(..., H, W)` to the aspect ratio `height : width` (keeping as many pixels as possible)."""
    h, w = image.shape[-2:]
    if h * width > w * height:  # taller than the target: crop rows
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        return image[..., top : top + new_h, :]
    if h * width < w * height:  # wider than the target: crop columns
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return image[..., left : left + new_w]
    return image


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize `(..., 3, H, W)` to `size` (bilinear, antialiased when shrinking); differentiable."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead, c = x.shape[:-3], x.shape[-3]
    flat = x.reshape(-1, c, *x.shape[-2:])  # (B*, 3, H, W)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, c, *size)


def match_image_to_frames(image: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """The image `[B,3,H,W]` cropped to the video's aspect ratio and resized to its frame size `[B,3,h,w]`."""
    h, w = video.shape[-2:]
    return resize_to(crop_to_aspect(image, h, w), (h, w))


class Embedder(nn.Module):
    """Turns images into vectors in two steps, so that the image and the frames share one encoder batch.

    `prepare` maps `[N, 3, H, W]` in [0, 1] of any size to the embedder's common input size; `encode` maps that to
    `[N, D]`.
    """

    def prepare(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def embed_image_and_frames(
    embedder: Embedder, image: torch.Tensor, video: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of the image `[B, D]` and of every frame `[B, T, D]`, encoded in one batch of B + B*T inputs."""
    b, t = video.shape[:2]
    image = embedder.prepare(crop_to_aspect(image, *video.shape[-2:]))  # (B, 3, h, w)
    frames = embedder.prepare(video.flatten(0, 1))  # (B*T, 3, h, w)
    if image.shape[1:] == frames.shape[1:]:
        emb = embedder.encode(torch.cat([image, frames]))  # (B + B*T, D)
        image_emb, frame_emb = emb[:b], emb[b:]
    else:  # a preprocessing without a crop can leave a one-pixel difference after rounding
        image_emb, frame_emb = embedder.encode(image), embedder.encode(frames)
    return image_emb, frame_emb.unflatten(0, (b, t))  # (B, D), (B, T, D)


class BackboneEmbedder(Embedder):
    """A frozen backbone's `cls` embedding of inputs preprocessed by `preprocess_config` (default: the backbone's).

    The backbone's weights get no gradient, but gradients flow through it to the pixels.
    """

    def __init__(
        self,
        backbone: str | Backbone,
        preprocess_config: PreprocessConfig | dict | None = None,
        backbone_kwargs: dict | None = None,
    ):
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, **(backbone_kwargs or {}))
        self.backbone = backbone.eval().requires_grad_(False)
        if isinstance(preprocess_config, dict):
            preprocess_config = PreprocessConfig.from_dict(preprocess_config)
        self.preprocess_config = preprocess_config or backbone.preprocess_config

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return preprocess(x, self.preprocess_config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)["cls"]

    def train(self, mode: bool = True) -> BackboneEmbedder:
        super().train(mode)
        self.backbone.eval()  # a metric's encoder never runs dropout, whatever mode the scorer is put in
        return self
