"""Best-of-N ranking: `rank_videos` and `icreward rank`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import icreward
from icreward.cli import main
from icreward.media import load_image, write_video
from icreward.scoring import rank_videos

MODEL = "metric:vbench-i2v-pixel"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "img.png")
    write_video(root / "good.mp4", np.stack([np.roll(img, s, axis=1) for s in range(6)]))
    write_video(root / "bad.mp4", (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8))
    wide = np.concatenate([img, img], axis=1)  # 32 x 64: another shape, scored in its own batch
    write_video(root / "wide.mp4", np.stack([np.roll(wide, s, axis=1) for s in range(6)]))
    (root / "text.mp4").write_text("not a video")
    return root


def test_rank_videos_sorts_by_reward_and_puts_unreadable_videos_last(media):
    scorer = icreward.load(MODEL)
    videos = [media / "bad.mp4", media / "text.mp4", media / "good.mp4", media / "missing.mp4", media / "wide.mp4"]
    ranking = rank_videos(scorer, media / "img.png", videos, batch_size=2)
    expected = {v: scorer.score(media / "img.png", v) for v in videos if v.name in ("good.mp4", "bad.mp4", "wide.mp4")}
    scored = [(video, reward) for video, reward, error in ranking if error is None]
    assert [r for _, r in scored] == sorted(expected.values(), reverse=True)
    assert all(reward == pytest.approx(expected[Path(video)], abs=1e-6) for video, reward in scored)
    assert scored[-1][0] == str(media / "bad.mp4")
    failed = ranking[3:]
    assert [(v, r) for v, r, _ in failed] == [(str(media / "text.mp4"), None), (str(media / "missing.mp4"), None)]
    assert "not a video FFmpeg can read" in failed[0][2] and "no such file" in failed[1][2]
    image = load_image(media / "img.png", max_side=scorer.max_side)  # an image tensor works as well as a path
    assert rank_videos(scorer, image, videos) == ranking


def test_learned_model_encodes_the_image_once_and_matches_score(media):
    from icreward.models import build_model

    torch.manual_seed(0)
    model = build_model("icreward", backbone="tiny-vit", num_frames=4, d_model=32, heads=2, depth=1).eval()
    encode, calls = model.encode_videos, []

    def counting_encode(image, video):
        calls.append((tuple(image.shape), tuple(video.shape)))
        return encode(image, video)

    model.encode_videos = counting_encode
    videos = [media / "bad.mp4", media / "good.mp4", media / "text.mp4", media / "good.mp4"]
    ranking = rank_videos(model, media / "img.png", videos, batch_size=8)
    assert len(calls) == 1 and calls[0][0][0] == 1  # one backbone call; the image in it once
    assert calls[0][1][:2] == (1, 3 * 4)  # the three readable videos' frames ride along as one clip
    for video, reward, error in ranking:
        if error is None:
            assert reward == pytest.approx(model.score(media / "img.png", video), abs=1e-5)
    assert [v for v, _, e in ranking if e] == [str(media / "text.mp4")]
    calls.clear()
    assert [r for _, r, _ in rank_videos(model, media / "img.png", videos, batch_size=2)] == pytest.approx(
        [r for _, r, _ in ranking[:3]] + [None]
    )
    assert len(calls) == 2


def test_rank_cli_table_json_and_top(media, capsys):
    args = ["rank", "--image", str(media / "img.png"), "--model", MODEL, "--videos"]
    videos = [str(media / name) for name in ("bad.mp4", "text.mp4", "good.mp4")]
    assert main([*args, *videos]) == 1  # one video could not be read: reported, not fatal
    table = [line.split(maxsplit=2) for line in capsys.readouterr().out.splitlines()]  # rank, reward, video
    assert [(rank, video) for rank, _, video in table[:2]] == [("1", videos[2]), ("2", videos[0])]
    assert table[2][:2] == ["3", "error"] and "text.mp4" in table[2][2]
    assert main([*args, *videos, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["image"] == str(media / "img.png") and out["model"] == MODEL
    assert [(e["video"], e["rank"]) for e in out["ranking"]] == [(videos[2], 1), (videos[0], 2), (videos[1], 3)]
    assert out["ranking"][0]["reward"] > out["ranking"][1]["reward"] and out["ranking"][2]["reward"] is None
    printed = [float(reward) for _, reward, _ in table[:2]]
    assert printed == pytest.approx([e["reward"] for e in out["ranking"][:2]], abs=1e-6)  # the table's rewards
    assert "text.mp4" in out["ranking"][2]["error"]
    assert main([*args, *videos, "--json", "--top", "1"]) == 1
    captured = capsys.readouterr()
    assert [e["video"] for e in json.loads(captured.out)["ranking"]] == [videos[2]]
    assert "text.mp4" in captured.err  # a failure cut from the table still shows on stderr
    assert main([*args, videos[0], videos[2]]) == 0


def test_rank_cli_unreadable_image_is_an_error(media, capsys):
    assert main(["rank", "--image", str(media / "text.mp4"), "--videos", str(media / "good.mp4")]) == 2
    assert "text.mp4" in capsys.readouterr().err
    assert main(["rank", "--image", str(media / "img.png"), "--videos", str(media / "good.mp4"), "--top", "0"]) == 2
