import json

import numpy as np
import pytest
from PIL import Image

from icreward.cli import main
from icreward.media import write_video


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
    assert out["model"] == "metric:vbench-i2v-pixel" and out["reward"] < good


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
