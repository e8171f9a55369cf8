"""Held-out corruptions and the real-I2V robustness check: corruption contracts, accuracy and tie counting on cases
whose answer is known, and building the cases from the real DynamiCrafter pairs when they are present."""

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

import icreward
from icreward.evaluation.robustness import HELDOUT_CORRUPTIONS, Case, build_real_i2v_tests, evaluate_real_i2v
from icreward.interface import Scorer
from icreward.metrics.base import crop_to_aspect, resize_to
from icreward.synth.failures import FAILURE_MODES

REAL_I2V = Path(__file__).parents[2] / "shared" / "real-i2v"
NAMES = list(HELDOUT_CORRUPTIONS)


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    """A photo panning right 2 pixels a frame: `[8, 3, 40, 48]` in [0, 1], every frame different."""
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    photo = resize_to(crop_to_aspect(photo, 40, 64), (40, 64)).clamp(0, 1)
    return torch.stack([photo[..., 2 * i : 2 * i + 48] for i in range(8)]).contiguous()


def corrupt(name: str, video: torch.Tensor, severity: float, seed: int = 0) -> torch.Tensor:
    return HELDOUT_CORRUPTIONS[name](video, severity, np.random.default_rng(seed))


def test_heldout_corruptions_are_not_the_training_engines_modes():
    assert len(NAMES) == 11 and set(NAMES).isdisjoint(FAILURE_MODES)
    assert all(fn.__module__ == "icreward.evaluation.corruptions" for fn in HELDOUT_CORRUPTIONS.values())


@pytest.mark.parametrize("name", NAMES)
def test_corruption_keeps_shape_range_and_frame_0(name, video):
    before = video.clone()
    out = corrupt(name, video, 1.0)
    assert torch.equal(video, before)  # the input is not modified
    assert out.shape == video.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[0], video[0])
    assert (out[1:] - video[1:]).abs().mean() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_corruption_is_deterministic_for_a_seed(name, video):
    assert torch.equal(corrupt(name, video, 0.7, seed=3), corrupt(name, video, 0.7, seed=3))


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_the_identity(name, video):
    torch.testing.assert_close(corrupt(name, video, 0.0), video, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_stronger_severity_moves_the_video_further(name, video):
    distance = [(corrupt(name, video, s) - video).abs().mean().item() for s in (0.25, 0.5, 1.0)]
    assert distance[0] < distance[1] < distance[2], distance


@pytest.mark.parametrize("name", NAMES)
def test_corruption_grows_along_the_video(name, video):
    per_frame = (corrupt(name, video, 1.0) - video).abs().mean((1, 2, 3))  # (T,)
    assert per_frame[1:4].mean() < per_frame[-3:].mean(), per_frame


class NegativeL1(Scorer):
    """Reward = -mean |frame - image| over frames and pixels (image and frames share one size); counts its calls."""

    name = "negative-l1"

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, image, video, prompt=None):
        self.batches.append(len(video))
        return -(video - image[:, None]).abs().mean((1, 2, 3, 4))


def flat(value: float, shape=(3, 8, 8), frames: int | None = 2) -> torch.Tensor:
    return torch.full(shape if frames is None else (frames, *shape), value)


def known_cases() -> list[Case]:
    """Rewards: preferred -0.1; others -0.3 (right), -0.1 exactly (tie), -0.1 up to float32 rounding (tie), -0.05
    (wrong); plus a second source of another size whose other video is worse (right)."""
    image, preferred = flat(0.5, frames=None), flat(0.6)
    small_image, small_preferred = flat(0.2, (3, 6, 10), None), flat(0.2, (3, 6, 10))
    return [
        Case("a/other_image/b", "a", image, preferred, flat(0.8), "other_image"),
        Case("a/x@1", "a", image, preferred, preferred.clone(), "corruption", "x", 1.0),
        Case("a/x@0.5", "a", image, preferred, flat(0.4), "corruption", "x", 0.5),
        Case("a/y@1", "a", image, preferred, flat(0.55), "corruption", "y", 1.0),
        Case("b/other_image/a", "b", small_image, small_preferred, flat(0.9, (3, 6, 10)), "other_image"),
    ]


def test_evaluate_counts_right_wrong_and_ties():
    scorer = NegativeL1()
    result = evaluate_real_i2v(scorer, known_cases())
    assert [r["credit"] for r in result["rows"]] == [1.0, 0.5, 0.5, 0.0, 1.0]
    assert result["rows"][2]["margin"] != 0  # float32 rounding, counted as a tie
    assert result["n_cases"] == 5
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["accuracy_other_image"] == 1.0
    assert result["accuracy_corruption"] == pytest.approx(1 / 3)
    assert result["per_corruption"] == {"x": 0.5, "y": 0.0}
    assert result["accuracy_heldout"] == result["accuracy_corruption"] and result["accuracy_structural"] is None
    assert result["per_family"] == {"other_image": 1.0, "heldout": pytest.approx(1 / 3), "structural": None}
    assert result["mean_margin"] == pytest.approx((0.2 + 0 + 0 - 0.05 + 0.7) / 5, abs=1e-6)
    # Each distinct (image, video) scored once, in one batch per shape: 5 videos of size 8x8, 2 of size 6x10.
    assert sorted(scorer.batches) == [2, 5]


def test_evaluate_without_tie_tolerance_and_in_small_batches():
    scorer = NegativeL1()
    result = evaluate_real_i2v(scorer, known_cases(), batch_size=2, tie_tolerance=0.0)
    assert [r["credit"] for r in result["rows"]][:2] == [1.0, 0.5]  # an exact tie stays a tie
    assert result["rows"][2]["credit"] in (0.0, 1.0)
    assert sorted(scorer.batches) == [1, 2, 2, 2]


def test_evaluate_reports_none_for_an_absent_kind():
    result = evaluate_real_i2v(NegativeL1(), known_cases()[:1])
    assert result["accuracy_corruption"] is None and result["per_corruption"] == {}


def test_unknown_corruption_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown corruptions"):
        build_real_i2v_tests(tmp_path, corruptions=["blur"])


def test_build_on_the_real_pairs():
    if not (REAL_I2V / "manifest.jsonl").exists():
        pytest.skip(f"no real I2V data at {REAL_I2V}")
    names = ["mirror_drift", "temporal_shuffle"]
    cases = build_real_i2v_tests(REAL_I2V, sources=["bird000", "girl07"], corruptions=names, severities=(1.0,))
    assert [c.id for c in cases] == [
        "bird000/other_image/girl07",
        "bird000/mirror_drift@1",
        "bird000/temporal_shuffle@1",
        "girl07/other_image/bird000",
        "girl07/mirror_drift@1",
        "girl07/temporal_shuffle@1",
    ]
    for case in cases:
        own = [c for c in cases if c.source == case.source]
        assert all(c.image is case.image and c.preferred is case.preferred for c in own)  # loaded once
        assert case.preferred.shape[:2] == (16, 3) and max(case.preferred.shape[-2:]) <= 256
        assert case.other.shape == case.preferred.shape and 0 <= case.other.min() and case.other.max() <= 1
        if case.kind == "corruption":
            assert torch.equal(case.other[0], case.preferred[0])
    result = evaluate_real_i2v(icreward.load("metric:vbench-i2v-pixel"), cases)
    assert result["accuracy_other_image"] == 1.0  # each image prefers its own video over the other image's
    assert set(result["per_corruption"]) == set(names)
