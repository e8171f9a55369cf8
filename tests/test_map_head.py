"""The structure-aware parts of IC-Reward: grey-layout tokens, motion-tolerant (local) evidence, evidence maps and
the IC head that reads them (`head: map`)."""

from __future__ import annotations

import math

import pytest
import torch

from icreward.backbones.patch_features import PatchFeatures, PatchFeaturesConfig
from icreward.models.evidence import (
    ALL_MEASURES,
    EPS,
    LOCAL_RADIUS,
    MEASURES,
    consistency_evidence,
    evidence_and_maps,
    evidence_maps,
    evidence_names,
    neighbourhood,
)
from icreward.models.icreward_model import ICRewardConfig, ICRewardModel, attention_heatmaps

SIZE = 64


def backbone() -> PatchFeatures:
    return PatchFeatures(PatchFeaturesConfig(image_size=SIZE, patch_size=8, structure=4))


def map_model(**kw) -> ICRewardModel:
    config = dict(
        backbone="patch-features",
        backbone_kwargs={"image_size": SIZE, "patch_size": 8, "structure": 4},
        head="map",
        d_model=16,
        heads=2,
        head_queries=2,
        evidence=True,
        evidence_measures=list(ALL_MEASURES),
        head_bound=0.5,
    )
    torch.manual_seed(0)
    return ICRewardModel(ICRewardConfig(**(config | kw))).eval()


def tokens(bb, image, video):
    img = bb(image)
    vid = {k: v.unflatten(0, video.shape[:2]) for k, v in bb(video.flatten(0, 1)).items()}
    return img, vid


def test_layout_channels_see_content_that_keeps_colour_statistics():
    bb = backbone()
    start, end = next((s, e) for name, s, e, _ in bb.token_groups if name == "structure")
    assert end - start == 16 and bb.dim == 31
    x = torch.rand(1, 3, SIZE, SIZE)
    flipped = x.flip(-1).flip(-2)  # every patch's content turned 180 degrees: same colours per patch
    a, b = (
        bb(x)["patch"],
        bb(
            torch.stack(
                [
                    p.flip(-1).flip(-2)
                    for p in x.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 8, 8)
                ]
            )
            .view(1, 8, 8, 3, 8, 8)
            .permute(0, 3, 1, 4, 2, 5)
            .reshape(1, 3, SIZE, SIZE)
        )["patch"],
    )
    assert torch.allclose(a[..., :6], b[..., :6], atol=1e-5)  # colour mean and spread per patch unchanged
    assert (a[..., start:end] - b[..., start:end]).norm(dim=-1).mean() > 0.5  # the layout inside each patch is not
    assert flipped.shape == x.shape


def test_a_flat_patch_has_no_layout():
    bb = backbone()
    start, end = next((s, e) for name, s, e, _ in bb.token_groups if name == "structure")
    flat = torch.full((1, 3, SIZE, SIZE), 0.4) + 0.001 * torch.rand(1, 3, SIZE, SIZE)
    assert bb(flat)["patch"][..., start:end].norm(dim=-1).max() < 0.05


def test_structure_must_divide_the_patch():
    with pytest.raises(ValueError, match="structure"):
        PatchFeatures(PatchFeaturesConfig(image_size=SIZE, patch_size=8, structure=3))


def test_neighbourhood_is_a_chebyshev_window():
    near = neighbourhood(16, 1)  # 4 x 4 grid
    assert near[0].sum() == 4 and near[5].sum() == 9 and near[0, 5] and not near[0, 10]
    with pytest.raises(ValueError, match="square"):
        neighbourhood(12, 1)


def test_local_evidence_tolerates_small_moves_and_catches_far_ones():
    torch.manual_seed(1)
    bb = backbone()
    image = torch.rand(1, 3, SIZE, SIZE)
    near_move = torch.roll(image, shifts=8 * (LOCAL_RADIUS - 1), dims=-1)[:, None].expand(1, 3, 3, SIZE, SIZE)
    far_move = torch.roll(image, shifts=SIZE // 2, dims=-1)[:, None].expand(1, 3, 3, SIZE, SIZE)
    names = evidence_names(bb.token_groups, ALL_MEASURES)
    col = names.index("structure/local/mean")
    pos = names.index("structure/position/mean")
    near = consistency_evidence(*tokens(bb, image, near_move.contiguous()), bb.token_groups, ALL_MEASURES)[0]
    far = consistency_evidence(*tokens(bb, image, far_move.contiguous()), bb.token_groups, ALL_MEASURES)[0]
    assert far[col] - near[col] > 1.0  # content moved half a frame away is not "local"
    assert near[pos] - near[col] > 1.0  # a one-patch move costs the strict position measure, not the local one


def test_one_pass_gives_the_same_evidence_and_maps():
    torch.manual_seed(2)
    bb = backbone()
    img, vid = tokens(bb, torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 4, 3, SIZE, SIZE))
    both, maps = evidence_and_maps(img, vid, bb.token_groups, ALL_MEASURES)
    assert torch.equal(both, consistency_evidence(img, vid, bb.token_groups, ALL_MEASURES))
    assert torch.equal(maps, evidence_maps(img, vid, bb.token_groups))
    assert maps.shape == (2, 4, 64, 3 * len(bb.token_groups))
    assert consistency_evidence(img, vid, bb.token_groups).shape[-1] == len(evidence_names(bb.token_groups, MEASURES))


def test_evidence_maps_are_the_floor_on_a_still_copy():
    bb = backbone()
    image = torch.rand(1, 3, SIZE, SIZE)
    maps = evidence_maps(*tokens(bb, image, image[:, None].expand(1, 3, 3, SIZE, SIZE).contiguous()), bb.token_groups)
    assert torch.allclose(maps, torch.full_like(maps, math.log(EPS)), atol=0.2)  # float rounding of the distances


def test_map_head_is_zero_on_a_still_copy_and_bounded():
    model = map_model()
    image = torch.rand(2, 3, SIZE, SIZE)
    still = image[:, None].expand(2, 4, 3, SIZE, SIZE).contiguous()
    with torch.no_grad():
        part = model.head_part(*model.encode(image, still))[0]
        moving = model.head_part(*model.encode(image, torch.rand(2, 4, 3, SIZE, SIZE)))[0]
    assert part.abs().max() < 1e-2  # measured against a still copy: no constant offset to drift
    assert moving.abs().max() <= 0.5 + 1e-6  # head_bound


def test_map_head_reward_is_evidence_plus_head_and_drops_cleanly():
    model = map_model()
    image, video = torch.rand(3, 3, SIZE, SIZE), torch.rand(3, 5, 3, SIZE, SIZE)
    with torch.no_grad():
        img_tokens, vid_tokens = model.encode(image, video)
        raw = model.head(img_tokens, vid_tokens)
        part = model.head_part(img_tokens, vid_tokens)[0]
        assert torch.allclose(raw, model.evidence(img_tokens, vid_tokens) + part, atol=1e-5)
        pruned = model.without_head(float(part.mean()))
        assert pruned.config.head == "none" and not any(k.startswith("ic_head") for k in pruned.state_dict())
        assert torch.allclose(
            pruned(image, video) - model(image, video), -(part - part.mean()) / model.config.score_std, atol=1e-4
        )


def test_map_head_gradients_reach_the_head_and_the_readout():
    model = map_model().train()
    image, video = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 4, 3, SIZE, SIZE)
    model(image, video).sum().backward()
    assert model.map_tokens[0].weight.grad.abs().sum() > 0 and model.evidence.weight.grad.abs().sum() > 0


def test_map_head_attention_gives_one_map_per_frame():
    model = map_model()
    maps = attention_heatmaps(model, torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 5, 3, SIZE, SIZE), size=(32, 32))
    assert maps.shape == (1, 5, 32, 32) and torch.isfinite(maps).all()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"evidence": False, "head_bound": None}, "needs evidence"),
        ({"head_reference": True}, "head_reference"),
        ({"evidence_measures": ["position", "nope"]}, "evidence measures"),
        ({"evidence_measures": "position"}, "evidence_measures"),
    ],
)
def test_map_head_config_is_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        map_model(**changes)


def test_a_map_model_saves_and_loads_to_the_same_rewards(tmp_path):
    import icreward

    model = map_model()
    model.save_pretrained(tmp_path / "m")
    loaded = icreward.load(str(tmp_path / "m"))
    image, video = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded(image, video), model(image, video), atol=1e-6)


def test_the_gathered_window_is_the_neighbourhood():
    from icreward.models.evidence import _window_indices

    for n, radius in ((16, 1), (64, 2), (9, 3)):
        window, near = _window_indices(n, radius, torch.device("cpu")), neighbourhood(n, radius)
        for i in range(n):
            assert set(window[i].tolist()) == set(near[i].nonzero().flatten().tolist())
