"""Nothing lost, nothing hangs: every user error of the command line is one line on stderr and exit code 2, refused
before any work, leaving nothing behind; outputs never replace what their command did not write; a train killed
before its first save does not lock its folder; long commands show progress unless --quiet."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icreward import media
from icreward.atomic import atomic_dir
from icreward.cli import common, main
from icreward.media import write_video
from icreward.models import build_model, load_checkpoint

COLOR = ["--model", "metric:color-hist"]
MISSING_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"  # no such device here


@pytest.fixture()
def d(tmp_path) -> Path:
    """A tiny image, video, pointwise and pair manifests, a folder of photos, a foreign folder and a FIFO."""
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    write_video(tmp_path / "v.mp4", np.stack([np.roll(img, s, axis=1) for s in range(6)]))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "image": "img.png", "video": "v.mp4"}) + "\n")
    pair = {"id": "p", "image": "img.png", "video_a": "v.mp4", "video_b": "v.mp4", "label": "A"}
    (tmp_path / "p.jsonl").write_text(json.dumps(pair) + "\n")
    (tmp_path / "r.partial.jsonl").write_text((tmp_path / "m.jsonl").read_text())  # a manifest with a side-file name
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.fromarray(np.roll(img, 5 * i, axis=0)).save(tmp_path / "photos" / f"p{i}.png")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo.mp4")
    os.mkfifo(tmp_path / "fifo.png")
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under `root` with its bytes (FIFOs by kind only: reading one would block)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        mode = p.lstat().st_mode
        key = str(p.relative_to(root))
        out[key] = "dir" if stat.S_ISDIR(mode) else p.read_bytes() if stat.S_ISREG(mode) else "special"
    return out


@pytest.fixture()
def no_hang():
    """A call that would block (a FIFO opened for reading) fails the test after 30 s instead of hanging it."""

    def expire(signum, frame):
        raise TimeoutError("the command hung")

    before = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


# (case id, command line with {d} for the fixture folder, text the error line must hold)
CASES = [
    ("score-out-is-manifest", "score --manifest {d}/m.jsonl --out {d}/m.jsonl", ["--out", "m.jsonl", "--manifest"]),
    ("score-out-via-dotdot", "score --manifest {d}/m.jsonl --out {d}/adir/../m.jsonl", ["--out", "input"]),
    ("score-side-file-is-manifest", "score --manifest {d}/r.partial.jsonl --out {d}/r.jsonl", ["side file", "input"]),
    ("score-out-is-folder", "score --manifest {d}/m.jsonl --out {d}/adir", ["--out", "adir", "is a folder"]),
    ("score-out-under-a-file", "score --manifest {d}/m.jsonl --out {d}/img.png/x.jsonl", ["--out", "not a folder"]),
    ("score-out-without-manifest", "score --image {d}/img.png --video {d}/v.mp4 --out {d}/o.jsonl", ["--out"]),
    ("score-batch-size-0", "score --manifest {d}/m.jsonl --out {d}/o.jsonl --batch-size 0", ["--batch-size", "0"]),
    ("score-flush-every-0", "score --manifest {d}/m.jsonl --out {d}/o.jsonl --flush-every 0", ["--flush-every"]),
    ("score-frames-0", "score --image {d}/img.png --video {d}/v.mp4 --num-frames 0", ["--num-frames", "2 and 256"]),
    ("score-frames-negative", "score --image {d}/img.png --video {d}/v.mp4 --num-frames -1", ["--num-frames"]),
    ("score-frames-1", "score --image {d}/img.png --video {d}/v.mp4 --num-frames 1", ["--num-frames", "got 1"]),
    ("score-frames-huge", "score --image {d}/img.png --video {d}/v.mp4 --num-frames 100000", ["--num-frames"]),
    ("score-frames-not-int", "score --image {d}/img.png --video {d}/v.mp4 --num-frames many", ["--num-frames"]),
    ("score-fifo-video", "score --image {d}/img.png --video {d}/fifo.mp4", ["--video", "fifo.mp4", "FIFO"]),
    ("score-fifo-image", "score --image {d}/fifo.png --video {d}/v.mp4", ["--image", "fifo.png", "FIFO"]),
    ("score-fifo-manifest", "score --manifest {d}/fifo.mp4 --out {d}/o.jsonl", ["--manifest", "FIFO"]),
    ("score-device", "score --image {d}/img.png --video {d}/v.mp4 --device " + MISSING_CUDA, ["--device", "cuda"]),
    ("score-device-bogus", "score --image {d}/img.png --video {d}/v.mp4 --device gpu7", ["--device", "gpu7"]),
    ("score-unknown-flag", "score --image {d}/img.png --video {d}/v.mp4 --bogus", ["--bogus"]),
    ("rank-fifo-video", "rank --image {d}/img.png --videos {d}/v.mp4 {d}/fifo.mp4", ["--videos", "fifo.mp4"]),
    ("rank-top-0", "rank --image {d}/img.png --videos {d}/v.mp4 --top 0", ["--top"]),
    ("rank-frames-1", "rank --image {d}/img.png --videos {d}/v.mp4 --num-frames 1", ["--num-frames"]),
    ("rank-device", "rank --image {d}/img.png --videos {d}/v.mp4 --device " + MISSING_CUDA, ["--device"]),
    ("eval-report-is-file", "eval --data {d}/p.jsonl --report {d}/m.jsonl", ["--report", "m.jsonl", "not a folder"]),
    ("eval-bootstrap-0", "eval --data {d}/p.jsonl --bootstrap 0", ["--bootstrap", "got 0"]),
    ("eval-bootstrap-negative", "eval --data {d}/p.jsonl --bootstrap -5", ["--bootstrap", "-5"]),
    ("eval-bootstrap-huge", "eval --data {d}/p.jsonl --bootstrap 100000000", ["--bootstrap"]),
    ("eval-batch-size-0", "eval --data {d}/p.jsonl --batch-size 0", ["--batch-size"]),
    ("eval-seed-negative", "eval --data {d}/p.jsonl --seed -1", ["--seed"]),
    ("eval-fifo-data", "eval --data {d}/fifo.mp4", ["--data", "FIFO"]),
    ("eval-device", "eval --data {d}/p.jsonl --device " + MISSING_CUDA, ["--device"]),
    ("synth-foreign-out", "synth --out {d}/foreign --n 3", ["--out", "foreign", "--overwrite"]),
    ("synth-out-is-a-file", "synth --out {d}/img.png --n 3", ["--out", "img.png", "not a folder"]),
    ("synth-out-inside-images", "synth --images {d}/photos --out {d}/photos/sub", ["--out", "inside", "--images"]),
    ("synth-out-is-images", "synth --images {d}/photos --out {d}/photos", ["--out", "--images"]),
    ("synth-out-holds-images", "synth --images {d}/photos --out {d}", ["--out", "holds", "--images"]),
    ("synth-workers-0", "synth --out {d}/new --workers 0", ["--workers"]),
    ("synth-frames-1", "synth --out {d}/new --frames 1", ["--frames"]),
    ("serve-port-huge", "serve --port 99999", ["--port", "99999", "65535"]),
    ("serve-port-0", "serve --port 0", ["--port", "got 0"]),
    ("serve-batch-size-0", "serve --batch-size 0", ["--batch-size"]),
    ("serve-timeout-nan", "serve --request-timeout nan", ["--request-timeout"]),
    ("serve-device", "serve --device " + MISSING_CUDA, ["--device"]),
    ("train-model-kwargs-type", "train --data {d}/p.jsonl --out {d}/run --model-kwargs", ["--model-kwargs", "d_model"]),
    ("train-model-kwargs-field", "train --data {d}/p.jsonl --out {d}/run --model-type mlp --model-kwargs", ["nope"]),
    ("train-frames-1", "train --data {d}/p.jsonl --out {d}/run --num-frames 1", ["--num-frames"]),
    ("train-out-is-a-file", "train --data {d}/p.jsonl --out {d}/m.jsonl", ["--out", "m.jsonl"]),
    ("train-fifo-data", "train --data {d}/fifo.mp4 --out {d}/run", ["--data", "FIFO"]),
    ("experiment-out-is-data", "experiment --data {d}/photos --out {d}/photos", ["--out", "--data"]),
    ("experiment-folds-1", "experiment --data {d}/photos --folds 1", ["--folds"]),
    ("experiment-bootstrap-0", "experiment --data {d}/photos --bootstrap 0", ["--bootstrap"]),
]
EXTRA_ARGS = {  # JSON arguments that a format string would mangle
    "train-model-kwargs-type": ['{"d_model": "x"}'],
    "train-model-kwargs-field": ['{"nope": 1}'],
}
NEEDS_MODEL = ("score-", "rank-")


@pytest.mark.parametrize(("case", "line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_user_errors_are_one_line_exit_2_and_leave_nothing(case, line, expected, d, capsys, no_hang):
    argv = [a.format(d=d) for a in line.split()] + EXTRA_ARGS.get(case, [])
    if case.startswith(NEEDS_MODEL) and "--device" not in argv:
        argv += COLOR  # no weights to load: a refusal must come before the model anyway
    before = snapshot(d)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"icreward {argv[0]}: error:"), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert snapshot(d) == before  # no output, no .partial.jsonl side file, no temporary folder, inputs untouched


def test_the_frame_range_is_the_media_readers():
    assert (common.MIN_FRAMES, common.MAX_FRAMES) == (media.MIN_FRAMES, media.MAX_FRAMES)  # one rule: icreward.rules


# ---- outputs never destroy what their command did not write


def test_synth_overwrite_writes_beside_other_files_and_reruns_replace_only_its_own(d, capsys):
    tiny = ["--n", "3", "--frames", "2", "--size", "16", "--workers", "1", "--quiet"]
    out = d / "foreign"
    assert main(["synth", "--out", str(out), *tiny, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "synth.json").is_file()
    first = (out / "train.jsonl").read_bytes()
    assert main(["synth", "--out", str(out), *tiny, "--seed", "1"]) == 0  # an earlier output: no flag needed
    assert (out / "notes.txt").read_text() == "mine" and (out / "train.jsonl").read_bytes() != first
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []  # no temporary folder left
    assert "synth:" not in capsys.readouterr().err  # --quiet: no progress


def test_atomic_dir_replaces_only_its_own_entries_markers_last(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="--overwrite"):
        with atomic_dir(target, marker=("m.json",)):
            raise AssertionError("refused before the body runs")
    with atomic_dir(target, own=("data", "old.bin", "m.json"), marker=("m.json",), overwrite=True) as tmp:
        (tmp / "data").mkdir()
        (tmp / "data" / "x").write_text("1")
        (tmp / "m.json").write_text("{}")
    (target / "old.bin").write_text("stale")  # an own entry the next output does not have: removed
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(b).name), real_replace(a, b))[1])
    with atomic_dir(target, own=("data", "old.bin", "m.json"), marker=("m.json",)) as tmp:  # an earlier output
        (tmp / "data").mkdir()
        (tmp / "data" / "x").write_text("2")
        (tmp / "m.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["data", "keep.txt", "m.json"]
    assert (target / "data" / "x").read_text() == "2" and moved[-1] == "m.json"  # the marker goes in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_save_pretrained_keeps_other_files_and_refuses_a_foreign_folder(tmp_path):
    model = build_model("mlp", backbone_kwargs={"image_size": 32}, hidden=8)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    (ckpt / "card.json").write_text("{}")
    (ckpt / "README.md").write_text("notes")
    model.save_pretrained(ckpt)  # an earlier checkpoint: its two files replaced, the rest kept
    assert sorted(p.name for p in ckpt.iterdir()) == ["README.md", "card.json", "config.json", "model.safetensors"]
    load_checkpoint(ckpt)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.png").write_text("x")
    with pytest.raises(Exception, match="not an earlier checkpoint"):
        model.save_pretrained(foreign)
    assert [p.name for p in foreign.iterdir()] == ["a.png"]


# ---- train: a run killed before its first save does not lock its folder


TRAIN = [
    *("--model-type", "mlp", "--model-kwargs", '{"hidden": 8}', "--backbone-kwargs", '{"image_size": 32}'),
    *("--num-frames", "2", "--epochs", "1", "--batch-size", "1", "--precision", "fp32", "--no-progress"),
    "--no-tensorboard",
]


def test_train_killed_before_its_first_save_then_resume_starts_from_step_0(d, capsys):
    noise = (np.random.default_rng(1).random((6, 32, 32, 3)) * 255).astype(np.uint8)
    write_video(d / "noise.mp4", noise)
    pairs = [
        {"id": "a", "image": "img.png", "video_a": "v.mp4", "video_b": "noise.mp4", "label": "A"},
        {"id": "b", "image": "img.png", "video_a": "noise.mp4", "video_b": "v.mp4", "label": "B"},
    ]
    (d / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    run = d / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")  # what a run killed before its first save leaves
    (run / "metrics.csv").write_text("kind,epoch\n")
    (run / "notes.txt").write_text("mine")
    args = ["train", "--data", str(d / "p.jsonl"), "--out", str(run), "--cache-dir", str(d / "cache"), *TRAIN]
    assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "nothing to resume" in printed and "starting from step 0" in printed
    assert (run / "model.safetensors").is_file() and (run / "notes.txt").read_text() == "mine"
    assert main([*args, "--resume"]) == 0  # a real resume (of the finished run: it finalises again)
    assert "resumed from step 2 (epoch 1/1)" in capsys.readouterr().out
    assert main(args) == 2  # a saved run: refused, naming both ways on
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    for name in ("last", "model.safetensors", "config.json"):  # simulate the never-saved state again, plain run
        path = run / name
        __import__("shutil").rmtree(path) if path.is_dir() else path.unlink()
    assert main(args) == 0
    assert "stopped before its first save" in capsys.readouterr().out


# ---- progress


def test_progress_lines_off_a_terminal_and_quiet_silences_them(d, capsys, monkeypatch):
    import icreward.progress

    monkeypatch.setattr(icreward.progress, "LINE_MIN_GAP", 0.0)  # a tiny run is quick: show every tenth
    lines = "".join(json.dumps({"id": f"i{i}", "image": "img.png", "video": "v.mp4"}) + "\n" for i in range(4))
    (d / "many.jsonl").write_text(lines)
    args = ["score", "--manifest", str(d / "many.jsonl"), "--out", str(d / "o.jsonl"), *COLOR, "--batch-size", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "scoring (color-hist): 4/4 video (100%)" in err and "\r" not in err  # whole lines, not a bar
    assert main([*args, "--quiet"]) == 0
    assert "scoring (" not in capsys.readouterr().err
