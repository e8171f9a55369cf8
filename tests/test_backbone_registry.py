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


def test_patch_features_are_weight_free_statistics_with_gradients():
    b = build_backbone("patch-features")
    assert sum(p.numel() for p in b.parameters()) == 0 and b.blocks() == []
    flat = torch.full((1, 3, 64, 64), 0.25)
    out = b(flat)
    assert out["patch"].shape == (1, 64, b.patch_dim) and out["cls"].shape == (1, b.dim)
    torch.testing.assert_close(out["patch"][0, :, :3], torch.full((64, 3), 0.25))  # mean colour of each patch
    assert out["patch"][0, :, 3:].abs().max() < 0.01  # no spread, no edges on a flat image
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    b(x)["patch"].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_patch_features_see_orientation():
    b = build_backbone("patch-features")
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::4, :] = 1.0  # horizontal stripes: vertical gradients
    hist = b(stripes)["cls"][0, 6:14]
    assert hist.argmax() == 4  # the bin at pi/2 (gradient along y)


def test_patch_features_by_chunks_are_one_pass_bit_for_bit():
    """The encoder runs big batches a chunk at a time (for the cache); the tokens, and their memory layout, which
    decides how the evidence distances round, are those of one pass over the whole batch."""
    backbone = build_backbone("patch-features", image_size=32, patch_size=8, structure=4)  # chunks of 256 images
    x = torch.rand(2 * 256 + 9, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # chunks are taken on one intra-op thread
    try:
        chunked, whole = backbone(x), backbone._features(x)
    finally:
        torch.set_num_threads(threads)
    for name in ("cls", "patch"):
        assert torch.equal(chunked[name], whole[name]) and chunked[name].stride() == whole[name].stride()
