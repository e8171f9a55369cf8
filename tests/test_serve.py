"""`icreward serve`: the real app in-process (TestClient), and one real uvicorn server on loopback."""

import contextlib
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

import icreward
from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.media import write_video
from icreward.server import ServeSettings, create_app, serve_in_thread

MODEL = "metric:color-hist"


@pytest.fixture(scope="module")
def scorer():
    return icreward.load(MODEL)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """`root/` (the allowed folder: an image, two videos, a text file named .mp4) beside `outside/`."""
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "img.png")
    write_video(root / "good.mp4", np.stack([np.roll(img, s, axis=1) for s in range(6)]))
    write_video(root / "bad.mp4", (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8))
    (root / "text.mp4").write_text("not a video")
    Image.fromarray(img).save(outside / "secret.png")
    (root / "link.png").symlink_to(outside / "secret.png")
    frames = root / "frames"
    frames.mkdir()
    Image.fromarray(img).save(frames / "0.png")
    (frames / "1.png").symlink_to(outside / "secret.png")
    return root


def upload(root, *names, field="video"):
    """Multipart `files` for an image and videos of `root`: [("image", ...), (field, ...), ...]."""
    files = [("image", ("img.png", (root / "img.png").read_bytes(), "image/png"))]
    return files + [(field, (name, (root / name).read_bytes(), "video/mp4")) for name in names]


@pytest.fixture()
def client(scorer, media):
    with TestClient(create_app(scorer, MODEL, ServeSettings(allow_roots=[media]))) as client:
        yield client


def test_upload_score_equals_scorer_score(client, scorer, media):
    r = client.post("/score", files=upload(media, "good.mp4"))
    assert r.status_code == 200, r.text
    expected = scorer.score(media / "img.png", media / "good.mp4")
    assert r.json() == {
        "reward": pytest.approx(expected, abs=1e-6),
        "model": MODEL,
        "num_frames": scorer.num_frames,
        "head": "consistency",
        "heads": {"consistency": pytest.approx(expected, abs=1e-6)},
    }
    r = client.post("/score", files=upload(media, "bad.mp4"), data={"num_frames": "4"})
    assert r.json()["num_frames"] == 4
    assert r.json()["reward"] == pytest.approx(
        scorer.score(media / "img.png", icreward.media.load_video(media / "bad.mp4", 4, scorer.max_side)), abs=1e-6
    )


def test_path_score_inside_allow_root(client, scorer, media):
    r = client.post("/score", json={"image": "img.png", "video": str(media / "bad.mp4")})  # relative: from the root
    assert r.status_code == 200, r.text
    assert r.json()["reward"] == pytest.approx(scorer.score(media / "img.png", media / "bad.mp4"), abs=1e-6)


@pytest.mark.parametrize(
    "image",
    ["../outside/secret.png", "frames/../../outside/secret.png", "OUTSIDE", "link.png", "/etc/hostname", "/nope/x.png"],
)
def test_paths_outside_allow_root_are_403(client, media, image):
    image = str(media.parent / "outside" / "secret.png") if image == "OUTSIDE" else image
    r = client.post("/score", json={"image": image, "video": "good.mp4"})
    assert r.status_code == 403, r.text
    assert "outside" in r.json()["detail"]


def test_frame_folder_with_a_symlinked_frame_out_is_403(client):
    assert client.post("/score", json={"image": "img.png", "video": "frames"}).status_code == 403


def test_missing_file_inside_root_is_422_and_no_root_refuses_paths(client, scorer, media):
    r = client.post("/score", json={"image": "img.png", "video": "nope.mp4"})
    assert r.status_code == 422 and "nope.mp4" in r.json()["detail"]
    with TestClient(create_app(scorer, MODEL)) as uploads_only:
        r = uploads_only.post("/score", json={"image": str(media / "img.png"), "video": str(media / "good.mp4")})
        assert r.status_code == 403 and "--allow-root" in r.json()["detail"]
        assert uploads_only.post("/score", files=upload(media, "good.mp4")).status_code == 200


def test_oversize_upload_is_413(scorer, media):
    limit_mb = 4096 / 2**20  # the two uploads together are over 4 KiB
    with TestClient(create_app(scorer, MODEL, ServeSettings(max_upload_mb=limit_mb))) as client:
        r = client.post("/score", files=upload(media, "bad.mp4"))  # Content-Length says so: refused at once
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]

        def chunks():  # no Content-Length: refused once the limit is crossed
            yield b"--x\r\nContent-Disposition: form-data; name=video; filename=v.mp4\r\n\r\n"
            for _ in range(10):
                yield b"\0" * 1024

        headers = {"content-type": "multipart/form-data; boundary=x"}
        r = client.post("/score", content=chunks(), headers=headers)
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]


def test_too_many_frames_is_422(client, media):
    r = client.post("/score", files=upload(media, "good.mp4"), data={"num_frames": "65"})
    assert r.status_code == 422 and "--max-frames" in r.json()["detail"]
    r = client.post("/score", json={"image": "img.png", "video": "good.mp4", "num_frames": 1000})
    assert r.status_code == 422


def test_bad_requests_are_clear_4xx(client, media):
    r = client.post("/score", files=upload(media, "text.mp4"))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("video (text.mp4): not a video FFmpeg can read")
    r = client.post(
        "/score", files=[("image", ("x.png", b"not an image", "image/png"))] + upload(media, "good.mp4")[1:]
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("image (x.png): not an image file PIL can read")
    r = client.post("/score", files=upload(media)[:1])
    assert r.status_code == 422 and "video: missing" in r.json()["detail"]
    assert client.post("/score", json={"image": "img.png"}).status_code == 422
    assert client.post("/score", content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/score", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


def test_healthz_model_and_stats(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["name"] == MODEL and info["type"] == "metric" and info["scorer"] == "color-hist"
    assert info["needs_weights"] is False and info["parameters"] == 0 and info["config"] is None
    assert info["num_frames"] == 16
    assert set(client.get("/stats").json()) == {
        *("requests", "score_requests", "rank_requests", "errors", "dropped"),
        *("batches", "items", "largest_batch"),
    }


def test_stats_count_score_and_rank_work(client, media):
    assert client.post("/score", files=upload(media, "good.mp4")).status_code == 200
    assert client.post("/score", files=upload(media, "text.mp4")).status_code == 422
    r = client.post("/rank", files=upload(media, "good.mp4", "bad.mp4", "text.mp4", field="videos"))
    assert r.status_code == 200
    assert client.post("/rank", json={"image": "img.png", "videos": ["link.png"]}).status_code == 403
    stats = client.get("/stats").json()
    assert stats == {
        **{"requests": 4, "score_requests": 2, "rank_requests": 2, "errors": 2, "dropped": 0},
        **{"batches": 2, "items": 3, "largest_batch": 2},  # one /score pair, then the two readable ranked videos
    }


def gif_bomb(width: int = 16000, height: int = 16000, frames: int = 2) -> bytes:
    """A GIF of about 100 bytes whose canvas (logical screen) is width x height: 1x1 frames drawn on it. FFmpeg
    decodes every frame at the canvas size, 1 GiB each at 16000 x 16000."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255]))
    for i in range(frames):
        out += b"!\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control extension: 0.1 s a frame
        out += b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + bytes([2, 2, 0x44 if i % 2 else 0x4C, 0x01, 0])
    return bytes(out + b";")


def test_media_over_the_decode_bound_are_413_before_decoding(client, media):
    bomb = ("bomb.gif", gif_bomb(), "image/gif")
    r = client.post("/score", files=[upload(media)[0], ("video", bomb)])
    assert r.status_code == 413 and "16000x16000" in r.json()["detail"], r.text
    r = client.post("/score", files=[("image", bomb), upload(media, "good.mp4")[1]])
    assert r.status_code == 413 and r.json()["detail"].startswith("image (bomb.gif)"), r.text
    r = client.post("/rank", files=upload(media, "good.mp4", field="videos") + [("videos", bomb)])
    assert r.status_code == 413 and "videos[1] (bomb.gif)" in r.json()["detail"], r.text
    small = gif_bomb(2000, 2000)  # 32 MiB to decode: under the pixel limit, over a bound of 16 MiB
    r = client.post("/score", files=[upload(media)[0], ("video", ("big.gif", small, "image/gif"))])
    assert r.status_code == 200, r.text
    with TestClient(create_app(icreward.load(MODEL), MODEL, ServeSettings(max_decode_mb=16))) as strict:
        r = strict.post("/score", files=[upload(media)[0], ("video", ("big.gif", small, "image/gif"))])
        assert r.status_code == 413 and "--max-decode-mb" in r.json()["detail"], r.text
        assert strict.post("/score", files=upload(media, "good.mp4")).status_code == 200
    assert client.get("/stats").json()["batches"] == 1  # only the 2000 x 2000 GIF reached the model


def test_rank_over_the_video_cap_is_422(scorer, media):
    with TestClient(create_app(scorer, MODEL, ServeSettings(allow_roots=[media], max_rank_videos=2))) as client:
        r = client.post("/rank", files=upload(media, "good.mp4", "bad.mp4", "good.mp4", field="videos"))
        assert r.status_code == 422 and "at most 2" in r.json()["detail"]
        r = client.post("/rank", json={"image": "img.png", "videos": ["good.mp4"] * 3})
        assert r.status_code == 422 and "at most 2" in r.json()["detail"]
        r = client.post("/rank", json={"image": "img.png", "videos": ["good.mp4", "good.mp4"]})
        assert [e["rank"] for e in r.json()["ranking"]] == [1, 2]
        r = client.post("/rank", json={"image": "img.png", "videos": []})
        assert r.status_code == 422 and "videos: empty" in r.json()["detail"]


def test_model_info_of_a_learned_model():
    from icreward.models import build_model

    model = build_model("mlp", backbone="tiny-vit", num_frames=4, hidden=8)
    with TestClient(create_app(model, "runs/mlp")) as client:
        info = client.get("/model").json()
    assert info["type"] == "mlp" and info["num_frames"] == 4
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) > 0
    assert info["config"]["backbone"] == "tiny-vit"


def test_rank_uploads_and_paths(client, scorer, media):
    r = client.post("/rank", files=upload(media, "bad.mp4", "text.mp4", "good.mp4", field="videos"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == "img.png" and body["model"] == MODEL
    assert [(e["video"], e["rank"]) for e in body["ranking"]] == [("good.mp4", 1), ("bad.mp4", 2), ("text.mp4", 3)]
    assert body["ranking"][0]["reward"] == pytest.approx(scorer.score(media / "img.png", media / "good.mp4"), abs=1e-6)
    assert body["ranking"][2]["reward"] is None
    assert body["ranking"][2]["error"].startswith("text.mp4: not a video FFmpeg can read")
    r = client.post("/rank", json={"image": "img.png", "videos": ["bad.mp4", "good.mp4"]})
    assert [e["video"] for e in r.json()["ranking"]] == ["good.mp4", "bad.mp4"]
    assert client.post("/rank", json={"image": "img.png", "videos": ["link.png"]}).status_code == 403
    r = client.post(
        "/rank", files=[("image", ("x.png", b"nope", "image/png"))] + upload(media, "good.mp4", field="videos")[1:]
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("image (x.png):")


def test_openapi_lists_the_routes_and_both_request_kinds(client):
    spec = client.get("/openapi.json").json()
    assert {"/score", "/rank", "/healthz", "/model", "/stats"} <= set(spec["paths"])
    content = spec["paths"]["/score"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert set(content["application/json"]["schema"]["properties"]) == {
        "image",
        "video",
        "num_frames",
        "prompt",
        "head",
    }
    assert {"403", "413", "422", "504"} <= set(spec["paths"]["/score"]["post"]["responses"])
    assert "ScoreResponse" in spec["components"]["schemas"]
    docs = client.get("/docs")  # Swagger UI from this server, not a CDN (rendered in Chromium: test_serve_docs.py)
    assert docs.status_code == 200 and "cdn" not in docs.text and "https://" not in docs.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", docs.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    assert all(client.get(a).status_code == 200 for a in assets), assets
    assert client.get("/redoc").status_code == 404  # ReDoc would fetch its logo from a CDN


class SlowScorer(Scorer):
    """A metric that takes `delay` seconds per forward pass."""

    def __init__(self, inner: Scorer, delay: float):
        super().__init__()
        self.inner, self.delay = inner, delay
        self.name, self.num_frames, self.max_side = inner.name, inner.num_frames, inner.max_side

    def forward(self, image, video, prompt=None):
        time.sleep(self.delay)
        return self.inner(image, video)


def test_request_over_the_timeout_is_504_and_counted_dropped(scorer, media):
    settings = ServeSettings(request_timeout=0.2, batch_size=1)
    with TestClient(create_app(SlowScorer(scorer, 0.5), MODEL, settings)) as client:
        with ThreadPoolExecutor(3) as pool:  # the first is being scored when it times out, the others are queued
            answers = list(pool.map(lambda _: client.post("/score", files=upload(media, "good.mp4")), range(3)))
        r = client.post("/rank", files=upload(media, "good.mp4", field="videos"))
        assert [a.status_code for a in [*answers, r]] == [504] * 4
        assert "--request-timeout" in r.json()["detail"]
        stats = client.get("/stats").json()
    assert stats["requests"] == stats["errors"] == stats["dropped"] == 4, stats


def test_real_server_micro_batches_concurrent_requests(scorer, media):
    """One uvicorn server on a free loopback port; 16 concurrent requests (uploads and paths), then it is stopped."""
    settings = ServeSettings(allow_roots=[media], batch_size=8, batch_wait_ms=300)
    with serve_in_thread(create_app(scorer, MODEL, settings)) as url:
        expected = {v: scorer.score(media / "img.png", media / v) for v in ("good.mp4", "bad.mp4")}

        def call(i: int) -> tuple[str, httpx.Response]:
            video = ("good.mp4", "bad.mp4")[i % 2]
            with httpx.Client(base_url=url, timeout=30) as http:
                if i % 4 < 2:
                    return video, http.post("/score", files=upload(media, video))
                return video, http.post("/score", json={"image": "img.png", "video": video})

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, range(16)))
        for video, r in answers:
            assert r.status_code == 200, r.text
            assert r.json()["reward"] == pytest.approx(expected[video], abs=1e-6)
        stats = httpx.get(f"{url}/stats", timeout=10).json()
        assert stats["requests"] == 16 and stats["items"] == 16
        assert stats["largest_batch"] > 1 and stats["batches"] < 16, stats


def test_serve_in_thread_answers_inside_the_block_and_stops_after(scorer):
    """The URL answers inside the block; after it the port is closed and the app shut down (its batcher stopped). An
    app that cannot start is an error, not a wait."""
    with serve_in_thread(create_app(scorer, MODEL)) as url:
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)
    assert not {"icreward-serve", "icreward-batcher"} & {t.name for t in threading.enumerate()}

    @contextlib.asynccontextmanager
    async def failing(app):
        raise RuntimeError("no model")
        yield

    with pytest.raises(IcrewardError, match="did not start"), serve_in_thread(FastAPI(lifespan=failing)):
        pass


def test_serve_command_line_builds_the_app(monkeypatch, media):
    """`icreward serve` parses its flags into the settings and hands the app to uvicorn (not started here)."""
    import uvicorn

    from icreward.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    args = ["serve", "--model", MODEL, "--port", "8123", "--allow-root", str(media), "--max-frames", "8"]
    assert main(args) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    with TestClient(seen["app"]) as client:
        r = client.post("/score", json={"image": "img.png", "video": "good.mp4", "num_frames": 9})
        assert r.status_code == 422 and "between 2 and 8" in r.json()["detail"]
        assert "2 to 8" in client.get("/openapi.json").json()["paths"]["/score"]["post"]["description"]
    assert main(["serve", "--allow-root", str(media / "nope")]) == 2


def test_temp_uploads_are_removed(client, media, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = []
    real = tempfile.TemporaryDirectory

    def recording(*args, **kwargs):
        folder = real(*args, **kwargs)
        made.append(folder.name)
        return folder

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)
    assert client.post("/score", files=upload(media, "good.mp4")).status_code == 200
    assert client.post("/score", files=upload(media, "text.mp4")).status_code == 422
    assert client.post("/rank", files=upload(media, "good.mp4", "bad.mp4", field="videos")).status_code == 200
    assert len(made) == 3 and all(name.startswith(str(tmp_path)) for name in made)
    assert list(tmp_path.iterdir()) == []
