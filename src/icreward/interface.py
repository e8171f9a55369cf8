"""The one interface every reward shares: handcrafted metrics, the MLP baseline and IC-Reward alike, and the registry
of handcrafted metrics.

`scorer(image [B,3,H,W] in [0,1], video [B,T,3,H,W] in [0,1], prompt) -> [B]`, higher = more consistent.
A leaf module: `icreward.metrics` and `icreward.models` import it; it imports neither (`icreward.loading` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

ScorerFactory = Callable[..., "Scorer"]
_METRICS: dict[str, ScorerFactory] = {}


class Scorer(nn.Module):
    """Base class of all rewards.

    Subclasses implement `forward`. `num_frames` is how many frames are sampled from a video file, and `max_side`
    caps the longer side frames are decoded at (memory stays at T frames of that size, whatever the source).
    """

    name: str = "scorer"
    num_frames: int = 16
    max_side: int | None = 512
    needs_weights: bool = False  # True where the scorer loads pretrained weights (not available offline)

    def forward(
        self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rewards_for_image(
        self, image: torch.Tensor, videos: torch.Tensor, prompt: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Rewards `[B]` of B candidate `videos [B,T,3,H,W]` of one `image [3,H,W]` (best-of-N).

        Here the image is broadcast to every video; learned models override this to encode it once.
        """
        return self(image.expand(videos.shape[0], *image.shape), videos, prompt)  # (B, 3, H, W) view, no copy

    @torch.no_grad()
    def score(
        self, image: str | Path | torch.Tensor, video: str | Path | torch.Tensor, prompt: str | None = None
    ) -> float:
        """Reward of one (image, video) pair given as files or as `[3,H,W]` / `[T,3,H,W]` tensors in [0, 1]."""
        from icreward.media import load_image, load_video

        if not isinstance(image, torch.Tensor):
            image = load_image(image, max_side=self.max_side)
        if not isinstance(video, torch.Tensor):
            video = load_video(video, num_frames=self.num_frames, max_side=self.max_side)
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        out = self(image[None].to(device), video[None].to(device), None if prompt is None else [prompt])
        return float(out[0])


def register_metric(name: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register a handcrafted metric factory under `metric:<name>`."""

    def wrap(factory: ScorerFactory) -> ScorerFactory:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        _METRICS[name] = factory
        return factory

    return wrap


def metric_factory(name: str) -> ScorerFactory | None:
    """The factory registered under `metric:<name>`, or None (metrics register when `icreward.metrics` is imported)."""
    return _METRICS.get(name)


def registered_metrics() -> dict[str, ScorerFactory]:
    """Every registered metric factory by name (after `icreward.metrics` has been imported)."""
    return dict(_METRICS)
