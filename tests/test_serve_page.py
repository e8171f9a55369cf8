"""`icreward serve`'s page at / and the `/explain` endpoint it draws, in-process (TestClient) on small videos made
here: the page and its files come from the package and name nothing outside the server; /explain answers what
`icreward.explain.explain_files` gives, ranked as /rank ranks, with the rewards /score gives, and refuses bad input
the way the other endpoints do."""

from __future__ import annotations

import base64
import io
import re
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import icreward
from icreward.explain import explain_files
from icreward.media import load_video, write_video
from icreward.models import ICRewardConfig, ICRewardModel
from icreward.models.task_heads import TaskHeadsConfig
from icreward.server import ServeSettings, create_app
from icreward.server.explaining import ExplainCancelled, explain_videos

MODEL = "metric:first-frame-mse"  # explains with a curve and a pixel map, in milliseconds
VIDEOS = ("still.mp4", "patch.mp4", "noise.mp4")


@pytest.fixture(scope="module")
def scorer():
    return icreward.load(MODEL)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """An image; its video with a slight pan, one where a patch at the top-left turns white from frame 8 on, and
    noise (16 frames each); a text file named .mp4."""
    root = tmp_path_factory.mktemp("page")
    rng = np.random.default_rng(0)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "img.png")
    write_video(root / "still.mp4", np.stack([np.roll(img, s // 8, axis=1) for s in range(16)]))
    patch = np.stack([img] * 16)
    patch[8:, :16, :16] = 255
    write_video(root / "patch.mp4", patch)
    write_video(root / "noise.mp4", (rng.random((16, 48, 64, 3)) * 255).astype(np.uint8))
    (root / "text.mp4").write_text("not a video")
    return root


def upload(root, *names, image="img.png", field="videos"):
    files = [("image", (image, (root / image).read_bytes(), "image/png"))]
    return files + [(field, (name, (root / name).read_bytes(), "video/mp4")) for name in names]


@pytest.fixture(scope="module")
def client(scorer, media):
    settings = ServeSettings(allow_roots=[media], max_explain_videos=4)
    with TestClient(create_app(scorer, MODEL, settings)) as client:
        yield client


def test_page_and_its_files_come_from_the_server_alone(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert set(assets) == {"static/style.css", "static/app.js", "data:,"}, assets
    for asset in ("static/style.css", "static/app.js"):
        answer = client.get(f"/{asset}")
        assert answer.status_code == 200 and answer.text, asset
        assert not re.search(r"https?://", answer.text), f"{asset} names another site"
    assert not re.search(r"https?://", r.text)
    assert client.get("/static/nope.js").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert "/explain" in paths and "/" not in paths and "/static" not in paths


def test_explain_answers_explain_files_ranked_like_rank(client, scorer, media):
    r = client.post("/explain", files=upload(media, *VIDEOS), data={"grid": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("image", "model", "num_frames", "head", "grid")} == {
        "image": "img.png",
        "model": MODEL,
        "num_frames": scorer.num_frames,
        "head": "consistency",
        "grid": 4,
    }
    ranked = client.post("/rank", files=upload(media, *VIDEOS)).json()["ranking"]
    assert [v["video"] for v in body["videos"]] == [v["video"] for v in ranked]
    assert [v["rank"] for v in body["videos"]] == [1, 2, 3]
    expected = dict(zip(VIDEOS, explain_files(scorer, media / "img.png", [media / v for v in VIDEOS]), strict=True))
    for entry, rank_entry in zip(body["videos"], ranked, strict=True):
        assert entry["reward"] == pytest.approx(rank_entry["reward"], abs=1e-6)
        assert entry["index"] == VIDEOS.index(entry["video"]) and entry["error"] is None
        want = expected[entry["video"]].to_json(grid=4)
        for key in ("curve", "maps", "frame_indices", "times", "onset", "onset_frame", "region", "summary"):
            assert entry[key] == want[key], key
        maps = np.array(entry["maps"])
        assert maps.shape == (scorer.num_frames, 4, 4) and 0 <= maps.min() and maps.max() <= 1
        assert entry["frames"] is None  # not asked
        score = client.post("/score", files=upload(media, entry["video"], field="video")).json()
        assert entry["heads"] == pytest.approx(score["heads"], abs=1e-6)
    patch = next(v for v in body["videos"] if v["video"] == "patch.mp4")
    assert patch["region"] == "top-left" and max(patch["curve"][8:]) < min(patch["curve"][:8])
    assert patch["times"] == pytest.approx([i / 8 for i in patch["frame_indices"]])  # write_video: 8 fps


def test_explain_sends_the_sampled_frames_when_asked(client, scorer, media):
    r = client.post("/explain", files=upload(media, "patch.mp4"), data={"frame_size": "32", "num_frames": "5"})
    assert r.status_code == 200, r.text
    (entry,) = r.json()["videos"]
    assert len(entry["frames"]) == len(entry["curve"]) == 5
    sampled = load_video(media / "patch.mp4", num_frames=5, max_side=32)  # (5, 3, 24, 32)
    for uri, frame in zip(entry["frames"], sampled, strict=True):
        prefix, data = uri.split(",", 1)
        assert prefix == "data:image/jpeg;base64"
        jpeg = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.float32) / 255
        assert jpeg.shape == (24, 32, 3)
        assert np.abs(jpeg - frame.permute(1, 2, 0).numpy()).mean() < 0.05  # the explained frame, not another


def test_explain_by_path_and_bad_videos_come_last(client, media):
    r = client.post("/explain", json={"image": "img.png", "videos": ["text.mp4", "patch.mp4"], "grid": 2})
    assert r.status_code == 200, r.text
    first, last = r.json()["videos"]
    assert first["video"] == "patch.mp4" and np.array(first["maps"]).shape[1:] == (2, 2)
    assert last["video"] == "text.mp4" and last["rank"] == 2 and last["reward"] is None and last["curve"] is None
    assert last["error"].startswith("text.mp4: ")
    assert client.post("/explain", json={"image": "../img.png", "videos": ["patch.mp4"]}).status_code == 403


@pytest.mark.parametrize(
    ("data", "videos", "status", "words"),
    [
        ({"grid": "0"}, ("patch.mp4",), 422, "grid must be between 1 and 64, got 0"),
        ({"grid": "a"}, ("patch.mp4",), 422, "grid must be an integer"),
        ({"frame_size": "4"}, ("patch.mp4",), 422, "frame_size must be between 16 and 1024"),
        ({"num_frames": "1"}, ("patch.mp4",), 422, "num_frames must be between"),
        ({"head": "motion"}, ("patch.mp4",), 422, "'motion' is not a head of this model"),
        ({}, ("patch.mp4",) * 5, 422, "videos: 5 given, at most 4 per request"),
        ({}, (), 422, "videos: missing"),
    ],
)
def test_explain_refuses_bad_requests(client, media, data, videos, status, words):
    r = client.post("/explain", files=upload(media, *videos), data=data)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_explain_unreadable_image_model_without_frames_body_limit_and_stats(client, scorer, media):
    r = client.post("/explain", files=upload(media, "patch.mp4", image="text.mp4"))
    assert r.status_code == 422 and r.json()["detail"].startswith("image (text.mp4): "), r.text
    before = client.get("/stats").json()
    assert client.post("/explain", files=upload(media, "still.mp4")).status_code == 200
    assert client.get("/stats").json() == before  # /stats counts /score and /rank only
    with TestClient(create_app(icreward.load("metric:dynamic-degree"), "metric:dynamic-degree")) as motion:
        r = motion.post("/explain", files=upload(media, "patch.mp4"))
        assert r.status_code == 422 and "metric:dynamic-degree" in r.json()["detail"], r.text
    with TestClient(create_app(scorer, MODEL, ServeSettings(max_upload_mb=1024 / 2**20))) as small:
        r = small.post("/explain", files=upload(media, "patch.mp4"))
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]


def test_max_explain_videos_must_be_positive():
    with pytest.raises(icreward.errors.IcrewardError, match="max-explain-videos must be positive"):
        ServeSettings(max_explain_videos=0)


def test_explain_work_stops_between_videos_once_given_up(scorer, media):
    """A request past --request-timeout sets the event: the worker stops before its next video."""
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(ExplainCancelled):
        explain_videos(
            scorer,
            media / "img.png",
            [media / "patch.mp4"],
            ["patch.mp4"],
            num_frames=4,
            prompt=None,
            head="consistency",
            grid=4,
            frame_size=None,
            device="cpu",
            precision="fp32",
            cancelled=cancelled,
        )


@pytest.fixture(scope="module")
def heads_model(tiny_text_encoder):
    """A tiny learned model with every head (untrained: arbitrary but fixed values), 4 frames."""
    torch.manual_seed(0)
    heads = TaskHeadsConfig(text_encoder=tiny_text_encoder, text_dim=32, text_token_dim=32, d_model=8)
    config = ICRewardConfig(
        backbone="patch-features", head="none", evidence=True, num_frames=4, task_heads=heads.to_dict()
    )
    return ICRewardModel(config).eval()


def test_explain_gives_every_head_as_score_and_ranks_by_the_asked_head_as_rank(heads_model, media):
    prompt = {"prompt": "a scene, camera pans left"}
    with TestClient(create_app(heads_model, "tiny")) as client:
        r = client.post("/explain", files=upload(media, *VIDEOS), data={**prompt, "head": "guidance"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["head"] == "guidance"
        ranked = client.post("/rank", files=upload(media, *VIDEOS), data={**prompt, "head": "guidance"}).json()
        assert [v["video"] for v in body["videos"]] == [v["video"] for v in ranked["ranking"]]
        for entry in body["videos"]:
            score = client.post("/score", files=upload(media, entry["video"], field="video"), data=prompt).json()
            assert set(entry["heads"]) == {"consistency", "motion", "text", "guidance"}
            assert entry["heads"] == pytest.approx(score["heads"], abs=1e-5)
            assert entry["reward"] == pytest.approx(score["heads"]["guidance"], abs=1e-5)
            assert np.array(entry["maps"]).shape == (4, 16, 16) and len(entry["curve"]) == 4
        r = client.post("/explain", files=upload(media, "patch.mp4"), data={"head": "text"})
        assert r.status_code == 422 and "without a prompt" in r.json()["detail"]
        no_prompt = client.post("/explain", files=upload(media, "patch.mp4")).json()["videos"][0]
        assert no_prompt["heads"]["text"] is None and no_prompt["reward"] is not None
