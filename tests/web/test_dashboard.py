"""The dashboard in headless Chromium (Playwright) against the real server with views being published.

Needs the system Chromium (``apt-get install chromium``) and the ``playwright`` Python package; no browser
download. Missing either FAILS the test saying what to install.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.web.conftest import WebServer
from tests.web.views import publishing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parent / "screenshots" / "dashboard.png"


@pytest.fixture
def publisher(r: redis.Redis) -> Iterator[None]:
    """Publish SPY and SPX heatmap + GEX views 4 times a second (spot drifting), with ingest and chain state."""
    with publishing(r, (("SPY", 512.3, 1.0), ("SPX", 5123.0, 5.0)), "20310303-0930-a1"):
        yield


def _playwright():  # type: ignore[no-untyped-def]
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: `.venv/bin/pip install playwright`", pytrace=False)
    return sync_playwright


def test_dashboard_renders_live_views(web: WebServer, publisher: None) -> None:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{web.url}/?u=SPY")
            page.wait_for_function("Number(document.querySelector('#heatmap').dataset.tiles) > 0", timeout=15_000)
            page.wait_for_function("Number(document.querySelector('#gex').dataset.bars) > 0", timeout=15_000)
            page.wait_for_function("Number(document.querySelector('#gex').dataset.profile) > 0", timeout=15_000)
            first = int(page.get_attribute("#hdr-version", "data-gex") or 0)
            page.wait_for_function(
                f"Number(document.querySelector('#hdr-version').dataset.gex) >= {first + 3}", timeout=15_000
            )
            assert page.text_content("#hdr-stream") == "live"
            page.wait_for_function("document.querySelector('#hdr-health').textContent === 'ok'", timeout=10_000)
            assert "/s" in (page.text_content("#hdr-ingest") or "")
            assert "ms" in (page.text_content("#hdr-chain") or "")
            assert page.text_content("#hdr-epoch") == "20310303-0930-a1"
            heat = page.eval_on_selector("#heatmap", "el => ({...el.dataset})")
            assert int(heat["expiries"]) == 12 and int(heat["buckets"]) == 60 and "spotLine" in heat
            # the canvas has coloured pixels, not just a background
            colours = page.evaluate(
                """() => { const c = document.querySelector('#heatmap-canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
                for (let i = 0; i < d.length; i += 397 * 4) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
                return seen.size; }"""
            )
            assert colours > 20
            # hover tooltip over the middle of the heatmap
            box = page.locator("#heatmap-canvas").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
            assert "strikes" in (page.text_content("#heatmap-tip") or "")
            # switching the underlying re-subscribes
            page.select_option("#underlying", "SPX")
            page.wait_for_function("document.querySelector('#gex-call-wall').textContent > '1000'", timeout=10_000)
            page.select_option("#underlying", "SPY")
            page.wait_for_function("Number(document.querySelector('#gex').dataset.bars) > 0", timeout=10_000)
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.45)
            time.sleep(0.6)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert errors == []
        finally:
            browser.close()
