"""The backbone base class and the registry that backbone modules add themselves to (a leaf: imports no backbone).

Every backbone takes a preprocessed batch `[B, 3, H, W]` (see `backbone.preprocess_config`) and returns named
tokens `{"cls": [B, D], "patch": [B, N, D]}`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from icreward.transforms import PreprocessConfig

BackboneFactory = Callable[..., "Backbone"]
TokenGroup = tuple[str, int, int, str]  # (name, first channel, end channel, "l2" | "cosine") of the patch tokens
_BACKBONES: dict[str, BackboneFactory] = {}
_PREFIXES: dict[str, Callable[..., Backbone]] = {}


class Backbone(nn.Module):
    """A vision encoder returning named tokens.

    Subclasses set `dim` (width of the `cls` token), `preprocess_config` (how `[0,1]` pixels are turned into its
    input) and `spec` (the string that rebuilds it), and implement `forward` and `blocks`. They may set `patch_dim`
    (width of the `patch` tokens, where it differs from `dim`, as in CLIP's projected embedding) and `token_groups`
    (channel groups of the patch tokens that mean different things, each compared on its own by the evidence
    branch of IC-Reward; by default the whole token, compared by cosine).
    """

    dim: int
    preprocess_config: PreprocessConfig
    spec: str
    _patch_dim: int | None = None
    _token_groups: list[TokenGroup] | None = None

    @property
    def patch_dim(self) -> int:
        """Width of the `patch` tokens (`dim` unless the subclass says otherwise)."""
        return self.dim if self._patch_dim is None else self._patch_dim

    @patch_dim.setter
    def patch_dim(self, value: int) -> None:
        self._patch_dim = int(value)

    @property
    def token_groups(self) -> list[TokenGroup]:
        """Channel groups of the patch tokens: `(name, start, end, "l2" | "cosine")`; default one cosine group."""
        if self._token_groups is None:
            return [("token", 0, self.patch_dim, "cosine")]
        return list(self._token_groups)

    @token_groups.setter
    def token_groups(self, groups: list[TokenGroup]) -> None:
        self._token_groups = [tuple(g) for g in groups]

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
