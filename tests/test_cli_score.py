import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import icreward
from icreward.cli import main
from icreward.interface import Scorer
from icreward.media import write_video
from icreward.scoring import partial_path, score_manifest_to_file


@pytest.fixture()
def media(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    shifts = np.stack([np.roll(img, s, axis=1) for s in range(6)])
    write_video(tmp_path / "good.mp4", shifts)
    write_video(tmp_path / "bad.mp4", (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8))
    (tmp_path / "text.mp4").write_text("not a video")
    return tmp_path


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_single_pair_prints_reward(media, capsys):
    args = ["score", "--image", str(media / "img.png"), "--model", "metric:vbench-i2v-pixel"]
    assert main([*args, "--video", str(media / "good.mp4")]) == 0
    good = float(capsys.readouterr().out)
    assert main([*args, "--video", str(media / "bad.mp4"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"id", "reward", "heads"} and out["id"] == "bad" and out["reward"] < good
    assert out["heads"] == {"consistency": out["reward"]}


def test_single_pair_bad_video_is_a_clear_error(media, capsys):
    code = main(["score", "--image", str(media / "img.png"), "--video", str(media / "text.mp4")])
    assert code == 2
    assert "text.mp4" in capsys.readouterr().err


def test_manifest_one_line_out_per_line_in(media, capsys):
    manifest = write_lines(
        media / "m.jsonl",
        [
            json.dumps({"id": "a", "image": "img.png", "video": "good.mp4"}),
            json.dumps({"id": "b", "image": "img.png", "video": "missing.mp4"}),
            "{not json",
            json.dumps({"id": "c", "image": "img.png", "video": "text.mp4"}),
            json.dumps({"id": "d", "image": "img.png", "video": "bad.mp4"}),
        ],
    )
    out = media / "out.jsonl"
    code = main(["score", "--manifest", str(manifest), "--out", str(out), "--model", "metric:color-hist"])
    assert code == 1  # some lines failed; every line still has a result
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in rows] == ["a", "b", None, "c", "d"]
    assert [r["line"] for r in rows if "error" in r] == [2, 3, 4]
    assert "missing.mp4" in rows[1]["error"] and "text.mp4" in rows[3]["error"]
    assert rows[0]["reward"] > rows[4]["reward"]
    first = out.read_text()
    main(["score", "--manifest", str(manifest), "--out", str(out), "--model", "metric:color-hist"])
    assert out.read_text() == first  # same inputs, same rewards
    assert "line 3" in capsys.readouterr().err
    inline = media / "inline.jsonl"  # decoded in the main thread: the same lines, errors included
    args = ["score", "--manifest", str(manifest), "--out", str(inline), "--model", "metric:color-hist"]
    assert main([*args, "--decode-workers", "0", "--batch-size", "2"]) == 1
    assert inline.read_text() == first
    assert main([*args, "--decode-workers", "-1"]) == 2
    assert "argument --decode-workers: must be at least 0, got -1" in capsys.readouterr().err


def test_pair_manifest_gives_both_rewards(media):
    manifest = write_lines(
        media / "pairs.jsonl",
        [json.dumps({"id": "p", "image": "img.png", "video_a": "good.mp4", "video_b": "bad.mp4", "label": "A"})],
    )
    out = media / "out.jsonl"
    assert main(["score", "--manifest", str(manifest), "--out", str(out), "--model", "metric:first-frame-ssim"]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["id"] == "p" and row["reward_a"] > row["reward_b"]


def test_unknown_metric_lists_known_ones(media, capsys):
    args = ["score", "--image", str(media / "img.png"), "--video", str(media / "good.mp4"), "--model", "metric:x"]
    assert main(args) == 2
    assert "color-hist" in capsys.readouterr().err


# ---- --resume: a killed or interrupted manifest run goes on where it stopped


class Interrupting(Scorer):
    """Wraps a metric and raises KeyboardInterrupt (a Ctrl-C) on its `at`-th forward pass."""

    def __init__(self, inner: Scorer, at: int):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0
        self.name, self.num_frames, self.max_side = inner.name, inner.num_frames, inner.max_side

    def forward(self, image, video, prompt=None):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner(image, video)


def long_manifest(media, n):
    videos = ["good.mp4", "bad.mp4", "good.mp4", "text.mp4"]
    lines = [json.dumps({"id": f"v{i}", "image": "img.png", "video": videos[i % 4]}) for i in range(n)]
    return write_lines(media / "long.jsonl", lines[:5] + ["{not json"] + lines[5:])


def score_args(manifest, out, *extra):
    return ["score", "--manifest", str(manifest), "--out", str(out), "--model", "metric:vbench-i2v-pixel", *extra]


def test_resume_after_an_interrupt_gives_the_straight_run_file(media):
    manifest = long_manifest(media, 12)
    straight, out = media / "straight.jsonl", media / "out.jsonl"
    assert main(score_args(manifest, straight, "--batch-size", "2")) == 1  # the text.mp4 lines are errors
    scorer = Interrupting(icreward.load("metric:vbench-i2v-pixel"), at=4)
    with pytest.raises(KeyboardInterrupt):
        score_manifest_to_file(scorer, manifest, out, batch_size=2, progress=False)
    assert not out.exists()  # never a half-written output
    done = [json.loads(line) for line in partial_path(out).read_text().splitlines()]
    assert 3 <= len(done) < 12 and all("reward" in r for r in done)  # three batches went through
    assert main(score_args(manifest, out, "--batch-size", "2", "--resume")) == 1
    assert out.read_text() == straight.read_text()
    assert not partial_path(out).exists()


def test_resume_keeps_finished_lines_and_rescores_errors(media):
    manifest = long_manifest(media, 6)
    out = media / "out.jsonl"
    assert main(score_args(manifest, out)) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[0]["reward"] = 123.0  # a line it must keep as is (so it was not scored again)
    rows[1] = {"id": "v1", "line": 2, "error": "was unreadable last time"}  # an error line: scored again
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a killed run's side file: a finished line and a torn last line
    partial_path(out).write_text(json.dumps({"id": "v2", "reward": -7.0}) + '\n{"id": "v4", "rew')
    assert main(score_args(manifest, out, "--resume")) == 1
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in again] == ["v0", "v1", "v2", "v3", "v4", None, "v5"]
    assert again[0]["reward"] == 123.0 and again[2]["reward"] == -7.0
    assert "reward" in again[1] and "reward" in again[4] and "error" in again[3]  # v3 is text.mp4
    assert not partial_path(out).exists()
    partial_path(out).write_text(json.dumps({"id": "v0", "reward": 5.0}) + "\n")
    assert main(score_args(manifest, out)) == 1  # without --resume a stale side file is ignored and removed
    assert json.loads(out.read_text().splitlines()[0])["reward"] != 5.0
    assert not partial_path(out).exists()


@pytest.mark.slow
def test_killed_process_then_resume_gives_the_straight_run_file(media):
    """SIGKILL a real `icreward score` run part way; the output never exists half-written, and --resume finishes it."""
    manifest = long_manifest(media, 120)
    straight, out = media / "straight.jsonl", media / "out.jsonl"
    args = score_args(manifest, out, "--batch-size", "1", "--flush-every", "1")
    proc = subprocess.Popen([sys.executable, "-m", "icreward.cli", *args], stderr=subprocess.DEVNULL)
    side = partial_path(out)
    try:
        deadline = time.monotonic() + 60
        while not (side.exists() and side.read_text().count("\n") >= 10):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()
    assert 10 <= side.read_text().count("\n") < 90
    assert main(score_args(manifest, straight, "--batch-size", "4")) == 1
    assert main(score_args(manifest, out, "--batch-size", "4", "--resume")) == 1
    assert out.read_text() == straight.read_text()
    assert len(out.read_text().splitlines()) == 121 and not side.exists()
