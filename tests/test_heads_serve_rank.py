"""Task heads where rewards are served: the server's /score and /rank (`prompt`, `head`), `icreward rank --head
--prompt`, `rank_videos(head=...)`, and the heads check's fallbacks (jitter, loop) and `static_check`."""

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import icreward
from icreward.cli import main
from icreward.errors import IcrewardError
from icreward.evaluation.heads_check import RealVideo, fallbacks, jitter, loop, static_check
from icreward.media import write_video
from icreward.models import ICRewardConfig, ICRewardModel
from icreward.models.task_heads import TaskHeadsConfig
from icreward.scoring import rank_videos
from icreward.server import ServeSettings, create_app

HEADS = ("consistency", "motion", "text", "guidance")
PROMPT = "a red ball, camera pans left"
VIDEOS = ("right1.mp4", "right3.mp4", "left2.mp4", "frozen.mp4", "noise.mp4")


@pytest.fixture(scope="module")
def checkpoint(tiny_text_encoder, tmp_path_factory):
    """A tiny model with every head (untrained: the heads' values are arbitrary but fixed), saved to a folder."""
    torch.manual_seed(0)
    heads = TaskHeadsConfig(text_encoder=tiny_text_encoder, text_dim=32, text_token_dim=32, d_model=8)
    config = ICRewardConfig(
        backbone="patch-features", head="none", evidence=True, num_frames=4, task_heads=heads.to_dict()
    )
    folder = tmp_path_factory.mktemp("heads-model") / "ckpt"
    ICRewardModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """An image and five videos of it: moving right at two speeds, left, frozen, noise."""
    root = tmp_path_factory.mktemp("heads-media")
    rng = np.random.default_rng(0)
    img = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(img).resize((48, 48), Image.BILINEAR))
    Image.fromarray(img).save(root / "img.png")
    for name, step in (("right1", 1), ("right3", 3), ("left2", -2), ("frozen", 0)):
        write_video(root / f"{name}.mp4", np.stack([np.roll(img, step * t, axis=1) for t in range(6)]))
    write_video(root / "noise.mp4", (rng.random((6, 48, 48, 3)) * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def model(checkpoint):
    return icreward.load(str(checkpoint))


def upload(root, *names, field="video"):
    files = [("image", ("img.png", (root / "img.png").read_bytes(), "image/png"))]
    return files + [(field, (name, (root / name).read_bytes(), "video/mp4")) for name in names]


@pytest.fixture(scope="module")
def client(checkpoint, media):
    scorer = icreward.load(str(checkpoint))
    with TestClient(create_app(scorer, "tiny-heads", ServeSettings(allow_roots=[media]))) as client:
        yield client


# ---- the server


def test_score_with_a_prompt_and_a_head(client, media, model):
    r = client.post("/score", files=upload(media, "right1.mp4"), data={"prompt": PROMPT, "head": "motion"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["head"] == "motion" and set(body["heads"]) == set(HEADS)
    assert body["reward"] == body["heads"]["motion"]
    assert body["heads"]["text"] is not None
    expected = model.score_heads(media / "img.png", media / "right1.mp4", PROMPT)
    for head in HEADS:
        assert body["heads"][head] == pytest.approx(expected[head], abs=1e-5), head


def test_score_without_a_prompt_has_null_text(client, media):
    r = client.post("/score", files=upload(media, "right1.mp4"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["head"] == "consistency" and body["reward"] == body["heads"]["consistency"]
    assert body["heads"]["text"] is None and body["heads"]["guidance"] is not None


def test_score_json_paths_take_prompt_and_head(client, media):
    paths = {"image": str(media / "img.png"), "video": str(media / "right3.mp4")}
    r = client.post("/score", json={**paths, "prompt": PROMPT, "head": "text"})
    assert r.status_code == 200, r.text
    assert r.json()["head"] == "text" and r.json()["reward"] == r.json()["heads"]["text"] is not None


def test_text_head_without_a_prompt_is_422_naming_the_prompt(client, media):
    r = client.post("/score", files=upload(media, "right1.mp4"), data={"head": "text"})
    assert r.status_code == 422 and "prompt" in r.json()["detail"]


def test_unknown_head_is_422_naming_the_heads(client, media):
    r = client.post("/score", files=upload(media, "right1.mp4"), data={"head": "speed"})
    assert r.status_code == 422 and "'speed'" in r.text and "consistency, motion, text, guidance" in r.text
    r = client.post("/rank", files=upload(media, *VIDEOS[:2], field="videos"), data={"head": "speed"})
    assert r.status_code == 422 and "'speed'" in r.text


def test_rank_by_guidance(client, media, model):
    r = client.post("/rank", files=upload(media, *VIDEOS, field="videos"), data={"prompt": PROMPT, "head": "guidance"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["head"] == "guidance"
    guidance = {v: model.score_heads(media / "img.png", media / v, PROMPT)["guidance"] for v in VIDEOS}
    assert [e["video"] for e in body["ranking"]] == sorted(VIDEOS, key=lambda v: -guidance[v])
    for entry in body["ranking"]:
        assert entry["reward"] == pytest.approx(guidance[entry["video"]], abs=1e-5)
        assert entry.get("error") is None


# ---- rank_videos and icreward rank


def test_rank_videos_by_a_head_matches_score_heads(media, model):
    videos = [media / v for v in VIDEOS]
    ranking = rank_videos(model, media / "img.png", videos, batch_size=2, prompt=PROMPT, head="text")
    text = {str(v): model.score_heads(media / "img.png", v, PROMPT)["text"] for v in videos}
    assert [v for v, _, _ in ranking] == sorted(text, key=lambda v: -text[v])
    assert all(r == pytest.approx(text[v], abs=1e-5) and e is None for v, r, e in ranking)
    assert model.selected_head is None or model.selected_head == "consistency"  # ranking by a head selects nothing


def test_rank_videos_refuses_an_unknown_head(media, model):
    with pytest.raises(IcrewardError, match="no 'nope' head"):
        rank_videos(model, media / "img.png", [media / "right1.mp4"], head="nope")


def test_cli_rank_by_the_motion_head(checkpoint, media, model, capsys):
    args = ["rank", "--model", str(checkpoint), "--image", str(media / "img.png")]
    args += ["--videos", *(str(media / v) for v in VIDEOS), "--head", "motion", "--prompt", PROMPT, "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["head"] == "motion"
    motion = {str(media / v): model.score_heads(media / "img.png", media / v, PROMPT)["motion"] for v in VIDEOS}
    assert [e["video"] for e in out["ranking"]] == sorted(motion, key=lambda v: -motion[v])
    assert [e["rank"] for e in out["ranking"]] == list(range(1, len(VIDEOS) + 1))
    for entry in out["ranking"]:
        assert entry["reward"] == pytest.approx(motion[entry["video"]], abs=1e-5) and "error" not in entry


def test_cli_rank_by_the_text_head_without_a_prompt(checkpoint, media, capsys):
    args = ["rank", "--model", str(checkpoint), "--image", str(media / "img.png")]
    args += ["--videos", str(media / "right1.mp4"), str(media / "left2.mp4"), "--head", "text", "--json"]
    assert main(args) == 1  # no video has a reward
    out = json.loads(capsys.readouterr().out)
    assert out["head"] == "text"
    assert all(e["reward"] is None and "no prompt" in e["error"] for e in out["ranking"])


# ---- heads check: fallbacks and the static check


def _image(seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[0]


def test_jitter_starts_at_the_image_and_is_seeded():
    image = _image(0)
    clip = jitter(image, 6, seed=3)
    assert clip.shape == (6, *image.shape)
    assert torch.allclose(clip[0], image, atol=1e-5)
    assert all((clip[t] - image).abs().mean() > 1e-3 for t in range(1, 6))
    assert torch.equal(clip, jitter(image, 6, seed=3))
    assert not torch.equal(clip, jitter(image, 6, seed=4))


@pytest.mark.parametrize("frames", [5, 9, 17])
def test_loop_is_a_triangle(frames):
    video = torch.arange(frames, dtype=torch.float32)[:, None, None, None].expand(frames, 3, 4, 4).contiguous()
    looped = loop(video)
    assert looped.shape == video.shape
    index = looped[:, 0, 0, 0].long().tolist()
    middle = frames // 2
    assert index[0] == 0 and index[-1] == 0 and index[middle] == frames - 1  # first, last: frame 0; middle: the last
    assert index[: middle + 1] == sorted(index[: middle + 1]) and index[middle:] == sorted(index[middle:], reverse=True)
    assert index == index[::-1]  # back the way it came


@pytest.mark.parametrize("frames", [6, 16])
def test_loop_of_an_even_frame_count_still_starts_and_ends_at_frame_0(frames):
    video = torch.arange(frames, dtype=torch.float32)[:, None, None, None].expand(frames, 3, 4, 4).contiguous()
    index = loop(video)[:, 0, 0, 0].long().tolist()
    assert index[0] == 0 and index[-1] == 0
    peak = index.index(max(index))
    assert index[: peak + 1] == sorted(index[: peak + 1]) and index[peak:] == sorted(index[peak:], reverse=True)


@pytest.mark.parametrize("frames", [6, 16])
def test_loop_of_an_even_frame_count_plays_the_whole_video(frames):
    video = torch.arange(frames, dtype=torch.float32)[:, None, None, None].expand(frames, 3, 4, 4).contiguous()
    assert int(loop(video)[:, 0, 0, 0].max()) == frames - 1


def _real_videos() -> list[RealVideo]:
    items = []
    for i, (folder, split) in enumerate((("dyn", "select"), ("pia", "report"))):
        image = _image(10 + i)
        video = torch.stack([image.roll(2 * t, dims=-1) * (1 - 0.05 * t) for t in range(6)])  # moving, darkening
        items.append(RealVideo(f"v{i}", folder, f"{folder}/img{i}.png", image, video, PROMPT, split))
    return items


def test_fallbacks_of_a_real_video():
    item = _real_videos()[0]
    out = fallbacks(item, seed=0)
    assert set(out) == {"frozen", "jitter", "loop"} and all(v.shape == item.video.shape for v in out.values())
    assert all(torch.equal(frame, item.image) for frame in out["frozen"])
    assert torch.equal(out["loop"][0], item.video[0]) and torch.equal(out["loop"][-1], item.video[0])


def test_static_check_with_a_metric():
    scorer = icreward.load("metric:color-hist")
    out = static_check(scorer, _real_videos())
    assert out["consistency"]["frozen"] == {"wins": 1.0, "n": 2}
    assert set(out["consistency"]) == {"frozen", "jitter", "loop"}
    assert all(0 <= v["wins"] <= 1 and v["n"] == 2 for v in out["consistency"].values())
    per_folder = out["per_folder"]
    assert per_folder["dyn"]["consistency"]["frozen"] == {"wins": 1.0, "n": 1}
    assert per_folder["pia"]["consistency"]["frozen"] == {"wins": 1.0, "n": 1}


def test_static_check_with_heads_skips_text_without_a_prompt(model):
    items = _real_videos()
    items[1].prompt = None
    out = static_check(model, items)
    assert {"consistency", "motion", "text", "guidance"} <= set(out)
    assert out["text"]["frozen"]["n"] == 1 and out["motion"]["frozen"]["n"] == 2


def test_static_check_has_per_split_entries():
    out = static_check(icreward.load("metric:color-hist"), _real_videos())
    assert out["per_split"]["select"]["consistency"]["frozen"] == {"wins": 1.0, "n": 1}
    assert out["per_split"]["report"]["consistency"]["frozen"] == {"wins": 1.0, "n": 1}
