"""The consistency-evidence branch: its distances, their monotone read-out, and how IC-Reward uses it."""

from __future__ import annotations

import math

import pytest
import torch

from icreward.backbones import build_backbone
from icreward.models import ICRewardModel
from icreward.models.evidence import (
    EPS,
    MEASURES,
    EvidenceReadout,
    consistency_evidence,
    evidence_names,
)
from icreward.models.icreward_model import ICRewardConfig


def scene(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random image `[3, H, W]` in [0, 1] with a bright square: structure at several scales."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")[0]
    base[:, h // 4 : h // 2, w // 4 : w // 2] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)
    return base.clamp(0, 1)


def panning(image: torch.Tensor, frames: int, shift: int = 8) -> torch.Tensor:
    """`[T, 3, H, W]`: the image sliding right by up to `shift` pixels over the video (edge pixels repeated)."""
    out = []
    for t in range(frames):
        dx = round(shift * t / max(1, frames - 1))
        padded = torch.nn.functional.pad(image[None], (dx, 0, 0, 0), mode="replicate")[0]
        out.append(padded[..., : image.shape[-1]])
    return torch.stack(out)


def tokens(backbone, image: torch.Tensor, video: torch.Tensor):
    """Backbone tokens of `image [3,H,W]` and `video [T,3,H,W]` (a batch of one), shaped as models see them."""
    t = len(video)
    out = backbone(torch.cat([image[None], video]))
    img = {k: v[:1] for k, v in out.items()}
    vid = {k: v[1:].reshape(1, t, *v.shape[1:]) for k, v in out.items()}
    return img, vid


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("patch-features")


def test_features_are_named_and_shaped(backbone):
    groups = backbone.token_groups
    assert [g[0] for g in groups] == ["colour", "contrast", "edges", "energy"]
    assert groups[-1][2] == backbone.dim  # the groups cover every channel
    image = scene()
    img, vid = tokens(backbone, image, panning(image, 6))
    features = consistency_evidence(img, vid, groups)
    names = evidence_names(groups)
    assert features.shape == (1, len(groups) * len(MEASURES) * 2) and len(names) == features.shape[1]
    assert names[0] == "colour/position/mean" and len(set(names)) == len(names)
    assert torch.isfinite(features).all()


def test_a_video_of_the_image_itself_shows_no_distance(backbone):
    image = scene()
    img, vid = tokens(backbone, image, image.expand(5, -1, -1, -1))
    features = consistency_evidence(img, vid, backbone.token_groups)
    assert (features < math.log(2 * EPS)).all()  # every distance (and the jitter of a still video) is below EPS


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda v: (v + 0.3).clamp(0, 1),  # exposure
        lambda v: v[:, [2, 1, 0]],  # channel swap
        lambda v: v.flip(-1),  # mirror
        lambda v: torch.cat([v[:1], torch.rand_like(v[1:], dtype=v.dtype)]),  # other content after frame 0
    ],
)
def test_every_corruption_lowers_the_reward_whatever_the_weights(backbone, corrupt):
    image = scene(seed=1)
    video = panning(image, 6)
    readout = EvidenceReadout(backbone.token_groups)
    for seed in range(3):
        with torch.no_grad():
            readout.weight.copy_(torch.randn(readout.weight.shape, generator=torch.Generator().manual_seed(seed)) * 3)
        assert (readout.effective_weight() >= readout.floor).all()
        good = readout(*tokens(backbone, image, video))
        bad = readout(*tokens(backbone, image, corrupt(video)))
        assert good.item() > bad.item()


def test_jitter_reads_flicker_and_not_the_frame_count(backbone):
    image = scene(seed=2)
    names = evidence_names(backbone.token_groups)
    jitter = [i for i, n in enumerate(names) if n.endswith("jitter/mean")]

    def jitter_of(video):
        return consistency_evidence(*tokens(backbone, image, video), backbone.token_groups)[0, jitter]

    smooth8, smooth16 = jitter_of(panning(image, 8, shift=16)), jitter_of(panning(image, 16, shift=16))
    gain = 0.6 + 0.4 * torch.rand(16, generator=torch.Generator().manual_seed(0))  # exposure drawn afresh per frame
    flicker = panning(image, 16, shift=16) * gain.view(16, 1, 1, 1)
    assert (smooth8 - smooth16).abs().max() < 0.35  # log units: the same motion reads alike at 8 and 16 frames
    flickering = jitter_of(flicker)
    assert (flickering > smooth16).all() and flickering[0] > smooth16[0] + 0.5  # most of all in the colour group


def test_short_videos_have_no_jitter_and_still_score(backbone):
    image = scene()
    img, vid = tokens(backbone, image, panning(image, 2))
    features = consistency_evidence(img, vid, backbone.token_groups)
    names = evidence_names(backbone.token_groups)
    assert all(features[0, i] == math.log(EPS) for i, n in enumerate(names) if "/jitter/" in n)


def test_backbones_without_groups_compare_whole_tokens_by_cosine():
    backbone = build_backbone("tiny-vit")
    assert backbone.token_groups == [("token", 0, backbone.dim, "cosine")]
    size = backbone.preprocess_config.crop
    image = torch.rand(3, size, size)
    img, vid = tokens(backbone, image, image.expand(4, -1, -1, -1) * 0.5)
    assert torch.isfinite(consistency_evidence(img, vid, backbone.token_groups)).all()


def test_readout_rejects_a_floor_above_its_start():
    with pytest.raises(ValueError, match="floor"):
        EvidenceReadout([("token", 0, 4, "cosine")], init=0.1, floor=0.2)


def _model(**kwargs) -> ICRewardModel:
    torch.manual_seed(0)
    return ICRewardModel(
        ICRewardConfig(backbone="patch-features", d_model=16, heads=2, depth=1, evidence=True, **kwargs)
    ).eval()


def test_head_bound_limits_what_the_head_adds():
    image, video = scene()[None], panning(scene(), 6)[None]
    evidence_only = _model(head="none")
    full = _model(head_bound=0.5)
    with torch.no_grad():
        for p in full.ic_head.parameters():  # a head with large weights still adds at most the bound
            p.mul_(50)
        tokens_ = full.encode(image, video)
        evidence = full.evidence(*tokens_)
        assert torch.allclose(evidence_only(image, video), evidence)  # same init, head off
        assert (full.head(*tokens_) - evidence).abs().max() <= 0.5 + 1e-5
        assert (full.head(*tokens_) - evidence).abs().max() > 0.4  # ... and does add something


def test_gradients_reach_the_video_pixels_through_the_evidence():
    model = _model(head="none")
    video = panning(scene(), 6)[None].requires_grad_(True)
    model(scene()[None], video).sum().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0 and torch.isfinite(video.grad).all()


def test_the_evidence_weights_train_faster_than_the_head():
    model = _model(head_bound=1.0)
    groups = model.param_groups(lr=1e-3, weight_decay=0.05)
    fast = [g for g in groups if any(p is model.evidence.weight for p in g["params"])]
    assert len(fast) == 1 and fast[0]["lr"] == pytest.approx(1e-3 * EvidenceReadout.lr_scale)
    assert fast[0]["params"] == [model.evidence.weight] and fast[0]["weight_decay"] == 0.0
    assert all(g["lr"] == pytest.approx(1e-3) for g in groups if g is not fast[0])


def test_evidence_model_round_trips_through_a_checkpoint(tmp_path):
    model = _model(head_bound=1.0)
    with torch.no_grad():
        model.evidence.weight.add_(torch.linspace(-1, 1, model.evidence.weight.numel()))
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ICRewardModel.from_pretrained(tmp_path / "ckpt")
    image, video = scene()[None], panning(scene(), 5)[None]
    with torch.no_grad():
        assert torch.equal(loaded(image, video), model(image, video))
    assert loaded.evidence.weights() == model.evidence.weights()


def test_head_reference_measures_the_head_against_a_still_copy_of_the_image():
    image = scene()[None]
    model = _model(head_bound=1.0, head_reference=True)
    with torch.no_grad():
        for p in model.ic_head.parameters():  # a head far from zero: its offset alone would saturate the bound
            p.add_(0.5)
        still = image[:, None].expand(-1, 2, -1, -1, -1)
        tokens_ = model.encode(image, still)
        assert torch.allclose(model.head(*tokens_), model.evidence(*tokens_), atol=1e-5)  # the head adds nothing
        moving = model.encode(image, panning(scene(), 6)[None])
        assert (model.head(*moving) - model.evidence(*moving)).abs().item() > 1e-3  # ... to the still copy only


@pytest.mark.parametrize("head", ["map", "none"])
def test_head_from_cached_evidence_gives_the_heads_rewards(head):
    """What training caches for a frozen backbone (`evidence_reader`) and the head finished from it
    (`head_from_evidence`) give `head`'s rewards; the attention head reads more than the evidence: no reader."""
    torch.manual_seed(0)
    config = dict(backbone="patch-features", backbone_kwargs={"image_size": 32}, head=head, evidence=True, d_model=16)
    config["evidence_measures"] = ["position", "match", "local", "jitter"]
    model = ICRewardModel(ICRewardConfig(**config)).eval()
    image, video = torch.rand(3, 3, 32, 32), torch.rand(3, 5, 3, 32, 32)
    with torch.no_grad():
        img_tokens, vid_tokens = model.encode(image, video)
        evidence, maps = model.evidence_reader()(img_tokens, vid_tokens)
        assert (maps is None) == (head == "none")
        assert torch.equal(model.head_from_evidence(evidence, maps), model.head(img_tokens, vid_tokens))
    attention = ICRewardModel(ICRewardConfig(**{**config, "head": "attention"}))
    assert attention.evidence_reader() is None
