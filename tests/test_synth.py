"""`icreward synth`: the real entry point on tiny settings, the data contract, determinism, and the failure modes."""

import json
import re
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from icreward.cli import main
from icreward.synth import FAILURE_MODES, SynthConfig, default_benchmark, render_video
from icreward.synth.dataset import BENCHMARK_NAME, SYNTH_VERSION, config_hash
from icreward.synth.failures import MOTION_MODES, TEXT_MODES
from icreward.synth.motion import render_image, sample_trajectory
from icreward.synth.plan import plan_sources
from icreward.synth.scenes import photo_scene, procedural_scene

TINY = ["--n", "8", "--frames", "8", "--size", "64"]
SPLITS = ("train", "val", "test")
PAIR_KEYS = {"id", "image", "video_a", "video_b", "label", "labels", "score_a", "score_b", "mode_a", "mode_b",
             "severity_a", "severity_b", "source", "prompt"}  # fmt: skip
VIDEO_KEYS = {"id", "image", "video", "score", "mode", "severity", "motion", "split", "source",
              "prompt", "camera", "subject_motion", "motion_score", "text_score", "overall_score"}  # fmt: skip


def _synth(out: Path, *extra: str) -> int:
    return main(["synth", "--out", str(out), *TINY, *extra])


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _compare(a: float, b: float, margin: float) -> str:
    return "A" if a - b > margin else "B" if b - a > margin else "tie"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    assert _synth(out, "--seed", "3", "--workers", "1") == 0
    return out


def test_files_follow_the_contract(bench):
    meta = json.loads((bench / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["frames"] == 8 and meta["synth_version"] == SYNTH_VERSION
    videos = _read_jsonl(bench / "videos.jsonl")
    assert all(set(v) == VIDEO_KEYS for v in videos)
    sources = {split: set() for split in SPLITS}
    for v in videos:
        assert (bench / v["image"]).is_file() and (bench / v["video"]).is_file()
        assert not Path(v["video"]).is_absolute()
        assert 0 <= v["score"] <= 1 and v["motion"] == int(v["mode"] != "frozen")
        sources[v["split"]].add(v["source"])
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not sources[a] & sources[b], f"a source image in both {a} and {b}"
    for split in SPLITS:
        pairs = _read_jsonl(bench / f"{split}.jsonl")
        assert len(pairs) == meta["counts"]["pairs"][split] > 0
        for p in pairs:
            assert set(p) == PAIR_KEYS and p["source"] in sources[split]
            assert (bench / p["video_a"]).is_file() and (bench / p["video_b"]).is_file()
            assert p["label"] == p["labels"]["ic"] == _compare(p["score_a"], p["score_b"], 0.05)
            motion_a, motion_b = (int(p[k] != "frozen") for k in ("mode_a", "mode_b"))
            assert p["labels"]["motion"] == _compare(motion_a, motion_b, 0)
    frames = _decode(bench / videos[0]["video"])
    assert frames.shape == (8, 64, 64, 3)
    assert Image.open(bench / videos[0]["image"]).size == (64, 64)


def test_first_frame_of_a_consistent_video_is_the_image(bench):
    video = next(v for v in _read_jsonl(bench / "videos.jsonl") if v["mode"] == "none")
    image = np.asarray(Image.open(bench / video["image"]), dtype=np.float32)
    first = _decode(bench / video["video"])[0].astype(np.float32)
    assert np.abs(image - first).mean() / 255 < 0.03  # H.264 loss only


@pytest.fixture(scope="module")
def bench_two_workers(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "again"
    assert _synth(out, "--seed", "3", "--workers", "2") == 0
    return out


@pytest.mark.slow
def test_same_seed_same_manifests_and_images_with_two_workers(bench, bench_two_workers):
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "videos.jsonl", "synth.json"):
        assert (bench_two_workers / name).read_bytes() == (bench / name).read_bytes()
    for image in sorted((bench / "images").iterdir()):
        assert (bench_two_workers / "images" / image.name).read_bytes() == image.read_bytes()


@pytest.mark.slow
def test_same_seed_same_video_pixels_with_two_workers(bench, bench_two_workers):
    for v in _read_jsonl(bench / "videos.jsonl"):
        np.testing.assert_array_equal(_decode(bench_two_workers / v["video"]), _decode(bench / v["video"]))


def test_different_seed_different_data(bench, tmp_path):
    out = tmp_path / "other"
    assert _synth(out, "--seed", "4", "--workers", "1") == 0
    assert (out / "videos.jsonl").read_bytes() != (bench / "videos.jsonl").read_bytes()
    image = "images/img00000.png"
    assert not np.array_equal(np.asarray(Image.open(out / image)), np.asarray(Image.open(bench / image)))


def test_holdout_modes_only_in_test(tmp_path):
    out = tmp_path / "holdout"
    assert _synth(out, "--holdout-modes", "flicker,subject_vanish", "--workers", "1") == 0
    videos = _read_jsonl(out / "videos.jsonl")
    held = {"flicker", "subject_vanish"}
    assert not held & {v["mode"] for v in videos if v["split"] != "test"}
    assert held <= {v["mode"] for v in videos if v["split"] == "test"}
    test_pairs = _read_jsonl(out / "test.jsonl")
    assert held <= {p["mode_a"] for p in test_pairs} | {p["mode_b"] for p in test_pairs}


def test_unknown_holdout_mode_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "bad"
    assert _synth(out, "--holdout-modes", "flicker,melting") == 2
    err = capsys.readouterr().err
    assert "melting" in err and "subject_drift" in err and "frozen" in err
    assert not out.exists()


def test_a_crash_leaves_no_dataset(tmp_path, monkeypatch):
    out = tmp_path / "crash"
    calls = []

    def broken(frames, severity, rng):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("injected fault")
        return frames

    for name, mode in FAILURE_MODES.items():
        monkeypatch.setitem(FAILURE_MODES, name, replace(mode, scope="frames", fn=broken))
    with pytest.raises(RuntimeError, match="injected fault"):
        _synth(out, "--workers", "1")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written .partial folder either


@pytest.mark.slow
def test_user_photos_as_sources(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(90, 60), (50, 120), (80, 80), (200, 100)]):
        pixels = (rng.random((h // 10 + 1, w // 10 + 1, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((w, h), Image.Resampling.BICUBIC).save(photos / f"p{i}.jpg")
    args = ["--images", str(photos), "--n", "6", "--frames", "4", "--size", "32"]
    assert main(["synth", "--out", str(tmp_path / "photo_bench"), *args, "--workers", "1"]) == 0
    videos = _read_jsonl(tmp_path / "photo_bench" / "videos.jsonl")
    assert len(videos) == 36 and {v["split"] for v in videos} == set(SPLITS)
    assert _decode(tmp_path / "photo_bench" / videos[0]["video"]).shape == (4, 32, 32, 3)

    (photos / "p9.png").write_bytes(b"not an image")  # an unreadable photo, met in a worker process
    assert main(["synth", "--out", str(tmp_path / "broken"), *args, "--workers", "2"]) == 2
    assert "p9.png" in capsys.readouterr().err and not (tmp_path / "broken").exists()


def _scene_and_trajectory(seed: int, photo: bool = False):
    rng = np.random.default_rng(seed)
    if photo:
        image = torch.rand(3, 90, 140)
        scene = photo_scene(rng, image, 64, alternate=torch.rand(3, 70, 70))
    else:
        scene = procedural_scene(rng, 64)
    return scene, sample_trajectory(rng, scene, 8)


SCENE_MODES = [m for m, f in FAILURE_MODES.items() if f.applies("scene")]


@pytest.mark.parametrize("photo", [False, True])
@pytest.mark.parametrize("mode", ["none", *SCENE_MODES])
def test_every_mode_renders(mode, photo):
    scene, traj = _scene_and_trajectory(11, photo)
    frames = render_video(scene, traj, mode, 0.7, np.random.default_rng(0))
    assert frames.shape == (8, 3, 64, 64) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    if mode != "first_frame_mismatch":  # I2V pins frame 0 to the image
        torch.testing.assert_close(frames[0], render_image(scene), atol=1e-4, rtol=0)


def test_frozen_is_static_and_none_moves():
    scene, traj = _scene_and_trajectory(5)
    frozen = render_video(scene, traj, "frozen", 1.0, np.random.default_rng(0))
    assert all(torch.equal(frozen[0], f) for f in frozen)
    moving = render_video(scene, traj, "none", 0.0, np.random.default_rng(0))
    assert (moving[-1] - moving[0]).abs().mean() > 1e-3


# Motion and text failures keep the content faithful (their own tests: tests/test_synth_text.py).
@pytest.mark.parametrize("mode", [m for m in SCENE_MODES if m not in ("frozen", *MOTION_MODES, *TEXT_MODES)])
def test_failure_grows_with_severity_and_over_time(mode):
    for seed in range(3):
        scene, traj = _scene_and_trajectory(seed)
        consistent = render_video(scene, traj, "none", 0.0, np.random.default_rng(0))
        mild, strong = (  # damage per frame (T,), with the same RNG draws at both severities
            (render_video(scene, traj, mode, severity, np.random.default_rng(100 + seed)) - consistent)
            .abs()
            .mean((1, 2, 3))
            for severity in (0.3, 0.95)
        )
        assert strong.mean() > mild.mean() > 0
        if mode == "first_frame_mismatch":
            assert strong[0] > 0.005  # wrong from the very first frame
        else:
            assert strong[0] < 1e-4 and strong[-1] > strong[1] and strong[-1] > 0.002


def test_default_plan_sizes_and_balance():
    config = SynthConfig()
    plans = plan_sources(config, [])
    pairs = {s: [(p.videos[i], p.videos[j]) for p in plans if p.split == s for i, j in p.pairs] for s in SPLITS}
    assert len(pairs["train"]) >= 300 and len(pairs["test"]) >= 300 and len(pairs["val"]) > 0
    labels = [
        "A" if a.score - b.score > config.tie_margin else "B" if b.score - a.score > config.tie_margin else "tie"
        for split in SPLITS
        for a, b in pairs[split]
    ]
    assert min(labels.count(k) for k in ("A", "B", "tie")) > 0.1 * len(labels)
    assert any(a.severity > 0 and b.severity > 0 for a, b in pairs["train"])  # two failures compared
    modes = [v.mode for p in plans for v in p.videos]
    counts = [modes.count(m) for m in config.failure_modes() if m != "frozen"]
    assert min(counts) >= 0.85 * max(counts)  # every failure mode covered evenly
    severities = [v.severity for p in plans for v in p.videos if v.severity > 0]
    assert min(severities) < 0.2 and max(severities) > 0.95


def test_default_benchmark_is_reused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICREWARD_CACHE", str(tmp_path))
    cached = tmp_path / f"{BENCHMARK_NAME}-v{SYNTH_VERSION}-{config_hash(SynthConfig())[:8]}"
    cached.mkdir()
    (cached / "synth.json").write_text("{}")
    assert default_benchmark() == cached
    assert re.fullmatch(r"icbench-synth-v\d+-[0-9a-f]{8}", cached.name)
