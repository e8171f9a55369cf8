"""The fused bf16 CPU layers of `hf:` ViT and DINOv2 backbones (`icreward.backbones.fused_vit`) against
transformers' own forward, on tiny random models saved into tmp_path."""

import copy

import pytest
import torch
import transformers as T

from icreward.backbones import build_backbone, fused_vit
from icreward.backbones.fused_vit import FusedViT, fused_kernels_available

pytestmark = pytest.mark.skipif(not fused_kernels_available(), reason="no oneDNN bf16 linear on this CPU")

TINY = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96, image_size=32)
TINY["patch_size"] = 8
FAMILIES = {
    "vit": lambda: T.ViTModel(T.ViTConfig(**TINY, qkv_bias=False), add_pooling_layer=False),
    "dinov2": lambda: T.Dinov2Model(T.Dinov2Config(**TINY)),
    "dinov2_with_registers": lambda: T.Dinov2WithRegistersModel(
        T.Dinov2WithRegistersConfig(**TINY, num_register_tokens=2)
    ),
}


def saved(family, path):
    """A tiny random model of `family` saved to `path`, with layer scales that are not all ones."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.uniform_(0.2, 1.5)
    model.save_pretrained(path)
    return path


@pytest.fixture
def x():
    return torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the fused layers ran."""
    calls = []
    original = FusedViT.__call__
    monkeypatch.setattr(FusedViT, "__call__", lambda self, px: calls.append(px.shape[0]) or original(self, px))
    return calls


def tokens(backbone, x, autocast=False):
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = backbone(x)
    return torch.cat([out["cls"][:, None], out["patch"]], 1).float()  # (B, 1 + N, D)


def error(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("precision", ["bf16 weights", "bf16 autocast"])
def test_fused_layers_are_as_close_to_float32_as_transformers_bf16(tmp_path, x, fused_calls, family, precision):
    path = saved(family, tmp_path)
    reference = tokens(build_backbone(f"hf:{path}"), x)  # float32, transformers' own
    dtype = "bfloat16" if precision == "bf16 weights" else None
    autocast = precision == "bf16 autocast"
    fused = tokens(build_backbone(f"hf:{path}", dtype=dtype), x, autocast)
    assert fused_calls == [5]
    plain = tokens(build_backbone(f"hf:{path}", dtype=dtype, fused=False), x, autocast)
    assert fused_calls == [5]
    assert error(fused, reference) <= 1.5 * error(plain, reference) + 1e-3
    assert error(fused, plain) < 0.1 * reference.abs().max().item()


def test_float32_gradients_hooks_and_unsupported_models_keep_transformers_forward(tmp_path, x, fused_calls):
    path = saved("dinov2", tmp_path / "dinov2")
    b32 = build_backbone(f"hf:{path}")
    model_out = b32.model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(tokens(b32, x), model_out, rtol=0, atol=0)  # float32: bit for bit
    b16 = build_backbone(f"hf:{path}", dtype="bfloat16")
    out = b16(x)  # gradients on
    assert out["cls"].requires_grad and fused_calls == []
    handle = b16.model.layernorm.register_forward_hook(lambda *args: None)
    tokens(b16, x)
    assert fused_calls == []
    handle.remove()
    tokens(b16, x)
    assert fused_calls == [5]
    assert build_backbone(f"hf:{path}", fused=False).fused_unsupported == "turned off (fused=False)"
    clip = tmp_path / "clip"
    T.CLIPVisionModel(T.CLIPVisionConfig(**TINY)).save_pretrained(clip)
    assert "model type clip_vision_model" in build_backbone(f"hf:{clip}", dtype="bfloat16").fused_unsupported


def test_packed_weights_follow_parameter_changes_and_copies(tmp_path, x, fused_calls):
    b = build_backbone(f"hf:{saved('vit', tmp_path)}", dtype="bfloat16")
    before = tokens(b, x)
    with torch.no_grad():
        b.model.layers[1].mlp.fc1.weight.mul_(-2.0)  # in place: an optimizer step
    after = tokens(b, x)
    plain = tokens(build_backbone(f"hf:{tmp_path}", dtype="bfloat16", fused=False), x)
    assert error(before, plain) < 0.05 * plain.abs().max().item()  # the saved weights
    assert error(after, before) > 0.1
    b.fused_unsupported = "off"
    assert error(after, tokens(b, x)) < 0.05 * plain.abs().max().item()
    b.fused_unsupported = None
    copied = copy.deepcopy(b)
    torch.testing.assert_close(tokens(copied, x), after, rtol=0, atol=0)
    assert len(fused_calls) == 3


def test_chunks_give_what_one_pass_gives(tmp_path, x):
    model = build_backbone(f"hf:{saved('dinov2', tmp_path)}", dtype="bfloat16").model
    per_image = 1 + (32 // 8) ** 2
    with torch.no_grad():
        whole = FusedViT(model, chunk_tokens=10**6)(x).float()
        by_twos = FusedViT(model, chunk_tokens=2 * per_image)(x).float()
    torch.testing.assert_close(by_twos, whole, rtol=0.02, atol=0.02)
    assert fused_vit.unsupported_reason(model, model.config) is None
