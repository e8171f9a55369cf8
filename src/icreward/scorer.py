"""The one interface every reward shares: handcrafted metrics, the MLP baseline and IC-Reward alike.

`scorer(image [B,3,H,W] in [0,1], video [B,T,3,H,W] in [0,1], prompt) -> [B]`, higher = more consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from icreward.errors import UnknownModelError

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


def list_metrics(offline_only: bool = False) -> list[str]:
    """Names of the registered metrics; `offline_only` keeps those that need no pretrained weights.

    Factories are registered as Scorer subclasses, so `needs_weights` is read off the class.
    """
    import icreward.metrics  # noqa: F401  (registers the metrics)

    return sorted(n for n, f in _METRICS.items() if not (offline_only and getattr(f, "needs_weights", False)))


DEFAULT_MODEL = "default"


def default_checkpoint() -> Path:
    """The folder of the checkpoint shipped inside the package (what `load("default")` loads)."""
    return Path(__file__).parent / "default_model"


def load(name: str = DEFAULT_MODEL, **kwargs) -> Scorer:
    """Load a scorer by name: `default` for the shipped model, `metric:<name>` for a handcrafted metric, else a
    checkpoint folder or hub id."""
    if name == DEFAULT_MODEL:  # a folder named "default" in the working directory is `./default`
        name = str(default_checkpoint())
    if name.startswith("metric:"):
        metric = name.split(":", 1)[1]
        if metric not in list_metrics():
            raise UnknownModelError(f"unknown metric {metric!r}; known: {', '.join(list_metrics())}")
        return _METRICS[metric](**kwargs).eval()
    from icreward.models import load_checkpoint

    if not Path(name).exists() and "/" not in name:
        raise UnknownModelError(
            f"cannot load model {name!r}: no such checkpoint folder; give `default`, a checkpoint folder, a hub id "
            f"(owner/name) or metric:<name> ({', '.join(list_metrics())})"
        )
    return load_checkpoint(name, **kwargs).eval()
