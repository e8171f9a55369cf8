import pytest
import torch

from icreward.backbones import build_backbone, list_backbones
from icreward.errors import BackboneError


def test_tiny_vit_returns_named_tokens():
    b = build_backbone("tiny-vit", depth=1)
    out = b(torch.randn(2, 3, 64, 64))
    assert out["cls"].shape == (2, b.dim) and out["patch"].shape == (2, 64, b.dim)
    assert b.spec == "tiny-vit" and len(b.blocks()) == 1


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(BackboneError, match="tiny-vit"):
        build_backbone("no-such-net")
    assert "tiny-vit" in list_backbones()
