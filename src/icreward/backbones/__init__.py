"""Backbones picked by string: `build_backbone("tiny-vit")`, `build_backbone("hf:facebook/dinov2-small")`.

Every backbone takes a preprocessed batch `[B, 3, H, W]` (see `backbone.preprocess_config`) and returns named
tokens `{"cls": [B, D], "patch": [B, N, D]}`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from icreward.errors import BackboneError
from icreward.transforms import PreprocessConfig

BackboneFactory = Callable[..., "Backbone"]
_BACKBONES: dict[str, BackboneFactory] = {}
_PREFIXES: dict[str, Callable[..., Backbone]] = {}


class Backbone(nn.Module):
    """A vision encoder returning named tokens.

    Subclasses set `dim` (token width), `preprocess_config` (how `[0,1]` pixels are turned into its input) and
    `spec` (the string that rebuilds it), and implement `forward` and `blocks`.
    """

    dim: int
    preprocess_config: PreprocessConfig
    spec: str

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """The transformer blocks in input-to-output order (for last-k unfreezing)."""
        raise NotImplementedError


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register a factory under an exact name (tiny test variants live here too, timm-style)."""

    def wrap(factory: BackboneFactory) -> BackboneFactory:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = factory
        return factory

    return wrap


def register_backbone_prefix(prefix: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a factory for `<prefix>:<argument>` names; it is called as `factory(argument, **kwargs)`."""

    def wrap(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _PREFIXES[prefix] = factory
        return factory

    return wrap


def _load_builtin() -> None:
    from icreward.backbones import patch_features, tiny_vit  # noqa: F401

    try:
        from icreward.backbones import hf  # noqa: F401
    except ImportError:  # the hf: path is optional until its module exists / transformers is importable
        pass


def list_backbones() -> list[str]:
    _load_builtin()
    return sorted(_BACKBONES) + [f"{p}:<id>" for p in sorted(_PREFIXES)]


def build_backbone(spec: str, **kwargs) -> Backbone:
    """Build the backbone named `spec` (an exact registered name or `<prefix>:<argument>`)."""
    _load_builtin()
    if spec in _BACKBONES:
        model = _BACKBONES[spec](**kwargs)
    elif ":" in spec and spec.split(":", 1)[0] in _PREFIXES:
        prefix, arg = spec.split(":", 1)
        model = _PREFIXES[prefix](arg, **kwargs)
    else:
        raise BackboneError(f"unknown backbone {spec!r}; known: {', '.join(list_backbones())}")
    model.spec = spec
    return model
