"""`icreward import`: VBench-I2V results, VideoAlign CSVs and generic score CSVs become manifests that load."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icreward.cli import main
from icreward.importers import ImportInputError, Issues, pairs_from_scores, read_vbench_results, score_rows
from icreward.importers.vbench import I2VInfo, video_prompt
from icreward.importers.videoalign import label_of
from icreward.manifest import load_manifest


def _video(path: Path, color: int = 100, frames: int = 3) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for t in range(frames):
            arr = np.full((16, 16, 3), (color + 10 * t) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _image(path: Path, color: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (color, color, color)).save(path)
    return path


def _write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- VBench-I2V


@pytest.fixture(scope="module")
def vbench(tmp_path_factory):
    """VBench-I2V files in the documented layouts: info, two results files, videos, images (1-1 crop folder)."""
    root = tmp_path_factory.mktemp("vbench")
    _image(root / "crop" / "1-1" / "a cat.jpg")
    _image(root / "crop" / "1-1" / "a beach.jpg", 200)
    for name in ("a cat-0", "a cat-1", "a beach-0", "a beach, camera pans left-0"):
        _video(root / "videos" / f"{name}.mp4")
    info = _write_json(
        root / "vbench2_i2v_full_info.json",
        [
            {"prompt_en": "a cat", "dimension": ["i2v_subject"], "image_type": "animal", "image_name": "a cat.jpg"},
            {
                "prompt_en": "a beach",
                "dimension": ["i2v_background"],
                "image_type": "scenery",
                "image_name": "a beach.jpg",
            },
            {"prompt_en": "a beach, camera pans left", "dimension": ["camera_motion"], "image_type": "scenery"},
        ],
    )
    elsewhere = "/data/run1/videos"  # where VBench saw the videos: only the file name is used
    results = {
        "i2v_subject": [
            0.9,
            [
                {"video_path": f"{elsewhere}/a cat-0.mp4", "video_results": 0.95, "image_path": "crop/1-1/a cat.jpg"},
                {"video_path": f"{elsewhere}/a cat-1.mp4", "video_results": 0.85, "image_path": "crop/1-1/a cat.jpg"},
            ],
        ],
        "i2v_background": [0.7, [{"video_path": f"{elsewhere}/a beach-0.mp4", "video_results": 0.7}]],
        "camera_motion": [
            1.0,
            {"pan_left": 1.0, "pan_right": float("nan")},
            [
                {
                    "video_path": f"{elsewhere}/a beach, camera pans left-0.mp4",
                    "video_results": 1.0,
                    "prompt_type": "pan_left",
                    "predict_type": ["pan_left"],
                }
            ],
        ],
        "dynamic_degree": [
            0.5,
            [
                {"video_path": f"{elsewhere}/a cat-0.mp4", "video_results": True},
                {"video_path": f"{elsewhere}/a cat-1.mp4", "video_results": False},
            ],
        ],
    }
    # json.dumps writes NaN as VBench's json.dump does (np.mean of an empty list)
    r1 = root / "R1_eval_results.json"
    r1.write_text(json.dumps(results), encoding="utf-8")
    r2 = _write_json(root / "R2_eval_results.json", {"i2v_subject": results["i2v_subject"]})
    return root, info, r1, r2


def _vbench_argv(root, info, results, out, *extra):
    return [
        "import",
        "vbench-i2v",
        "--info",
        str(info),
        "--results",
        *map(str, results),
        "--videos",
        str(root / "videos"),
        "--images",
        str(root / "crop" / "1-1"),
        "--out",
        str(out),
        *extra,
    ]


def test_vbench_i2v_end_to_end(vbench, tmp_path, capsys):
    root, info, r1, r2 = vbench
    out = tmp_path / "manifests"
    assert main(_vbench_argv(root, info, [r1, r2], out)) == 0
    summary = json.loads((out / "import.json").read_text())
    assert summary["dimensions"] == {"i2v_subject": 4, "i2v_background": 1, "camera_motion": 1, "dynamic_degree": 2}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["import.json", "i2v_subject.jsonl", "i2v_background.jsonl", "camera_motion.jsonl", "dynamic_degree.jsonl"]
    )

    subject = load_manifest(out / "i2v_subject.jsonl")
    assert subject.kind == "point"
    assert [r.id for r in subject] == ["R1/a cat-0", "R1/a cat-1", "R2/a cat-0", "R2/a cat-1"]
    first = subject[0]
    assert first.score == 0.95 and first.prompt == "a cat"
    assert first.image.resolve() == (root / "crop/1-1/a cat.jpg")
    assert first.video.resolve() == (root / "videos" / "a cat-0.mp4")
    assert first.extra["dimension"] == "i2v_subject" and first.extra["results"] == "R1_eval_results.json"
    assert first.extra["model"] == "R1" and first.extra["index"] == 0 and first.extra["image_type"] == "animal"
    raw = _read_jsonl(out / "i2v_subject.jsonl")[0]
    assert not Path(raw["image"]).is_absolute() and not Path(raw["video"]).is_absolute()
    assert "source" not in raw  # `source` names a record's source image in icreward (k-fold groups by it)

    # camera_motion: the 3-item layout; a camera prompt without an image of its own takes its caption's
    camera = load_manifest(out / "camera_motion.jsonl")
    (cam,) = camera.records
    assert cam.image.resolve() == root / "crop/1-1/a beach.jpg"
    assert cam.prompt == "a beach, camera pans left" and cam.score == 1.0
    assert cam.extra["prompt_type"] == "pan_left" and cam.extra["predict_type"] == ["pan_left"]

    # dynamic_degree: booleans become 1.0 / 0.0
    dynamic = load_manifest(out / "dynamic_degree.jsonl")
    assert [r.score for r in dynamic] == [1.0, 0.0]
    assert dynamic.score_range == (0.0, 1.0)

    # a second import into the same folder replaces the first
    assert main(_vbench_argv(root, info, [r2], out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["i2v_subject.jsonl", "import.json"]
    assert len(load_manifest(out / "i2v_subject.jsonl")) == 2


def test_vbench_missing_image_names_the_results_file_and_video(vbench, tmp_path, capsys):
    root, _, r1, _ = vbench
    info = _write_json(
        tmp_path / "info.json", [{"prompt_en": "a cat", "dimension": ["i2v_subject"], "image_name": "a cat.jpg"}]
    )
    out = tmp_path / "out"
    assert main(_vbench_argv(root, info, [r1], out)) == 2
    err = capsys.readouterr().err
    assert "icreward import: error:" in err and str(r1) in err
    assert "a beach-0.mp4" in err and 'the prompt "a beach" is not in' in err
    assert not out.exists()  # nothing written

    assert main(_vbench_argv(root, info, [r1], out, "--skip-bad")) == 0
    captured = capsys.readouterr()
    assert "skipped 2 entries" in captured.err
    assert "a beach-0.mp4" in captured.err and "a beach, camera pans left-0.mp4" in captured.err
    summary = json.loads((out / "import.json").read_text())
    assert summary["dimensions"] == {"i2v_subject": 2, "i2v_background": 0, "camera_motion": 0, "dynamic_degree": 2}
    assert len(summary["skipped"]) == 2
    assert not (out / "camera_motion.jsonl").exists()  # an empty manifest would not load
    assert len(load_manifest(out / "i2v_subject.jsonl")) == 2


def test_vbench_image_file_missing_and_video_missing(vbench, tmp_path, capsys):
    root, info, r1, _ = vbench
    results = _write_json(
        tmp_path / "R9_eval_results.json",
        {"i2v_subject": [0.5, [{"video_path": "a cat-7.mp4", "video_results": 0.5}]]},
    )
    assert main(_vbench_argv(root, info, [results], tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert str(results) in err and "video a cat-7.mp4" in err and "video not found" in err

    empty_images = tmp_path / "images"
    empty_images.mkdir()
    argv = _vbench_argv(root, info, [r1], tmp_path / "out2")
    argv[argv.index("--images") + 1] = str(empty_images)
    assert main(argv) == 2
    assert "image not found" in capsys.readouterr().err


def test_vbench_results_layouts(tmp_path):
    three = _write_json(tmp_path / "a.json", {"camera_motion": [0.5, {"static": 0.5}, [{"video_path": "x-0.mp4"}]]})
    assert read_vbench_results(three) == {"camera_motion": [{"video_path": "x-0.mp4"}]}
    bad = _write_json(tmp_path / "b.json", {"i2v_subject": 0.5})
    with pytest.raises(ImportInputError, match=r'b\.json \(dimension "i2v_subject"\): expected \[aggregate'):
        read_vbench_results(bad)
    broken = tmp_path / "c.json"
    broken.write_text("{\n  oops", encoding="utf-8")
    with pytest.raises(ImportInputError, match=r"c\.json \(line 2\): malformed JSON"):
        read_vbench_results(broken)


def test_vbench_names_and_info():
    assert video_prompt("/x/A teddy bear is climbing over a wooden fence.-3.mp4") == (
        "A teddy bear is climbing over a wooden fence.",
        3,
    )
    assert video_prompt("a-b-c.mp4") == ("a-b-c", None)
    assert video_prompt("a-b-12.mp4") == ("a-b", 12)
    assert video_prompt("plain.mp4") == ("plain", None)
    info = I2VInfo(Path("info.json"), {"x y": "x y.jpg"})
    assert info.image_for("x y, camera zooms out") == "x y.jpg"
    assert info.image_for("x y, camera spins") is None


# ---- VideoAlign


VA_HEADER = [
    "path_A",
    "path_B",
    "A_model",
    "B_model",
    "prompt",
    "fps_A",
    "num_frames_A",
    "fps_B",
    "num_frames_B",
    "VQ",
    "MQ",
    "TA",
    "Overall",
]


@pytest.fixture(scope="module")
def videoalign(tmp_path_factory):
    root = tmp_path_factory.mktemp("videoalign")
    for i, name in enumerate(("m1/0.mp4", "m2/0.mp4", "m1/1.mp4", "m2/1.mp4")):
        _video(root / "videos" / name, 40 * i)
    _image(root / "img" / "0.png")
    _image(root / "img" / "1.png")
    rows = [
        ["videos/m1/0.mp4", "videos/m2/0.mp4", "m1", "m2", "a dog runs", 8, 3, 8, 3, "A", "same", "B", "A"],
        ["videos/m1/1.mp4", "videos/m2/1.mp4", "m1", "m2", "a cat", 8, 3, 24, 3, "B", "B", "A", "same"],
        ["videos/m1/1.mp4", "videos/m1/0.mp4", "m1", "m1", "both", 8, 3, 8, 3, "N/A", "", "ignore", "-"],
    ]
    bench = _write_csv(root / "VideoGen-RewardBench.csv", VA_HEADER, rows)
    with_image = _write_csv(
        root / "with_image.csv", [*VA_HEADER, "image"], [r + [f"img/{i % 2}.png"] for i, r in enumerate(rows)]
    )
    return root, bench, with_image


def test_videoalign_with_image_column(videoalign, tmp_path, capsys):
    root, _, with_image = videoalign
    out = tmp_path / "va.jsonl"
    assert main(["import", "videoalign", "--csv", str(with_image), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "left out 1 row(s) with no A/B/same label" in captured.err
    m = load_manifest(out, require_labels=True)
    assert m.kind == "pair" and len(m) == 2
    one, two = m.records
    assert one.id == "with_image-1" and two.id == "with_image-2"
    assert one.labels == {"vq": "A", "motion": "tie", "text": "B", "overall": "A"}
    assert one.label == "A" and two.label == "tie"  # Overall; same -> tie
    assert two.labels == {"vq": "B", "motion": "B", "text": "A", "overall": "tie"}
    assert one.prompt == "a dog runs"
    assert one.extra["A_model"] == "m1" and one.extra["B_model"] == "m2"
    assert two.extra["fps_B"] == 24 and two.extra["num_frames_A"] == 3
    assert one.image.resolve() == root / "img" / "0.png"
    assert one.video_a.resolve() == root / "videos/m1/0.mp4" and one.video_b.resolve() == root / "videos/m2/0.mp4"


def test_videoalign_needs_an_image(videoalign, tmp_path, capsys):
    _, bench, _ = videoalign
    out = tmp_path / "va.jsonl"
    assert main(["import", "videoalign", "--csv", str(bench), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bench) in err and "no image column" in err and "--image-from first-frame" in err
    assert not out.exists()


def test_videoalign_first_frame(videoalign, tmp_path, capsys):
    _, bench, _ = videoalign
    out = tmp_path / "va.jsonl"
    assert main(["import", "videoalign", "--csv", str(bench), "--out", str(out), "--image-from", "first-frame"]) == 0
    m = load_manifest(out)
    assert len(m) == 2
    for record in m:
        assert record.image == tmp_path / "images" / f"{record.id}.png"
        assert record.extra["image_from"] == "first frame of video_a"
        with Image.open(record.image) as img:
            assert img.size == (16, 16)
    assert _read_jsonl(out)[0]["image"] == "images/VideoGen-RewardBench-1.png"


def test_videoalign_training_csv(tmp_path, capsys):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        _video(tmp_path / name)
    _image(tmp_path / "i.png")
    header = ["path_A", "path_B", "prompt", "image", "VQ", "MQ", "TA", "MOS_A_VQ", "MOS_B_VQ", "MOS_A_MQ", "MOS_B_MQ"]
    rows = [
        ["a.mp4", "b.mp4", "p", "i.png", "A", "unsure", "same", 3.5, 2.0, 4, 4],
        ["b.mp4", "c.mp4", "p", "i.png", "x", "B", "y", "", "", 1, 2],
    ]
    train = _write_csv(tmp_path / "data" / "train.csv", header, rows)
    # paths relative to --videos-root, not the CSV's folder
    out = tmp_path / "out" / "train.jsonl"
    argv = ["import", "videoalign", "--csv", str(train), "--out", str(out), "--videos-root", str(tmp_path)]
    assert main(argv) == 0
    m = load_manifest(out)
    one, two = m.records
    assert one.label is None and two.label is None  # no Overall: per-dimension labels only
    assert one.labels == {"vq": "A", "text": "tie"}  # "unsure" on MQ: ignored
    assert two.labels == {"motion": "B"}
    assert one.extra["score_a_vq"] == 3.5 and one.extra["score_b_vq"] == 2.0 and one.extra["score_a_motion"] == 4
    assert "score_a_vq" not in two.extra and two.extra["score_b_motion"] == 2
    assert one.score_a is None  # MOS never become score_a / score_b (a label would be derived from them)

    assert main([*argv, "--label", "motion"]) == 0
    m = load_manifest(out)
    assert [r.label for r in m] == [None, "B"]
    assert main([*argv, "--label", "overall"]) == 2
    assert "--label overall: the CSV has no such dimension" in capsys.readouterr().err


def test_videoalign_bad_rows(tmp_path, capsys):
    _video(tmp_path / "a.mp4")
    _image(tmp_path / "i.png")
    rows = [["a.mp4", "missing.mp4", "i.png", "A"], ["a.mp4", "a.mp4", "i.png", "B"], ["a.mp4", "a.mp4", "", "A"]]
    bad = _write_csv(tmp_path / "bad.csv", ["path_A", "path_B", "image", "Overall"], rows)
    out = tmp_path / "o.jsonl"
    assert main(["import", "videoalign", "--csv", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} (line 2): video not found" in err and "missing.mp4" in err
    assert main(["import", "videoalign", "--csv", str(bad), "--out", str(out), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 entries" in err and "(line 4): empty image cell" in err
    assert [r.label for r in load_manifest(out)] == ["B"]
    assert main(["import", "videoalign", "--csv", str(bad), "--out", str(bad)]) == 2
    assert "--out" in capsys.readouterr().err


def test_label_words():
    assert [label_of(x) for x in ("A", "b", "same", " Same ", "tie", "N/A", "", None)] == [
        "A",
        "B",
        "tie",
        "tie",
        "tie",
        None,
        None,
        None,
    ]


# ---- generic scores CSV


@pytest.fixture()
def scores_csv(tmp_path):
    for name in ("v1", "v2", "v3", "w1", "w2"):
        _video(tmp_path / "v" / f"{name}.mp4")
    _image(tmp_path / "img1.png")
    _image(tmp_path / "img2.png")
    rows = [
        ["img1.png", "v/v1.mp4", 0.9, "p"],
        ["img1.png", "v/v2.mp4", 0.5, "p"],
        ["img1.png", "v/v3.mp4", 0.55, "p"],
        ["img2.png", "v/w1.mp4", 0.1, "q"],
        ["img2.png", "v/w2.mp4", 0.2, "other prompt"],
    ]
    return _write_csv(tmp_path / "scores.csv", ["image", "video", "score", "prompt"], rows)


def test_scores_pairs(scores_csv, tmp_path, capsys):
    out = tmp_path / "out" / "pairs.jsonl"
    argv = ["import", "scores", "--csv", str(scores_csv), "--out", str(out), "--margin", "0.1"]
    assert main(argv) == 0
    m = load_manifest(out, require_labels=True)
    assert m.kind == "pair"
    got = {r.id: (r.label, r.score_a, r.score_b) for r in m}
    assert got == {  # img2's two videos have different prompts: no pair
        "v/v1.mp4~v/v2.mp4": ("A", 0.9, 0.5),
        "v/v1.mp4~v/v3.mp4": ("A", 0.9, 0.55),
        "v/v2.mp4~v/v3.mp4": ("tie", 0.5, 0.55),
    }
    assert all(r.image.resolve() == tmp_path / "img1.png" for r in m)
    assert m[0].extra["tie_margin"] == 0.1


def test_scores_pointwise_and_groups(scores_csv, tmp_path):
    out = tmp_path / "points.jsonl"
    assert main(["import", "scores", "--csv", str(scores_csv), "--out", str(out), "--pointwise"]) == 0
    m = load_manifest(out, require_labels=True)
    assert m.kind == "point" and [r.score for r in m] == [0.9, 0.5, 0.55, 0.1, 0.2]

    points = [
        {"id": "a", "image": "i.png", "video": "a.mp4", "score": 1.0, "group": "g"},
        {"id": "b", "image": "i.png", "video": "b.mp4", "score": 2.0, "group": "g"},
        {"id": "c", "image": "i.png", "video": "c.mp4", "score": 2.0, "group": "h"},
    ]
    (pair,) = pairs_from_scores(points)
    assert pair["id"] == "a~b" and pair["label"] == "B" and pair["group"] == "g"


def test_scores_bad_rows(tmp_path, capsys):
    _video(tmp_path / "a.mp4")
    _video(tmp_path / "b.mp4")
    _image(tmp_path / "i.png")
    rows = [["i.png", "a.mp4", "0.5"], ["i.png", "b.mp4", "high"], ["i.png", "c.mp4", "0.1"]]
    bad = _write_csv(tmp_path / "s.csv", ["image", "video", "score"], rows)
    with pytest.raises(ImportInputError, match=r"s\.csv \(line 3\): score must be a finite number"):
        score_rows(bad, tmp_path / "o.jsonl")
    issues = Issues(skip_bad=True)
    assert [r["id"] for r in score_rows(bad, tmp_path / "o.jsonl", issues)] == ["a.mp4"]
    assert len(issues.skipped) == 2 and "c.mp4" in issues.lines()[1]
    assert main(["import", "scores", "--csv", str(bad), "--out", str(tmp_path / "o.jsonl"), "--skip-bad"]) == 2
    assert "nothing to import" in capsys.readouterr().err  # one valid row makes no pair
    missing = _write_csv(tmp_path / "m.csv", ["image", "video"], [["i.png", "a.mp4"]])
    with pytest.raises(ImportInputError, match=r"m\.csv \(line 1\): missing column score"):
        score_rows(missing, tmp_path / "o.jsonl")


@pytest.mark.parametrize("argv", [["import", "--help"], ["import", "vbench-i2v", "--help"]])
def test_import_help_does_not_import_torch(argv):
    code = (
        "import sys\nfrom icreward.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'av') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "HEAVY []" in out, out[-500:]
