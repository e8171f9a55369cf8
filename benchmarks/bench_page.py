"""The page of `icreward serve`, timed as a person uses it: a real server on 127.0.0.1, Debian's Chromium driven by
Playwright, an image and N real videos picked, Explain pressed, and the clock stopped when the page has drawn the
ranking, the curves and the maps (goal: 10 videos in under 20 s with the shipped default on 2 CPU cores). Model
loading and the browser's start are excluded; the server is warmed up with one /explain of one video first. Also
printed: the CPU time the server's threads used, and the machine's load (a busy machine stretches the wall time).

    python benchmarks/bench_page.py [--model default] [--videos 10] [--repeat 2] [--pia ../shared/real-i2v-pia]
        [--screenshot docs/images/serve-page.png] [--json-out reports/page.json]

The N videos: those of labrador.png in real-i2v-pia, then other images' videos (a realistic best-of-N upload with
a few strays). `--screenshot` also writes the README's picture: bear.png with its prompt, its three videos and one
labrador video, the page opened at the second card's worst frame, as a small palette PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIA = REPO.parent / "shared" / "real-i2v-pia"
TEN = (
    *(f"labrador-loop{i}.mp4" for i in (1, 2, 3)),
    *(f"labrador-magnitude{i}.mp4" for i in (1, 2, 3)),
    *(f"bear-magnitude{i}.mp4" for i in (1, 2, 3)),
    "lighthouse-real1.mp4",
)
SHOT_IMAGE, SHOT_PROMPT = "bear.png", "1bear walking in a shop, best quality, 4k"
SHOT_VIDEOS = ("bear-magnitude1.mp4", "bear-magnitude2.mp4", "bear-magnitude3.mp4", "labrador-loop1.mp4")
SHOT_WIDTH, SHOT_MAX_BYTES = 1000, 300_000


def chromium() -> str:
    for candidate in (os.environ.get("ICREWARD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    sys.exit("no Chromium to drive (apt-get install -y chromium, or set ICREWARD_CHROMIUM)")


def explain_in_page(page, url: str, image: Path, videos: list[Path], prompt: str | None = None) -> tuple[float, float]:
    """Seconds from pressing Explain to the page having drawn every card (and each <video> at its first frame), and
    of them, the /explain request's (upload, server, answer: the browser's resource timing)."""
    page.goto(f"{url}/")
    page.wait_for_function("() => document.querySelectorAll('#head option').length > 0")
    page.set_input_files("#image-input", str(image))
    page.set_input_files("#video-input", [str(v) for v in videos])
    if prompt:
        page.fill("#prompt", prompt)
    start = time.perf_counter()
    page.click("#run")
    page.wait_for_function("() => ['done', 'error'].includes(document.body.dataset.state)", timeout=300_000)
    if page.evaluate("document.body.dataset.state") == "error":
        raise RuntimeError(f"the page says: {page.inner_text('#status')}")
    page.wait_for_function(
        """() => [...document.querySelectorAll('.card')].every((c) => c.querySelector('.frame-label').textContent
            && (c.querySelector('video').hidden || (c.querySelector('video').readyState >= 2
            && !c.querySelector('video').seeking)))""",
        timeout=60_000,
    )
    total = time.perf_counter() - start
    request = page.evaluate(
        "performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/explain')).pop().duration"
    )
    return total, request / 1000


def screenshot(page, url: str, pia: Path, out: Path) -> None:
    """The README's picture: the page on bear.png's videos and one stray, cropped to the ranking and two cards."""
    from PIL import Image

    explain_in_page(page, url, pia / SHOT_IMAGE, [pia / v for v in SHOT_VIDEOS], SHOT_PROMPT)
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    cards = page.locator(".card")
    bottom = cards.nth(1).bounding_box() if cards.count() > 1 else cards.first.bounding_box()
    raw = out.with_suffix(".raw.png")
    clip = {"x": 0, "y": 0, "width": 1280, "height": bottom["y"] + bottom["height"] + 12}
    page.screenshot(path=raw, clip=clip, full_page=True)
    with Image.open(raw) as shot:
        height = round(shot.height * SHOT_WIDTH / shot.width)
        small = shot.convert("RGB").resize((SHOT_WIDTH, height), Image.LANCZOS)
    raw.unlink()
    small.quantize(colors=192, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"screenshot: {out} ({out.stat().st_size / 1000:.0f} kB, {SHOT_WIDTH}x{height})", file=sys.stderr)
    if out.stat().st_size > SHOT_MAX_BYTES:
        print(f"warning: {out} is over {SHOT_MAX_BYTES / 1000:.0f} kB", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--videos", type=int, default=10, help=f"videos per upload, 1..{len(TEN)} (default: 10)")
    parser.add_argument("--repeat", type=int, default=2, help="timed uploads, 0: the screenshot only (default: 2)")
    parser.add_argument("--pia", type=Path, default=PIA, help="the real-i2v-pia folder")
    parser.add_argument("--screenshot", type=Path, help="also write the README's screenshot here")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="the server's --request-timeout, s (default: 600, to measure)"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.videos <= len(TEN):
        parser.error(f"--videos must be from 1 to {len(TEN)}")
    if args.repeat < 0 or (args.repeat == 0 and not args.screenshot):
        parser.error("--repeat must be at least 1, or 0 with --screenshot")
    missing = [name for name in ("labrador.png", SHOT_IMAGE, *TEN, *SHOT_VIDEOS) if not (args.pia / name).is_file()]
    if missing:
        sys.exit(f"{args.pia}: missing {', '.join(missing)}")
    import torch
    from playwright.sync_api import sync_playwright

    import icreward
    from icreward.server import ServeSettings, create_app, serve_in_thread

    model = icreward.load(args.model)
    app = create_app(model, args.model, ServeSettings(request_timeout=args.timeout))
    image, videos = args.pia / "labrador.png", [args.pia / v for v in TEN[: args.videos]]
    with serve_in_thread(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            explain_in_page(page, url, image, videos[:1])  # warm-up: first forward passes, first decoder
            seconds, requests, cpu, load = [], [], [], []
            for _ in range(args.repeat):
                cpu_start = time.process_time()  # every thread of this process: the server, not the browser
                total, request = explain_in_page(page, url, image, videos)
                seconds.append(total)
                requests.append(request)
                cpu.append(time.process_time() - cpu_start)
                load.append(os.getloadavg()[0])
                print(
                    f"{args.videos} videos: {total:.2f} s (the /explain request {request:.2f} s), server CPU "
                    f"{cpu[-1]:.2f} s, load {load[-1]:.1f}",
                    file=sys.stderr,
                )
            if args.screenshot:
                page.set_viewport_size({"width": 1280, "height": 1400})
                screenshot(page, url, args.pia, args.screenshot)
        finally:
            browser.close()
    if not seconds:  # --repeat 0: the screenshot only
        return 0
    results = {
        "model": args.model,
        "videos": args.videos,
        "frames": model.num_frames,
        "seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 3),
        "request_seconds": [round(r, 3) for r in requests],
        "per_video_seconds": round(statistics.median(seconds) / args.videos, 3),
        "server_cpu_seconds": [round(c, 2) for c in cpu],
        "load_average_1min": load,  # other processes on the machine slow the wall time down
        "goal_seconds": 20.0,
        "cpu_threads": torch.get_num_threads(),
    }
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
