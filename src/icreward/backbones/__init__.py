"""Backbones picked by string: `build_backbone("tiny-vit")`, `build_backbone("hf:facebook/dinov2-small")`.

Every backbone takes a preprocessed batch `[B, 3, H, W]` (see `backbone.preprocess_config`) and returns named
tokens `{"cls": [B, D], "patch": [B, N, D]}`.
"""

from __future__ import annotations

from icreward.backbones.registry import (
    _BACKBONES,
    _PREFIXES,
    Backbone,
    BackboneFactory,
    TokenGroup,
    register_backbone,
    register_backbone_prefix,
)
from icreward.errors import BackboneError

__all__ = [
    "Backbone",
    "BackboneFactory",
    "TokenGroup",
    "build_backbone",
    "list_backbones",
    "register_backbone",
    "register_backbone_prefix",
]


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
