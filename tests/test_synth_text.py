"""Prompts written from what synth rendered, the text and motion failure modes, their labels, and the camera set."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icreward import prompts
from icreward.cli import main
from icreward.rules import label_from_scores
from icreward.synth import FAILURE_MODES, SynthConfig, generate
from icreward.synth import describe as ds
from icreward.synth import real_sources as rs
from icreward.synth.camera_set import build_camera_set, camera_trajectory
from icreward.synth.failures import MOTION_MODES, TEXT_MODES, WAVE1_MODES, motion_score, render_described, render_video
from icreward.synth.frame_failures import pingpong_index, stutter_index
from icreward.synth.motion import render_consistent, render_image, sample_trajectory, still_trajectory
from icreward.synth.plan import plan_sources
from icreward.synth.scenes import MARGIN, Scene, Sprite, procedural_scene

needs_library = pytest.mark.skipif(
    not rs.real_imagery_available(), reason=f"real imagery not installed (Debian packages: {rs.INSTALL_COMMAND})"
)
MOVING = [m for m in prompts.CAMERA_MOVES if m != "static"]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- conventions, proven by rendering


def _dots_scene(size: int = 64, depth: float = 1.0) -> Scene:
    """A black canvas with two white dots (left and right of the centre) and an invisible subject."""
    side = 160
    canvas = torch.zeros(3, side, side)
    for cx in (-0.5, 0.5):  # frame units; the canvas spans [-MARGIN, MARGIN]
        px, py = round((cx / MARGIN + 1) / 2 * side), side // 2
        canvas[:, py - 3 : py + 3, px - 3 : px + 3] = 1.0
    nothing = Sprite(torch.zeros(4, 8, 8), 0.0, 0.0, 0.1, 0.0, 1.0)
    return Scene(canvas, MARGIN, depth, nothing, [], size, (0.0, 0.0, 1.0))


def _dots(frame: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (x, y) in frame units of the bright blobs left and right of the frame's middle column."""
    grey = frame.mean(0).numpy()
    size = grey.shape[-1]
    ys, xs = np.nonzero(grey > 0.3)
    pts = np.stack([(xs + 0.5) / size * 2 - 1, (ys + 0.5) / size * 2 - 1], 1)
    left, right = pts[pts[:, 0] < 0], pts[pts[:, 0] >= 0]
    return left.mean(0), right.mean(0)


def _measured(frames: torch.Tensor) -> tuple[float, float, float]:
    """Content motion (dx, dy, log zoom) between the first and the last frame, from the two dots."""
    (l0, r0), (l1, r1) = _dots(frames[0]), _dots(frames[-1])
    shift = (l1 + r1) / 2 - (l0 + r0) / 2
    return float(shift[0]), float(shift[1]), float(np.log(np.linalg.norm(r1 - l1) / np.linalg.norm(r0 - l0)))


@pytest.mark.parametrize("move", prompts.CAMERA_MOVES)
def test_camera_moves_move_the_content_as_prompts_say(move):
    """camera[:, 0] up = the camera moves right = content moves left ("camera pans right"); camera[:, 1] up = tilt
    down = content moves up; camera[:, 2] (log zoom) up = zoom in = content grows: measured on rendered frames."""
    scene = _dots_scene()
    frames = render_consistent(scene, camera_trajectory(scene, move, 6))
    measured = _measured(frames)
    expected = prompts.CAMERA_EFFECT[move]
    for value, sign, size in zip(
        measured, expected, (ds.CANONICAL_PAN, ds.CANONICAL_PAN, ds.CANONICAL_ZOOM), strict=True
    ):
        if sign == 0:
            assert abs(value) < 0.03
        else:
            assert np.sign(value) == sign and abs(value - sign * size) < 0.05 * 2  # the documented magnitude
    traj = camera_trajectory(scene, move, 6)
    assert ds.camera_class(ds.content_motion(traj.camera, scene.bg_depth)) == move


def test_content_motion_follows_parallax_depth():
    camera = ds.canonical_camera("pan_right", 5)
    far, near = _dots_scene(depth=0.5), _dots_scene(depth=1.0)
    dx_far = _measured(render_consistent(far, camera_trajectory(far, "pan_right", 5)))[0]
    dx_near = _measured(render_consistent(near, camera_trajectory(near, "pan_right", 5)))[0]
    assert dx_far == pytest.approx(ds.content_motion(camera, 0.5)[0], abs=0.03)
    assert dx_near == pytest.approx(2 * dx_far, abs=0.04)


@pytest.mark.parametrize("direction", prompts.SUBJECT_DIRECTIONS)
def test_subject_direction_is_its_motion_in_the_frame(direction):
    white = torch.ones(4, 16, 16)
    subject = Sprite(white, 0.0, 0.0, 0.1, 0.0, 1.0)
    scene = Scene(torch.zeros(3, 160, 160), MARGIN, 1.0, subject, [], 48, (0.0, 0.0, 1.0))
    traj = still_trajectory(scene, 5)
    dx, dy = prompts.SUBJECT_EFFECT[direction]
    traj.subject = np.outer(np.linspace(0, 1, 5), [0.3 * dx, 0.3 * dy, 0, 0])
    frames = render_consistent(scene, traj)
    centre = [np.argwhere(f.mean(0).numpy() > 0.5).mean(0)[::-1] for f in (frames[0], frames[-1])]  # (x, y) pixels
    moved = centre[1] - centre[0]
    assert np.sign(moved[0]) == np.sign(dx) or dx == 0
    assert np.sign(moved[1]) == np.sign(dy) or dy == 0
    assert ds.subject_direction(traj.subject) == direction


def test_thresholds_dominance_and_static():
    assert ds.camera_class((0.01, -0.02, 0.03)) == "static"
    assert ds.camera_class((-0.2, 0.0, 0.1)) == "pan_right"  # content left: the camera pans right
    assert ds.camera_matches("pan_right", (-0.2, 0.0, 0.1))
    assert ds.camera_matches("zoom_in", (-0.2, 0.0, 0.15))  # co-dominant (0.15 * 1.5 >= 0.2)
    assert not ds.camera_matches("zoom_in", (-0.2, 0.0, 0.1))
    assert not ds.camera_matches("zoom_out", (-0.2, 0.0, 0.15))  # wrong sign
    assert not ds.camera_matches("static", (-0.2, 0.0, 0.0)) and ds.camera_matches("static", (0.02, 0, 0))
    assert ds.subject_direction(np.array([[0, 0, 0, 0], [0.04, -0.02, 0, 0]])) is None
    assert ds.subject_direction(np.array([[0, 0, 0, 0], [0.04, -0.08, 0, 0]])) == "up"


# ---- prompts parse back


def _parses(prompt: str, move: str, direction: str | None) -> None:
    assert prompts.camera_move(prompt) == move, prompt
    assert prompts.subject_direction(prompt) == direction, prompt


def test_every_wording_parses_back():
    rng = np.random.default_rng(0)
    subjects = [ds.sprite_phrase(Sprite(torch.rand(4, 8, 8), 0, 0, 0.1, 0, 1, kind=k)) for k in ds.SHAPE_WORDS]
    subjects += list(rs.CLIP_CAPTIONS.values()) + list(rs.PHOTO_CAPTIONS.values()) + ["the scene"]
    subjects += [ds.sprite_phrase(Sprite(torch.rand(4, 8, 8), 0, 0, 0.1, 0, 1, name=rs.emoji_name(c)))
                 for chars in rs.emoji_library().values() for c in chars]  # fmt: skip
    for subject in subjects:
        for move in prompts.CAMERA_MOVES:
            for direction in (None, *prompts.SUBJECT_DIRECTIONS):
                for named in (True, False):
                    _parses(ds.prompt_text(subject, direction, move, rng, named=named), move, direction)


# ---- motion failures


def _scene_traj(seed: int = 3, size: int = 48, frames: int = 8):
    rng = np.random.default_rng(seed)
    scene = procedural_scene(rng, size)
    return scene, sample_trajectory(rng, scene, frames)


def test_motion_failures_keep_frame_zero_and_their_paths():
    scene, traj = _scene_traj()
    consistent = render_consistent(scene, traj)
    for mode in MOTION_MODES:
        frames, shown = render_described(scene, traj, mode, 0.8, np.random.default_rng(1))
        torch.testing.assert_close(frames[0], render_image(scene), atol=1e-4, rtol=0)
        torch.testing.assert_close(frames, render_video(scene, traj, mode, 0.8, np.random.default_rng(1)))
        assert FAILURE_MODES[mode].applies("clip") and FAILURE_MODES[mode].motion_weight > 0
    jitter, shown = render_described(scene, traj, "jitter", 1.0, np.random.default_rng(1))
    assert not np.any(shown.camera) and not np.any(shown.subject)  # shaken in place: no net path
    assert (jitter[1:] - jitter[0]).abs().mean() > 1e-3  # but it shakes
    index = pingpong_index(8, 1.0)
    assert list(index) == [0, 1, 2, 3, 4, 3, 2, 1]  # to the middle and back
    pp, _ = render_described(scene, traj, "pingpong", 1.0, np.random.default_rng(1))
    torch.testing.assert_close(pp[5], consistent[3])
    runs = stutter_index(16, 1.0, np.random.default_rng(0))
    assert runs[0] == 0 and all(b in (a, i) for i, (a, b) in enumerate(zip(runs[:-1], runs[1:], strict=True), 1))
    assert len(set(runs.tolist())) < 16


def test_motion_and_text_scores():
    assert motion_score("none", 0) == 1 and motion_score("frozen", 0) == 0
    assert motion_score("jitter", 1.0) == pytest.approx(1 - FAILURE_MODES["jitter"].motion_weight)
    assert all(motion_score(m, 0.7) == 1 for m in WAVE1_MODES if m != "frozen")  # old modes: moving or frozen
    source = {"camera": "pan_left", "camera_motion": [0.2, 0, 0], "subject_motion": "up", "subject_named": True}
    video = dict(source)
    assert ds.text_score(video, source, "none", 0) == 1
    assert ds.text_score({**video, "camera_motion": [-0.2, 0, 0]}, source, "none", 0) == 0  # wrong camera
    assert ds.text_score({**video, "subject_motion": None}, source, "none", 0) == 0  # missing motion
    assert ds.text_score({**video, "subject_motion": "down"}, source, "none", 0) == 0.5  # wrong direction
    assert (
        ds.text_score(video, source, "subject_swap", 0.6) == 0
        and ds.text_score(video, source, "subject_swap", 0.2) == 0.6
    )
    silent = {**source, "subject_motion": None}
    assert ds.text_score({**video, "subject_motion": "left"}, silent, "none", 0) == 1  # prompt asks no subject motion


# ---- text failures render from v0's trajectory


def test_text_failures_change_only_what_the_prompt_talks_about():
    for seed in range(6):
        scene, traj = _scene_traj(seed)
        asked = ds.camera_class(ds.content_motion(traj.camera, scene.bg_depth))
        frames, shown = render_described(scene, traj, "camera_mismatch", 1.0, np.random.default_rng(seed))
        got = ds.camera_class(ds.content_motion(shown.camera, scene.bg_depth))
        assert got != asked and got != "static" and (asked == "static" or got == prompts.OPPOSITE_MOVE[asked])
        np.testing.assert_array_equal(shown.subject, traj.subject)  # the subject's own path is kept
        torch.testing.assert_close(frames[0], render_image(scene), atol=1e-4, rtol=0)

        _, shown = render_described(scene, traj, "subject_opposite", 1.0, np.random.default_rng(seed))
        np.testing.assert_array_equal(shown.camera, traj.camera)
        wanted = ds.subject_direction(traj.subject)
        if wanted is not None:
            np.testing.assert_array_equal(shown.subject[:, :2], -traj.subject[:, :2])
            assert ds.subject_direction(shown.subject) == {"left": "right", "right": "left", "up": "down",
                                                           "down": "up"}[wanted]  # fmt: skip

        frames, shown = render_described(scene, traj, "motion_missing", 1.0, np.random.default_rng(seed))
        still = render_consistent(scene, replace(traj, camera=0 * traj.camera, subject=0 * traj.subject,
                                                 objects=0 * traj.objects, sway=0 * traj.sway))  # fmt: skip
        torch.testing.assert_close(frames, still)  # held still, light and grain go on


def test_camera_mismatch_content_moves_the_other_way():
    scene = _dots_scene()
    source = camera_trajectory(scene, "pan_left", 6)  # content moves right
    frames, _ = render_described(scene, source, "camera_mismatch", 1.0, np.random.default_rng(0))
    assert _measured(render_consistent(scene, source))[0] > 0.2 and _measured(frames)[0] < -0.2


# ---- benchmarks: manifests, labels, workers


TEXT_CONFIG = SynthConfig(n=6, frames=6, size=32, seed=5, modes=(*TEXT_MODES, *MOTION_MODES, "subject_swap"))


@pytest.fixture(scope="module")
def text_bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text") / "bench"
    generate(TEXT_CONFIG, out, workers=1, progress=False)
    return out


def _check_bench(out: Path, config: SynthConfig) -> None:
    videos = {v["id"]: v for v in _read_jsonl(out / "videos.jsonl")}
    for v in videos.values():
        _parses(v["prompt"], v["camera"], v["subject_motion"])
        assert v["overall_score"] == min(v["score"], v["motion_score"], v["text_score"])
        assert 0 <= v["text_score"] <= 1 and 0 <= v["motion_score"] <= 1
        first = videos[f"{v['source']}_v0"]
        assert first["text_score"] == 1 and first["motion_score"] == 1
        if v["mode"] == "camera_mismatch":
            assert v["text_score"] == 0 and v["camera"] != first["camera"]
        if v["mode"] == "subject_opposite" and first["subject_motion"] is not None:
            assert v["text_score"] == 0.5 and v["subject_motion"] != first["subject_motion"]
        if v["mode"] == "motion_missing":
            assert v["camera"] == "static" and v["subject_motion"] is None and v["motion"] == 0
            still_prompt = first["camera"] == "static" and first["subject_motion"] is None
            assert v["text_score"] == (1 if still_prompt else 0)
    for split in ("train", "val", "test"):
        for p in _read_jsonl(out / f"{split}.jsonl"):
            a, b = (videos[Path(p[k]).stem] for k in ("video_a", "video_b"))
            assert p["prompt"] == videos[f"{p['source']}_v0"]["prompt"]
            for dim, key in [("ic", "score"), ("motion", "motion_score"), ("text", "text_score"),
                             ("overall", "overall_score")]:  # fmt: skip
                assert p["labels"][dim] == label_from_scores(a[key], b[key], config.tie_margin)


def test_text_benchmark_prompts_scores_and_labels(text_bench):
    _check_bench(text_bench, TEXT_CONFIG)
    videos = _read_jsonl(text_bench / "videos.jsonl")
    modes = {v["mode"] for v in videos}
    assert set(TEXT_MODES) <= modes and set(MOTION_MODES) <= modes
    assert all(v["severity"] == 1 for v in videos if v["mode"] in TEXT_MODES)
    meta = json.loads((text_bench / "synth.json").read_text())
    assert meta["text_weights"]["camera_mismatch"] == 1 and meta["motion_weights"]["jitter"] == 0.9
    assert sum(meta["counts"]["pair_text_labels"]["test"].values()) == meta["counts"]["pairs"]["test"]


def test_text_failures_start_from_the_source_video(text_bench):
    videos = _read_jsonl(text_bench / "videos.jsonl")
    mismatch = next(v for v in videos if v["mode"] == "motion_missing")
    source = Path(mismatch["video"]).parent / f"{mismatch['source']}_v0.mp4"
    import av

    def first_frame(path):
        with av.open(str(text_bench / path)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)

    assert np.abs(first_frame(mismatch["video"]) - first_frame(source)).mean() < 4


@pytest.mark.slow
def test_text_benchmark_is_the_same_with_two_workers(text_bench, tmp_path):
    generate(TEXT_CONFIG, tmp_path / "two", workers=2, progress=False)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "videos.jsonl", "synth.json"):
        assert (tmp_path / "two" / name).read_bytes() == (text_bench / name).read_bytes()
    for video in sorted((text_bench / "videos").iterdir()):
        assert (tmp_path / "two" / "videos" / video.name).read_bytes() == video.read_bytes()


def test_default_modes_labels_are_unchanged(tmp_path):
    """Without the new modes, motion scores are 0 / 1, so labels.motion is the old moving-or-frozen label."""
    config = SynthConfig(n=4, frames=4, size=32, seed=2)
    generate(config, tmp_path / "b", workers=1, progress=False)
    _check_bench(tmp_path / "b", config)
    for p in _read_jsonl(tmp_path / "b" / "train.jsonl"):
        moving = [int(p[k] != "frozen") for k in ("mode_a", "mode_b")]
        assert p["labels"]["motion"] == label_from_scores(*moving, 0)
    assert {v.mode for p in plan_sources(config, []) for v in p.videos} <= {"none", *WAVE1_MODES}


@needs_library
def test_real_sources_get_prompts(tmp_path):
    config = SynthConfig(n=6, frames=4, size=32, seed=1, real_share=1.0, modes=tuple(FAILURE_MODES))
    generate(config, tmp_path / "r", workers=1, progress=False)
    _check_bench(tmp_path / "r", config)
    videos = _read_jsonl(tmp_path / "r" / "videos.jsonl")
    captions = set(rs.CLIP_CAPTIONS.values())
    clips = [v for v in videos if prompts.camera_move(v["prompt"]) == "static" and v["prompt"][:-15] in captions]
    assert clips and all(v["camera"] == "static" for v in clips)
    emoji = {ds.sprite_phrase(Sprite(torch.zeros(1), 0, 0, 0, 0, 1, name=rs.emoji_name(c)))
             for chars in rs.emoji_library().values() for c in chars}  # fmt: skip
    assert any(any(v["prompt"].startswith(e + " ") or v["prompt"].startswith(e + ",") for e in emoji) for v in videos)


def test_cli_mode_groups(tmp_path):
    from icreward.cli import build_parser
    from icreward.cli.synth import config_from_args

    args = build_parser().parse_args(["synth", "--out", str(tmp_path / "x"), "--modes", "text,motion,flicker"])
    assert config_from_args(args).modes == (*TEXT_MODES, *MOTION_MODES, "flicker")
    args = build_parser().parse_args(["synth", "--out", str(tmp_path / "x"), "--modes", "all"])
    assert set(TEXT_MODES) <= set(config_from_args(args).modes)
    assert main(["synth", "--out", str(tmp_path / "y"), "--modes", "jitter,camera_mismatch", "--n", "3",
                 "--frames", "4", "--size", "32", "--workers", "1", "--quiet"]) == 0  # fmt: skip
    assert {v["mode"] for v in _read_jsonl(tmp_path / "y" / "videos.jsonl")} <= {"none", "frozen", "jitter",
                                                                                  "camera_mismatch"}  # fmt: skip


# ---- camera set


def _check_camera_set(out: Path, n: int) -> None:
    videos, pairs = _read_jsonl(out / "videos.jsonl"), _read_jsonl(out / "pairs.jsonl")
    assert len(videos) == 7 * n and len(pairs) == 42 * n
    for v in videos:
        assert prompts.camera_move(v["prompt"]) == v["camera"] and (out / v["video"]).is_file()
        assert prompts.subject_direction(v["prompt"]) is None
    by_video = {v["video"]: v["camera"] for v in videos}
    for p in pairs:
        assert p["label"] == p["labels"]["text"] == "A"
        assert prompts.camera_move(p["prompt"]) == by_video[p["video_a"]] != by_video[p["video_b"]]
    assert {p["source"] for p in pairs} == {v["source"] for v in videos} and len({v["source"] for v in videos}) == n


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_camera_set_from_given_photos(tmp_path):
    rng = np.random.default_rng(0)
    photos = []
    for i in range(2):
        pixels = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
        photos.append(str(tmp_path / f"p{i}.png"))
        Image.fromarray(pixels).resize((80, 60), Image.Resampling.BICUBIC).save(photos[-1])
    first = build_camera_set(tmp_path / "a", photos=photos, size=32, frames=6)
    _check_camera_set(first, 2)
    again = build_camera_set(tmp_path / "b", photos=photos, size=32, frames=6)
    assert _files(first) == _files(again)


@needs_library
def test_camera_set_from_the_library(tmp_path):
    out = build_camera_set(tmp_path / "cams", n_photos=2, seed=1, size=32, frames=6)
    _check_camera_set(out, 2)
    meta = json.loads((out / "camera_set.json").read_text())
    assert set(meta["photos"]) <= {Path(p).name for p in rs.photo_library()["test"]}
    assert _files(out) == _files(build_camera_set(tmp_path / "again", n_photos=2, seed=1, size=32, frames=6))
