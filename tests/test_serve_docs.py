"""The server's /docs page in a real headless browser, offline: Debian's Chromium driven by Playwright opens /docs of
a server on 127.0.0.1, every request to another host is aborted (and recorded), and the page must render from the
files the server itself serves: the five endpoints listed, the limits shown, no request elsewhere.

Needs `pip install playwright` (no `playwright install`: the system's Chromium is used) and Chromium
(`apt-get install -y chromium`); skipped where either is missing. ICREWARD_CHROMIUM names another browser binary.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

import icreward
from icreward.server import ServeSettings, create_app, serve_in_thread

MODEL = "metric:first-frame-mse"
ENDPOINTS = ("/score", "/rank", "/healthz", "/model", "/stats")


@pytest.fixture(scope="module")
def url():
    """One uvicorn server on a free loopback port, stopped at the end."""
    app = create_app(icreward.load(MODEL), MODEL, ServeSettings(max_rank_videos=64, max_decode_mb=512))
    with serve_in_thread(app) as address:
        yield address


def offline_page(browser, url: str):
    """A page that may only reach `url`'s host: every other request is aborted and recorded in `page.outside`."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    host = urlsplit(url).netloc
    outside: list[str] = []

    def route(r) -> None:
        request_url = r.request.url
        if urlsplit(request_url).scheme in ("http", "https", "ws", "wss") and urlsplit(request_url).netloc != host:
            outside.append(request_url)
            r.abort()
        else:
            r.continue_()

    page.route("**/*", route)
    page.outside = outside
    return page


def test_docs_page_renders_offline_with_every_endpoint(browser, url, tmp_path):
    page = offline_page(browser, url)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/docs")
    page.wait_for_function(f"document.querySelectorAll('.opblock-summary-path').length >= {len(ENDPOINTS)}")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {p.strip().replace("\u200b", "") for p in paths} >= set(ENDPOINTS), paths
    description = page.locator(".information-container").inner_text()
    for limit in ("videos per /rank request", "64", "512 MiB", "--request-timeout", "/stats counts"):
        assert limit in description, (limit, description)
    page.screenshot(path=tmp_path / "docs.png", full_page=True)
    print(f"\nscreenshot: {tmp_path / 'docs.png'}")
    assert page.outside == [] and errors == [], (page.outside, errors)
    local = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert any(name.endswith("swagger-ui-bundle.js") for name in local), local
    assert all(urlsplit(name).netloc == urlsplit(url).netloc for name in local), local
    page.close()
