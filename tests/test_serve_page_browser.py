"""The page at / in a real headless browser, offline: Debian's Chromium driven by Playwright opens the page of a
server on 127.0.0.1, a person's steps are played (pick an image and videos, press Explain), and what the page shows
is checked against the server's own answers: the ranking in /rank's order, every head's value as /explain gives it,
the curve drawn, the map drawn over the video for the frame the video shows (and none where the map is clear), in
step with playback. Every request to another host is aborted and recorded: there must be none.

Needs `pip install playwright` (no `playwright install`: the system's Chromium is used), Chromium (`apt-get install -y
chromium`) and the real videos of ../shared (real-i2v-pia: H.264 mp4, real-i2v: GIFs); skipped where one is missing.
ICREWARD_CHROMIUM names another browser binary. Screenshots land in the test's tmp_path.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from test_serve_docs import offline_page

import icreward
from icreward.server import ServeSettings, create_app, serve_in_thread

pytestmark = pytest.mark.slow  # the shipped model explaining 3 real videos, and a browser: ~20 s on 2 CPU cores

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PIA = SHARED / "real-i2v-pia"
GIFS = SHARED / "real-i2v"
# two videos of the bear image and one of another image (ranked last by any sensible model)
PIA_IMAGE, PIA_VIDEOS = "bear.png", ("bear-magnitude1.mp4", "labrador-loop1.mp4", "bear-magnitude3.mp4")
GIF_IMAGE, GIF_VIDEOS = "walk0.png", ("walk0.gif", "girl3.gif")
MAP_VISIBLE = 0.1  # app.js `heat`: cells under a tenth of the colour scale are drawn clear

# (pixels of the canvases matching `selector` whose alpha is not 0, and those of the curve's blue line) per canvas
COUNT_PIXELS = """(selector) => [...document.querySelectorAll(selector)].map((canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0, blue = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0) opaque++;
    if (data[i] < 90 && data[i + 1] < 140 && data[i + 2] > 170) blue++;
  }
  return { opaque, blue, pixels: canvas.width * canvas.height };
})"""
SHOWN = """() => [...document.querySelectorAll('.card:not(.failed)')].map((card) => ({
  video: card.dataset.video, shown: Number(card.querySelector('.seek').value),
  time: card.querySelector('video').hidden ? null : card.querySelector('video').currentTime,
}))"""
HEAD_CELLS = "cells => Object.fromEntries(cells.map((c) => [c.dataset.head, c.textContent]))"
CARDS_DRAWN = "() => [...document.querySelectorAll('.card:not(.failed) .frame-label')].every((l) => l.textContent)"
# every <video> on the page has its first chosen frame on screen (the page opens each at its worst frame)
VIDEOS_SHOWN = """() => [...document.querySelectorAll('.card:not(.failed) video')]
  .every((v) => v.hidden || (v.readyState >= 2 && !v.seeking))"""
DROP = """([selector, files]) => {
  const transfer = new DataTransfer();
  for (const [name, type, data] of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type }));
  }
  const event = new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true });
  document.querySelector(selector).dispatchEvent(event);
}"""
SETTLE = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"


def needs(folder: Path, *names: str) -> list[Path]:
    paths = [folder / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"needs the real videos of ../shared: missing {', '.join(missing)}")
    return paths


def upload(image: Path, videos: list[Path], field: str = "videos") -> list:
    return [("image", (image.name, image.read_bytes()))] + [(field, (v.name, v.read_bytes())) for v in videos]


def nearest(times: list[float], t: float) -> int:
    return min(range(len(times)), key=lambda i: (abs(times[i] - t), i))


def drop(page, selector: str, paths: list[Path]) -> None:
    """Drop files on the element `selector`, as a person dragging them from a file manager does."""
    files = [[p.name, mimetypes.guess_type(p.name)[0] or "", base64.b64encode(p.read_bytes()).decode()] for p in paths]
    page.evaluate(DROP, [selector, files])


def explain_in_page(page, url: str, image: Path, videos: list[Path], dropped: bool = False) -> dict:
    """Open the page, pick the files (or drop them on the page's drop zones), press Explain; the /explain answer the
    page received, once it has drawn it."""
    page.goto(f"{url}/")
    page.wait_for_function("() => document.querySelectorAll('#head option').length > 0")  # functions: the CSP bars eval
    if dropped:
        drop(page, "#image-drop", [image])
        drop(page, "#video-drop", videos)
    else:
        page.set_input_files("#image-input", str(image))
        page.set_input_files("#video-input", [str(v) for v in videos])
    names = page.eval_on_selector_all("#video-list li", "items => items.map((i) => i.firstChild.textContent.trim())")
    assert names == [v.name for v in videos] and page.inner_text("#image-name") == image.name
    with page.expect_response(lambda r: urlsplit(r.url).path == "/explain", timeout=120_000) as answer:
        page.click("#run")
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function("() => document.body.dataset.state === 'done'", timeout=30_000)
    page.wait_for_function(CARDS_DRAWN)
    page.wait_for_function(VIDEOS_SHOWN, timeout=15_000)
    page.evaluate(SETTLE)
    return answer.value.json()


def check_maps_drawn(page, body: dict, scale: str = "video") -> None:
    """The overlay of each card has pixels exactly where the map of the frame it shows has visible cells, on the
    page's colour `scale`: each video's own range of map values (the default), or the absolute 0..1."""
    shown = page.evaluate(SHOWN)
    overlays = page.evaluate(COUNT_PIXELS, ".card:not(.failed) .overlay")
    assert len(shown) == len(overlays) == sum(v["error"] is None for v in body["videos"])
    for card, pixels in zip(shown, overlays, strict=True):
        maps = np.array(next(v["maps"] for v in body["videos"] if v["video"] == card["video"]))  # (T, grid, grid)
        low, high = (maps.min(), maps.max()) if scale == "video" else (0.0, 1.0)
        visible = high - low > 1e-6 and (maps[card["shown"]].max() - low) / (high - low) >= MAP_VISIBLE
        assert (pixels["opaque"] > 0) == visible, (card, pixels)


def test_page_ranks_explains_and_overlays_real_videos_offline(browser, tmp_path):
    image, *videos = needs(PIA, PIA_IMAGE, *PIA_VIDEOS)
    model = icreward.load("default")
    with serve_in_thread(create_app(model, "default", ServeSettings())) as url:
        page = offline_page(browser, url)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        body = explain_in_page(page, url, image, videos)
        page.screenshot(path=tmp_path / "page.png", full_page=True)
        print(f"\nscreenshot: {tmp_path / 'page.png'}")

        with httpx.Client(base_url=url, timeout=120) as http:
            ranked = http.post("/rank", files=upload(image, videos)).json()["ranking"]
            best = next(v for v in videos if v.name == ranked[0]["video"])
            best_heads = http.post("/score", files=upload(image, [best], field="video")).json()["heads"]
            model_heads = http.get("/model").json()["heads"]

        # the ranking shown is /rank's order, and the first card is the best video
        rows = page.eval_on_selector_all("#ranking tbody tr", "rows => rows.map(r => r.dataset.video)")
        assert rows == [r["video"] for r in ranked], (rows, ranked)
        assert page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.video)") == rows
        assert rows[-1] == "labrador-loop1.mp4"  # another image's video

        # every head's value, in the table and on each card, as the server gave it (the best one's as /score gives it:
        # test_serve_page.py checks /explain's heads against /score's for every video)
        assert {v["video"]: v["heads"] for v in body["videos"]}[best.name] == pytest.approx(best_heads, abs=1e-6)
        for entry in body["videos"]:
            assert set(entry["heads"]) == set(model_heads) == {"consistency", "motion", "text", "guidance"}
            name = entry["video"]
            for where in (f"#ranking tr[data-video='{name}']", f".card[data-video='{name}'] .heads"):
                shown = page.eval_on_selector_all(f"{where} [data-head]", HEAD_CELLS)
                assert shown == {h: "—" if v is None else f"{v:.3f}" for h, v in entry["heads"].items()}, shown

        # the curve is drawn on every card; each overlay shows its frame's map
        assert all(c["blue"] > 100 for c in page.evaluate(COUNT_PIXELS, ".card .curve"))
        check_maps_drawn(page, body)
        assert any(c["opaque"] > 1000 for c in page.evaluate(COUNT_PIXELS, ".card .overlay"))

        # in step with playback: after playing, the map shown is that of the sampled frame nearest the video's time
        times = {v["video"]: v["times"] for v in body["videos"]}
        page.evaluate("""async () => {
            const videos = [...document.querySelectorAll('.card video')];
            await Promise.all(videos.map((v) => v.play()));
            await new Promise((done) => setTimeout(done, 900));
            videos.forEach((v) => v.pause());
        }""")
        page.evaluate(SETTLE)
        after = page.evaluate(SHOWN)
        for card in after:
            assert card["shown"] == nearest(times[card["video"]], card["time"]), card
        check_maps_drawn(page, body)
        page.select_option("#map-scale", "absolute")
        page.evaluate(SETTLE)
        check_maps_drawn(page, body, "absolute")
        # the curve seeks the video; the map switch hides the overlay
        first = page.locator(".card").first
        box = first.locator(".curve").bounding_box()
        first.locator(".curve").click(position={"x": box["width"] - 14, "y": box["height"] / 2})
        page.evaluate(SETTLE)
        assert page.evaluate(SHOWN)[0]["shown"] == len(times[rows[0]]) - 1
        first.locator(".show-map").uncheck()
        page.evaluate(SETTLE)
        assert page.evaluate(COUNT_PIXELS, ".card .overlay")[0]["opaque"] == 0
        page.screenshot(path=tmp_path / "page-after.png", full_page=True)

        assert page.outside == [] and errors == [], (page.outside, errors)
        local = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert all(urlsplit(name).netloc == urlsplit(url).netloc for name in local), local
        page.close()


def test_page_shows_sampled_frames_of_videos_the_browser_cannot_play(browser, tmp_path):
    """GIFs do not play in <video>: the page asks /explain for the sampled frames and plays those on a canvas, with
    the same overlay; a file that is no video comes last with its error. The files are dropped on the page this time;
    a first-frame metric (one head, pixel maps) keeps it quick."""
    image, *videos = needs(GIFS, GIF_IMAGE, *GIF_VIDEOS)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    model = icreward.load("metric:first-frame-mse")
    with serve_in_thread(create_app(model, "metric:first-frame-mse", ServeSettings())) as url:
        page = offline_page(browser, url)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        body = explain_in_page(page, url, image, [broken, *videos], dropped=True)
        *explained, failed = body["videos"]
        assert all(len(v["frames"]) == len(v["curve"]) == body["num_frames"] for v in explained)
        with httpx.Client(base_url=url, timeout=60) as http:
            ranked = http.post("/rank", files=upload(image, [broken, *videos])).json()["ranking"]
        rows = page.eval_on_selector_all("#ranking tbody tr", "rows => rows.map(r => r.dataset.video)")
        assert rows == [r["video"] for r in ranked] == ["walk0.gif", "girl3.gif", "broken.mp4"]
        # the file that is no video: last, its error in the table and on its card
        assert failed["error"].startswith("broken.mp4: ")
        assert failed["error"] in page.inner_text("#ranking tbody tr:last-child")
        assert page.inner_text(".card.failed .error") == failed["error"]
        assert page.inner_text("#status").startswith("2 of 3 videos explained (1 could not be) in ")
        assert page.eval_on_selector_all(".card:not(.failed) video", "vs => vs.map(v => v.hidden)") == [True, True]
        frames = page.evaluate(COUNT_PIXELS, ".card:not(.failed) canvas.frames")
        assert all(f["opaque"] == f["pixels"] >= 128 * 128 for f in frames), frames  # a whole frame drawn on each
        check_maps_drawn(page, body)
        before = page.evaluate(SHOWN)[0]["shown"]
        page.locator(".card .play").first.click()  # the frame player's own clock runs
        page.wait_for_timeout(700)
        page.locator(".card .play").first.click()
        page.evaluate(SETTLE)
        assert page.evaluate(SHOWN)[0]["shown"] != before
        check_maps_drawn(page, body)
        page.screenshot(path=tmp_path / "page-gif.png", full_page=True)
        assert page.outside == [] and errors == [], (page.outside, errors)
        page.close()
