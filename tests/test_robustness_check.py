"""The real-video check over both real folders: the structural corruptions' contract and kept colours, the fixed
select / report split by input image, the cases built from both folders, and the bench script end to end."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from icreward.evaluation.corruptions import HELDOUT_CORRUPTIONS
from icreward.evaluation.robustness import (
    FAMILIES,
    build_real_i2v_check,
    build_real_i2v_tests,
    evaluate_real_i2v,
    real_i2v_split,
)
from icreward.evaluation.structural import DONOR_CORRUPTIONS, STRUCTURAL_CORRUPTIONS
from icreward.metrics.base import crop_to_aspect, resize_to
from icreward.synth.failures import FAILURE_MODES

SHARED = Path(__file__).parents[2] / "shared"
ROOTS = [SHARED / "real-i2v", SHARED / "real-i2v-pia"]
NAMES = list(STRUCTURAL_CORRUPTIONS)
needs_real = pytest.mark.skipif(
    not all((r / "manifest.jsonl").exists() for r in ROOTS), reason=f"no real I2V data at {SHARED}"
)


def panning(photo: np.ndarray) -> torch.Tensor:
    """A photo panning right 2 pixels a frame: `[8, 3, 40, 48]` in [0, 1], every frame different."""
    x = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
    x = resize_to(crop_to_aspect(x, 40, 64), (40, 64)).clamp(0, 1)
    return torch.stack([x[..., 2 * i : 2 * i + 48] for i in range(8)]).contiguous()


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    return panning(data.astronaut())


@pytest.fixture(scope="module")
def donor() -> torch.Tensor:
    return panning(data.coffee())


def corrupt(name: str, video: torch.Tensor, severity: float, donor: torch.Tensor, seed: int = 0) -> torch.Tensor:
    extra = {"donor": donor} if name in DONOR_CORRUPTIONS else {}
    return STRUCTURAL_CORRUPTIONS[name](video, severity, np.random.default_rng(seed), **extra)


def test_structural_corruptions_are_the_checks_own():
    assert len(NAMES) >= 4 and DONOR_CORRUPTIONS <= set(NAMES)
    assert set(NAMES).isdisjoint(FAILURE_MODES) and set(NAMES).isdisjoint(HELDOUT_CORRUPTIONS)
    assert all(fn.__module__ == "icreward.evaluation.structural" for fn in STRUCTURAL_CORRUPTIONS.values())


@pytest.mark.parametrize("name", NAMES)
def test_structural_corruption_contract(name, video, donor):
    before = video.clone()
    out = corrupt(name, video, 1.0, donor)
    assert torch.equal(video, before)  # the input is not modified
    assert out.shape == video.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[0], video[0])
    assert (out[1:] - video[1:]).abs().mean() > 1e-3
    assert torch.equal(corrupt(name, video, 0.7, donor, seed=3), corrupt(name, video, 0.7, donor, seed=3))
    torch.testing.assert_close(corrupt(name, video, 0.0, donor), video, atol=1e-5, rtol=0)
    distance = [(corrupt(name, video, s, donor) - video).abs().mean().item() for s in (0.25, 0.5, 1.0)]
    assert distance[0] < distance[1] < distance[2], distance
    per_frame = (out - video).abs().mean((1, 2, 3))  # (T,)
    assert per_frame[1:4].mean() < per_frame[-3:].mean(), per_frame


def histogram_distance(a: torch.Tensor, b: torch.Tensor, bins: int = 32) -> float:
    """Largest total-variation distance between the per-channel histograms of two `(3, H, W)` frames (0..1)."""
    return max(
        0.5 * (torch.histc(a[c], bins, 0, 1) - torch.histc(b[c], bins, 0, 1)).abs().sum().item() / a[c].numel()
        for c in range(3)
    )


@pytest.mark.parametrize("name", NAMES)
def test_structural_corruptions_keep_the_colours(name, video, donor):
    for seed in range(3):
        out = corrupt(name, video, 1.0, donor, seed=seed)
        for i in range(len(video)):
            assert (out[i].mean((1, 2)) - video[i].mean((1, 2))).abs().max() < 0.01
            assert histogram_distance(out[i], video[i]) < 0.05
        assert (out[-1] - video[-1]).abs().mean() > 0.05  # the content did move
    # A colour failure of the same strength is far off on the same measure: the measure can see colour.
    swapped = HELDOUT_CORRUPTIONS["channel_swap"](video, 1.0, np.random.default_rng(0))
    assert histogram_distance(swapped[-1], video[-1]) > 0.1


def test_transplant_refuses_a_donor_of_another_shape(video, donor):
    with pytest.raises(ValueError, match="donor"):
        corrupt("histmatched_transplant", video, 1.0, donor[:, :, :20])


@needs_real
def test_the_split_is_fixed_disjoint_and_by_image():
    split = real_i2v_split(ROOTS, seed=0)
    assert split == real_i2v_split(list(reversed(ROOTS)), seed=0)  # order of the folders does not matter
    assert len(split) == 14  # 8 DynamiCrafter + 6 PIA input images, each in exactly one half
    select = sorted(k for k, v in split.items() if v == "select")
    assert select == [  # pinned: the design is fixed before any model is trained on new data
        "real-i2v-pia/harry.png",
        "real-i2v-pia/labrador.png",
        "real-i2v/dance1.jpeg",
        "real-i2v/girl3.jpeg",
        "real-i2v/pour_honey.png",
    ]
    assert real_i2v_split(ROOTS, seed=1) != split


@needs_real
def test_the_check_covers_both_folders_and_its_halves_partition_it():
    kwargs = {"families": ("other_image", "structural"), "severities": (1.0,), "num_frames": 4, "max_side": 64}
    halves = {s: build_real_i2v_check(ROOTS, split=s, **kwargs) for s in ("select", "report", "all")}
    ids = {s: [c.id for c in cases] for s, cases in halves.items()}
    assert set(ids["select"]).isdisjoint(ids["report"]) and sorted(ids["all"]) == sorted(ids["select"] + ids["report"])
    every = halves["all"]
    assert {c.folder for c in every} == {"real-i2v", "real-i2v-pia"}
    assert len({c.source for c in every}) == 32
    image_of = {c.source: c.image for c in every}
    split = real_i2v_split(ROOTS)
    for s in ("select", "report"):  # a half's cases only use its own images
        used = {c.source for c in halves[s]} | {
            c.id.split("/other_image/")[1] for c in halves[s] if "/other_image/" in c.id
        }
        assert {split[_image_name_of(source)] for source in used} == {s}
    for case in every:
        assert case.other.shape == case.preferred.shape and case.other.dtype == case.preferred.dtype == torch.uint8
        if case.kind == "other_image":
            other = case.id.split("/other_image/")[1]
            assert image_of[other] is not case.image and _image_name_of(other) != _image_name_of(case.source)
        else:
            assert case.family == "structural" and torch.equal(case.other[0], case.preferred[0])
    assert sum(c.kind == "other_image" for c in every) == 4 * 32
    others = [c for c in halves["report"] if c.kind == "other_image"]
    from_pia = sum(_folder_of(c.id.split("/other_image/")[1]) == "real-i2v-pia" for c in others)
    assert from_pia == len(others) // 2  # the other videos alternate between the generators (each has 2+ others)
    # The same case is the same tensor content whichever split built it.
    select = {c.id: c.other for c in halves["select"]}
    assert all(torch.equal(select[c.id], c.other) for c in every if c.id in select)


@functools.cache
def _manifest() -> dict[str, dict]:
    return {
        rec["id"]: rec | {"folder": root.name}
        for root in ROOTS
        for rec in map(json.loads, (root / "manifest.jsonl").read_text().splitlines())
    }


def _image_name_of(source: str) -> str:
    rec = _manifest()[source]
    return f"{rec['folder']}/{rec['image']}"


def _folder_of(source: str) -> str:
    return _manifest()[source]["folder"]


@needs_real
def test_the_check_scores_every_family_and_corruption():
    import icreward

    cases = build_real_i2v_check(
        ROOTS, split="select", sources=["girl3", "harry-rcnz1"], severities=(1.0,), num_frames=4, max_side=64
    )
    corruptions = {c.corruption for c in cases if c.corruption}
    assert corruptions == set(HELDOUT_CORRUPTIONS) | set(STRUCTURAL_CORRUPTIONS)
    result = evaluate_real_i2v(icreward.load("metric:color-hist"), cases)
    assert set(result["per_family"]) == set(FAMILIES) and all(v is not None for v in result["per_family"].values())
    assert set(result["per_corruption"]) == corruptions
    assert set(result["per_folder"]) == {"real-i2v", "real-i2v-pia"}
    assert result["accuracy_structural"] == result["per_family"]["structural"]


@needs_real
def test_the_check_refuses_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        build_real_i2v_check(ROOTS, split="test")
    with pytest.raises(ValueError, match="families"):
        build_real_i2v_check(ROOTS, families=("colour",))
    with pytest.raises(ValueError, match="unknown corruptions"):
        build_real_i2v_check(ROOTS, corruptions=["blur"])
    with pytest.raises(ValueError, match="no pairs"):
        build_real_i2v_check(ROOTS, split="select", sources=["bird000"])  # bird000 is in the report half


@needs_real
def test_the_first_check_is_unchanged():
    cases = build_real_i2v_tests(ROOTS[0], sources=["bird000", "girl07"], corruptions=["occluder"], severities=(1.0,))
    assert [(c.id, c.family, c.folder) for c in cases] == [
        ("bird000/other_image/girl07", "other_image", "real-i2v"),
        ("bird000/occluder@1", "heldout", "real-i2v"),
        ("girl07/other_image/bird000", "other_image", "real-i2v"),
        ("girl07/occluder@1", "heldout", "real-i2v"),
    ]


@needs_real
def test_the_bench_runs_end_to_end(tmp_path):
    bench = Path(__file__).parents[1] / "benchmarks" / "bench_real_i2v.py"
    out = tmp_path / "results.json"
    args = ["--split", "select", "--sources", "girl3", "harry-rcnz1", "--corruptions", "mirror_drift", "content_roll"]
    args += ["--severities", "1", "--max-side", "48", "--num-frames", "4", "--metrics", "color-hist"]
    done = subprocess.run(
        [sys.executable, str(bench), *args, "--json-out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "split `select`" in done.stdout and "| `metric:color-hist` |" in done.stdout
    assert "| model | overall | other-image | held-out | structural | mirror_drift | content_roll |" in done.stdout
    results = json.loads(out.read_text())
    assert results["split"] == "select" and set(results["models"]) == {"metric:color-hist"}
    assert results["models"]["metric:color-hist"]["n_cases"] == 2 * (1 + 2)  # each the other one as other video
