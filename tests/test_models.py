import dataclasses
import json
import os

import pytest
import safetensors.torch
import torch
from torch import nn

from icreward.backbones import build_backbone
from icreward.errors import IcrewardError
from icreward.losses import btt_loss
from icreward.models import (
    MODEL_TYPES,
    ICRewardModel,
    MLPRewardModel,
    RewardModel,
    apply_backbone_policy,
    attention_heatmaps,
    build_model,
    load_checkpoint,
    lora_target_modules,
)

B, T, SIDE = 2, 4, 64
SMALL = {"icreward": {"d_model": 32, "heads": 2, "depth": 2, "head_queries": 2}, "mlp": {"hidden": 32, "dropout": 0.0}}


def make(model_type: str, seed: int = 0, **config) -> RewardModel:
    torch.manual_seed(seed)
    return build_model(model_type, num_frames=T, **{**SMALL[model_type], **config})


def inputs(b: int = B, t: int = T, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, SIDE, SIDE, generator=g)
    return image, torch.rand(b, t, 3, SIDE, SIDE, generator=g), torch.rand(b, t, 3, SIDE, SIDE, generator=g)


@pytest.fixture(scope="module")
def icr() -> ICRewardModel:
    return make("icreward").eval()


def test_encode_shapes_and_one_backbone_batch(icr, monkeypatch):
    image, video, _ = inputs()
    calls = []
    forward = icr.backbone.forward
    monkeypatch.setattr(icr.backbone, "forward", lambda x: calls.append(x.shape[0]) or forward(x))
    img, vid = icr.encode(image, video)
    d, n = icr.backbone.dim, (SIDE // 8) ** 2
    assert img["cls"].shape == (B, d) and img["patch"].shape == (B, n, d)
    assert vid["cls"].shape == (B, T, d) and vid["patch"].shape == (B, T, n, d)
    assert calls == [B + B * T]
    icr.forward_pairs(*inputs())
    assert calls[-1] == B + 2 * B * T  # the image once, A and B frames in the same pass


@pytest.mark.parametrize("model_type", ["icreward", "mlp"])
@pytest.mark.parametrize("policy", ["frozen", "last-1", "lora", "full"])
def test_trainable_params_get_gradients_and_change_frozen_ones_do_not(model_type, policy):
    model = make(model_type, backbone_policy=policy).train()
    if policy == "lora":
        # LoRA starts with B = 0, which makes A's first gradient exactly 0; give B the values a first step would.
        for name, p in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(p, std=0.02)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone = {n for n in trainable if n.startswith("backbone.")}
    expected_backbone = {
        "frozen": set(),
        "last-1": {n for n, _ in model.named_parameters() if n.startswith(("backbone.layers.1.", "backbone.norm."))},
        "lora": {n for n, _ in model.named_parameters() if "lora_" in n},
        "full": {n for n, _ in model.named_parameters() if n.startswith("backbone.")},
    }[policy]
    assert backbone == expected_backbone
    assert backbone or policy == "frozen"
    assert model.backbone_trainable == sum(p.numel() for n, p in model.named_parameters() if n in backbone)
    assert trainable - backbone  # the head always trains

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    r_a, r_b = model.forward_pairs(*inputs())
    btt_loss(r_a, r_b, torch.tensor([1, 0])).backward()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != (name in trainable), f"{name}: trainable={name in trainable}"


def test_frozen_backbone_stays_in_eval_mode():
    model = make("mlp", backbone_policy="frozen").train()
    assert model.training and not model.backbone.training
    assert make("mlp", backbone_policy="last-1").train().backbone.training


def test_lora_backbone_scores_the_same_in_eval_and_training_mode():
    # torch's fused nn.TransformerEncoderLayer inference path (eval mode, no grad needed) reads the base weights
    # directly and would silently skip the LoRA deltas; training mode always takes the module path.
    model = make("icreward", backbone_policy="lora-r4")
    image, video, _ = inputs()
    with torch.no_grad():
        untrained = model.eval()(image, video)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(p, std=0.5)
        scored = model.eval()(image, video)
        assert torch.allclose(scored, model.train()(image, video), atol=1e-5)
        assert not torch.allclose(scored, untrained, atol=1e-3)


def test_policy_strings_and_lora_targets():
    backbone = build_backbone("tiny-vit")
    assert apply_backbone_policy(backbone, "frozen") == 0
    assert apply_backbone_policy(backbone, "full") == sum(p.numel() for p in backbone.parameters())
    with pytest.raises(ValueError, match="last-<k>"):
        apply_backbone_policy(backbone, "half")
    with pytest.raises(ValueError, match="blocks"):
        apply_backbone_policy(backbone, "last-3")
    assert lora_target_modules(backbone) == ["linear1", "linear2"]


@pytest.mark.parametrize("model_type", ["icreward", "mlp"])
def test_forward_pairs_equals_two_forwards(model_type):
    model = make(model_type).eval()
    image, video_a, video_b = inputs()
    r_a, r_b = model.forward_pairs(image, video_a, video_b)
    assert torch.allclose(r_a, model(image, video_a), atol=1e-5)
    assert torch.allclose(r_b, model(image, video_b), atol=1e-5)


@pytest.mark.parametrize("model_type", ["icreward", "mlp"])
def test_head_on_cached_tokens_equals_forward(model_type):
    model = make(model_type).eval()
    model.set_score_normalization(0.3, 2.0)
    image, video_a, video_b = inputs()
    with torch.no_grad():
        img, vid_a = model.encode(image, video_a)
        _, vid_b = model.encode(image, video_b)
        assert torch.allclose(model.normalize(model.head(img, vid_a)), model(image, video_a), atol=1e-6)
        r_a, r_b = model.head_pairs(img, vid_a, vid_b)
        assert torch.allclose(model.normalize(r_b), model(image, video_b), atol=1e-5)


@pytest.mark.parametrize("t", [1, 7, 16])
def test_accepts_other_frame_counts(icr, t):
    image, video, _ = inputs(t=t)
    reward = icr(image, video)
    assert reward.shape == (B,) and torch.isfinite(reward).all()


def test_attention_maps_shapes_rows_and_heatmaps(icr):
    image, video, _ = inputs()
    reward, attention = icr(image, video, return_attention=True)
    assert torch.allclose(reward, icr(image, video), atol=1e-5)  # asking for maps does not change the reward
    cfg, n = icr.config, (SIDE // 8) ** 2 + 1  # patches + cls
    assert len(attention["fusion"]) == cfg.depth
    for fusion in attention["fusion"]:
        assert fusion.shape == (B, T, cfg.heads, n, n)
        assert torch.allclose(fusion.sum(-1), torch.ones(()), atol=1e-5)
    assert attention["head"].shape == (B, cfg.head_queries, T * n)
    assert torch.allclose(attention["head"].sum(-1), torch.ones(()), atol=1e-5)
    maps = attention_heatmaps(icr, image, video)
    assert maps.shape == (B, T, 8, 8) and (maps >= 0).all() and (maps.sum((1, 2, 3)) <= 1 + 1e-5).all()
    assert attention_heatmaps(icr, image, video, size=(32, 32)).shape == (B, T, 32, 32)
    with pytest.raises(ValueError, match="attention"):
        make("mlp")(image, video, return_attention=True)


def test_z_normalisation_is_applied():
    model = make("icreward").eval()
    image, video, _ = inputs()
    with torch.no_grad():
        raw = model(image, video)
        model.set_score_normalization(mean=2.0, std=4.0)
        assert torch.allclose(model(image, video), (raw - 2.0) / 4.0)
    with pytest.raises(ValueError):
        model.set_score_normalization(0.0, 0.0)


def test_reward_is_differentiable_wrt_pixels(icr):
    image, video, _ = inputs()
    image.requires_grad_()
    video.requires_grad_()
    icr(image, video).sum().backward()
    for x in (image, video):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("model_type", "policy"), [("icreward", "lora"), ("mlp", "frozen"), ("icreward", "last-1")])
def test_save_and_load_round_trip(tmp_path, model_type, policy):
    model = make(model_type, backbone_policy=policy, seed=3).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:  # trained adapters, so that a LoRA that failed to load would show
            nn.init.normal_(p, std=0.5)
    model.set_score_normalization(0.5, 1.5)
    model.config.tie_threshold = 0.2
    model.save_pretrained(tmp_path / "ckpt", training={"data_sha256": "abc", "loss": "btt"})
    torch.manual_seed(99)  # a different random init underneath: the weights must come from the file
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model) and not loaded.training
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    assert loaded.config.training == {"data_sha256": "abc", "loss": "btt"}
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["model_type"] == model_type and meta["icreward_version"] and meta["backbone"] == "tiny-vit"
    assert meta["preprocess"]["crop"] == SIDE and meta["num_frames"] == T
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "config.json"):  # readable as any file written with plain open()
        assert (tmp_path / "ckpt" / name).stat().st_mode & 0o777 == 0o666 & ~mask
    image, video, _ = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, video), model(image, video))
    assert type(model).from_pretrained(tmp_path / "ckpt").config == loaded.config
    other = MLPRewardModel if model_type == "icreward" else ICRewardModel
    with pytest.raises(IcrewardError, match="not a"):
        other.from_pretrained(tmp_path / "ckpt")


def test_crash_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model = make("mlp").eval()
    model.save_pretrained(tmp_path / "ckpt")
    image, video, _ = inputs()
    with torch.no_grad():
        old = model(image, video)
    model.set_score_normalization(5.0, 1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    for target in ("ckpt", "new"):
        with pytest.raises(OSError, match="disk full"):
            model.save_pretrained(tmp_path / target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no partial folder is left behind
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "ckpt")(image, video), old)


def test_missing_or_corrupt_checkpoints_raise_naming_the_folder(tmp_path):
    with pytest.raises(IcrewardError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")
    folder = tmp_path / "ckpt"
    make("mlp").save_pretrained(folder)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(IcrewardError, match=r"ckpt.*model.safetensors"):
        load_checkpoint(folder)
    (folder / "model.safetensors").write_bytes(weights)
    config = (folder / "config.json").read_text()
    for bad, reason in [("{not json", "unreadable"), (config.replace('"mlp"', '"gan"'), "unknown model_type")]:
        (folder / "config.json").write_text(bad)
        with pytest.raises(IcrewardError, match=f"ckpt.*{reason}"):
            load_checkpoint(folder)
    (folder / "config.json").write_text(config.replace('"hidden": 32', '"hidden": 16'))
    with pytest.raises(IcrewardError, match="does not fit"):
        load_checkpoint(folder)
    (folder / "config.json").unlink()
    with pytest.raises(IcrewardError, match="config.json is missing"):
        load_checkpoint(folder)


def test_backbone_left_out_only_where_its_spec_rebuilds_it(tmp_path, monkeypatch):
    model = make("icreward")
    with pytest.raises(ValueError, match="hf:"):
        model.save_pretrained(tmp_path / "ckpt", save_backbone=False)
    # pretend tiny-vit were an hf: backbone: a fixed seed rebuilds the same weights from the spec
    monkeypatch.setattr(type(model), "_backbone_rebuilds_from_spec", lambda self: True)
    model.save_pretrained(tmp_path / "ckpt", save_backbone=False)
    saved = safetensors.torch.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert saved and not any(k.startswith("backbone.") for k in saved)
    torch.manual_seed(0)
    loaded = load_checkpoint(tmp_path / "ckpt")
    image, video, _ = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, video), model.eval()(image, video))


def test_registry_and_build_errors():
    assert set(MODEL_TYPES) == {"icreward", "mlp"}
    with pytest.raises(IcrewardError, match="known"):
        build_model("gan")
    with pytest.raises(IcrewardError, match="d_modle"):
        build_model("icreward", d_modle=64)


@pytest.fixture(scope="module")
def hf_towers(tmp_path_factory):
    """Tiny random DINOv2 and CLIP-with-projection towers saved locally (nothing is downloaded)."""
    transformers = pytest.importorskip("transformers")
    tiny = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32)
    torch.manual_seed(0)
    towers = {
        "dinov2": transformers.Dinov2Model(transformers.Dinov2Config(patch_size=8, **tiny)),
        "clip": transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(patch_size=8, projection_dim=8, **tiny)
        ),
    }
    folders = {}
    for name, tower in towers.items():
        folders[name] = tmp_path_factory.mktemp(name)
        tower.save_pretrained(folders[name])
        processor = {"size": {"shortest_edge": 32}, "crop_size": 32, "resample": 3}
        (folders[name] / "preprocessor_config.json").write_text(json.dumps(processor))
    return folders


@pytest.mark.parametrize("tower", ["dinov2", "clip"])
def test_hf_backbones_under_every_policy(hf_towers, tower):
    image, video, _ = inputs(t=2)
    tiny_head = dict(d_model=16, heads=2, depth=1, head_queries=1)
    for policy in ("frozen", "last-1", "lora-r2"):
        model = build_model("icreward", backbone=f"hf:{hf_towers[tower]}", backbone_policy=policy, **tiny_head)
        assert model(image, video).shape == (B,)  # CLIP's cls (projected, 8-d) and patches (16-d) differ in width
        trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
        if policy == "last-1":
            last = model.backbone.blocks()[-1]
            final_norm = model.backbone.model.layernorm if tower == "dinov2" else model.backbone.post_layernorm
            assert {id(p) for n, p in model.backbone.named_parameters() if n in trainable} == {
                id(p) for m in (last, final_norm) for p in m.parameters()
            }
        elif policy == "lora-r2":
            assert trainable and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)


def test_frozen_hf_backbone_can_be_left_out_of_the_checkpoint(hf_towers, tmp_path):
    model = build_model("mlp", backbone=f"hf:{hf_towers['dinov2']}", hidden=16).eval()
    model.save_pretrained(tmp_path / "ckpt", save_backbone=False)
    saved = safetensors.torch.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert saved and not any(k.startswith("backbone.") for k in saved)
    image, video, _ = inputs(t=2)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "ckpt")(image, video), model(image, video))


def test_token_match_features_find_moved_and_missing_content():
    from icreward.models.icreward_model import token_match_features

    image = torch.randn(1, 16, 8)
    moved = image[:, torch.randperm(16)]  # same content, other places
    foreign = torch.randn(1, 16, 8)
    feats = token_match_features(image, torch.stack([image, moved, foreign], dim=1))  # (1, 3, 16, 2)
    best, same = feats[0, ..., 0], feats[0, ..., 1]
    torch.testing.assert_close(best[:2], torch.ones(2, 16))  # every token of the image is found, moved or not
    torch.testing.assert_close(same[0], torch.ones(16))
    assert same[1].mean() < 0.9 and best[2].mean() < 0.95  # moved: not in place; foreign: no good match


def test_checkpoints_written_before_options_were_fixed_still_load(tmp_path):
    """config.json of earlier versions carries the now-fixed options (`use_cls`, `match_features`, `pool_readout`,
    `time_frequencies`) and the whole training config: such a checkpoint loads and scores the same; one that set a
    fixed option to another value is refused, naming the file."""
    from icreward.models import ICRewardModel, build_model, load_checkpoint

    torch.manual_seed(0)
    model = build_model("icreward", backbone="tiny-vit", d_model=32, heads=2, depth=1, num_frames=4).eval()
    model.save_pretrained(tmp_path / "old")
    config_path = tmp_path / "old" / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("head")
    config |= {"use_cls": True, "match_features": True, "pool_readout": True, "time_frequencies": 8}
    config["training"] = {"git_sha": "0" * 40, "config": {"out": "/tmp/old-run", "lr": 5e-4}}
    config_path.write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path / "old")
    assert isinstance(loaded, ICRewardModel) and loaded.config.head == "attention"
    image, video = torch.rand(2, 3, 32, 32), torch.rand(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(image, video), model(image, video))
    config_path.write_text(json.dumps(config | {"use_cls": False}))
    with pytest.raises(IcrewardError, match=r"config\.json.*use_cls"):
        load_checkpoint(tmp_path / "old")


def test_an_evidence_only_model_computes_no_attention_path():
    from icreward.models import build_model

    torch.manual_seed(0)
    full = build_model(
        "icreward", backbone="patch-features", d_model=16, heads=2, depth=1, evidence=True, head_bound=1.0
    )
    image, video = torch.rand(2, 3, 64, 64), torch.rand(2, 4, 3, 64, 64)
    with torch.no_grad():
        tokens = full.encode(image, video)
        part = full.head_part(*tokens)[0]
        pruned = full.without_head(offset=float(part.mean()))
        assert pruned.config.head == "none" and not hasattr(pruned, "ic_head") and not hasattr(pruned, "blocks")
        assert sum(p.numel() for p in pruned.parameters()) == full.evidence.weight.numel()
        # rewards move only by the head part's deviation from its mean, over score_std
        expected = full(image, video) - (part - part.mean()) / full.config.score_std
        assert torch.allclose(pruned(image, video), expected, atol=1e-5)
    with pytest.raises(IcrewardError, match="head .none. needs evidence"):
        build_model("icreward", backbone="patch-features", head="none")
