"""`hf:` backbones, on tiny random transformers models saved into tmp_path (nothing is downloaded)."""

import json
import time

import pytest
import torch
import transformers as T

from icreward.backbones import build_backbone
from icreward.backbones.hf import preprocess_config_from_hf
from icreward.errors import BackboneError
from icreward.transforms import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32)
TINY["patch_size"] = 8
N_PATCHES = (32 // 8) ** 2


def save(model, path):
    model.eval().save_pretrained(path)
    return model


@pytest.fixture
def x():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_dinov2_tokens_preprocessing_and_blocks(tmp_path, x):
    model = save(T.Dinov2Model(T.Dinov2Config(**TINY)), tmp_path)
    processor = {
        "size": {"shortest_edge": 40},
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "resample": 3,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "rescale_factor": 1 / 255,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    b = build_backbone(f"hf:{tmp_path}")
    out = b(x)
    ref = model(pixel_values=x).last_hidden_state
    assert out["cls"].shape == (2, 32) and out["patch"].shape == (2, N_PATCHES, 32)
    torch.testing.assert_close(out["cls"], ref[:, 0])
    torch.testing.assert_close(out["patch"], ref[:, 1:])
    assert b.preprocess_config == PreprocessConfig(resize=40, crop=32, interpolation="bicubic")
    assert b.dim == b.patch_dim == 32 and len(b.blocks()) == 2 and b.spec == f"hf:{tmp_path}"


def test_dinov2_with_registers_skips_register_tokens(tmp_path, x):
    model = save(T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**TINY, num_register_tokens=4)), tmp_path)
    out = build_backbone(f"hf:{tmp_path}")(x)
    ref = model(pixel_values=x).last_hidden_state  # (B, 1 + 4 + N, D)
    assert out["patch"].shape == (2, N_PATCHES, 32)
    torch.testing.assert_close(out["cls"], ref[:, 0])
    torch.testing.assert_close(out["patch"], ref[:, 5:])


def test_vit_without_pooler_and_default_preprocessing(tmp_path, x):
    model = save(T.ViTModel(T.ViTConfig(**TINY)), tmp_path)  # saved with a pooler, which we do not need
    b = build_backbone(f"hf:{tmp_path}")
    out = b(x)
    ref = model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(out["cls"], ref[:, 0])
    torch.testing.assert_close(out["patch"], ref[:, 1:])
    cfg = b.preprocess_config
    assert (cfg.resize, cfg.crop, cfg.square_resize, cfg.interpolation) == (32, None, True, "bilinear")
    assert cfg.mean == (0.5, 0.5, 0.5) and len(b.blocks()) == 2


def test_clip_vision_without_projection(tmp_path, x):
    model = save(T.CLIPVisionModel(T.CLIPVisionConfig(**TINY)), tmp_path)
    b = build_backbone(f"hf:{tmp_path}")
    out, ref = b(x), model(pixel_values=x)
    torch.testing.assert_close(out["cls"], ref.pooler_output)
    torch.testing.assert_close(out["patch"], b.post_layernorm(ref.last_hidden_state[:, 1:]))
    assert b.dim == b.patch_dim == 32 and len(b.blocks()) == 2
    cfg = b.preprocess_config
    assert (cfg.resize, cfg.crop, cfg.square_resize, cfg.interpolation) == (32, 32, False, "bicubic")
    assert cfg.mean == tuple(T.utils.constants.OPENAI_CLIP_MEAN)


def test_clip_vision_with_projection(tmp_path, x):
    model = save(T.CLIPVisionModelWithProjection(T.CLIPVisionConfig(**TINY, projection_dim=16)), tmp_path)
    b = build_backbone(f"hf:{tmp_path}")
    out = b(x)
    torch.testing.assert_close(out["cls"], model(pixel_values=x).image_embeds)
    assert out["cls"].shape == (2, 16) and out["patch"].shape == (2, N_PATCHES, 32)
    assert b.dim == 16 and b.patch_dim == 32


def test_full_clip_checkpoint_loads_the_vision_tower(tmp_path, x):
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    model = save(T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=TINY, projection_dim=24)), tmp_path)
    b = build_backbone(f"hf:{tmp_path}")
    ref = model.get_image_features(pixel_values=x)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    torch.testing.assert_close(b(x)["cls"], ref)
    assert b.dim == 24 and len(b.blocks()) == 2


def test_siglip_uses_the_attention_pooling_head(tmp_path, x):
    model = save(T.SiglipVisionModel(T.SiglipVisionConfig(**TINY)), tmp_path)
    b = build_backbone(f"hf:{tmp_path}")
    out, ref = b(x), model(pixel_values=x)
    torch.testing.assert_close(out["cls"], ref.pooler_output)
    torch.testing.assert_close(out["patch"], ref.last_hidden_state)
    assert out["patch"].shape == (2, N_PATCHES, 32) and len(b.blocks()) == 2
    cfg = b.preprocess_config
    assert (cfg.resize, cfg.square_resize, cfg.interpolation, cfg.mean) == (32, True, "bicubic", (0.5, 0.5, 0.5))


def test_dtype_and_gradients(tmp_path, x):
    save(T.Dinov2Model(T.Dinov2Config(**TINY)), tmp_path)
    b = build_backbone(f"hf:{tmp_path}", dtype="bfloat16")
    assert next(b.parameters()).dtype == torch.bfloat16
    x = x.requires_grad_()
    out = b(x)
    assert out["cls"].dtype == torch.float32
    out["patch"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unreachable_hub_id_names_the_id_and_the_local_folder_way(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(BackboneError, match="nobody-here/no-such-model") as err:
        build_backbone("hf:nobody-here/no-such-model")
    assert "local folder" in str(err.value) and "hf:/path/to/folder" in str(err.value)
    assert time.perf_counter() - start < 10


def test_missing_folder_and_unsupported_type(tmp_path):
    with pytest.raises(BackboneError, match="no such folder"):
        build_backbone(f"hf:{tmp_path / 'absent'}")
    T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match="not supported"):
        build_backbone(f"hf:{tmp_path}")


def test_checkpoint_lacking_weights_is_refused(tmp_path):
    save(T.CLIPVisionModel(T.CLIPVisionConfig(**TINY)), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["CLIPVisionModelWithProjection"]  # claims a projection it does not have
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneError, match="visual_projection"):
        build_backbone(f"hf:{tmp_path}")


def test_preprocessor_json_translation():
    old_vit = {"size": 224, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    cfg = preprocess_config_from_hf(old_vit, default_to_square=True)
    assert (cfg.resize, cfg.crop, cfg.square_resize, cfg.interpolation) == (224, None, True, "bilinear")
    assert preprocess_config_from_hf(old_vit).square_resize is False
    raw = preprocess_config_from_hf({"do_rescale": False, "image_mean": [127.5] * 3, "image_std": [127.5] * 3})
    assert raw.mean == pytest.approx((0.5,) * 3) and raw.std == pytest.approx((0.5,) * 3)
    assert preprocess_config_from_hf({"resample": "bilinear"}).interpolation == "bilinear"
    plain = preprocess_config_from_hf({"do_normalize": False, "do_resize": False})
    assert plain.resize is None and plain.mean == (0.0, 0.0, 0.0) and plain.std == (1.0, 1.0, 1.0)
    with pytest.raises(BackboneError, match="unsupported resize"):
        preprocess_config_from_hf({"size": {"height": 224, "width": 320}})


def test_dreamsim_without_the_package_says_how_to_install():
    try:
        import dreamsim  # noqa: F401
    except ImportError:
        with pytest.raises(BackboneError, match="pip install dreamsim"):
            build_backbone("dreamsim")
    else:
        pytest.skip("dreamsim is installed; its weights would be downloaded")


def test_dreamsim_backbone_wraps_the_package_embedding(monkeypatch):
    import sys
    import types

    class FakeDreamSim(torch.nn.Module):  # stands in for the downloaded model: embed [B,3,224,224] -> [B, 5]
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 5)

        def embed(self, x):
            return self.proj(x.mean(dim=(2, 3)))

    calls = {}

    def dreamsim(pretrained, device, cache_dir, dreamsim_type):
        calls.update(pretrained=pretrained, cache_dir=cache_dir, dreamsim_type=dreamsim_type)
        return FakeDreamSim(), None

    monkeypatch.setitem(sys.modules, "dreamsim", types.SimpleNamespace(dreamsim=dreamsim))
    b = build_backbone("dreamsim", cache_dir="/tmp/ds")
    out = b(torch.rand(2, 3, 224, 224))
    assert set(out) == {"cls"} and out["cls"].shape == (2, 5) and b.dim == 5 and b.blocks() == []
    assert calls == {"pretrained": True, "cache_dir": "/tmp/ds", "dreamsim_type": "ensemble"}
    cfg = b.preprocess_config
    assert (cfg.resize, cfg.crop, cfg.square_resize, cfg.mean) == (224, None, True, (0.0, 0.0, 0.0))
