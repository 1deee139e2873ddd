"""The dashboard against a server that requires a bearer token (``MMAKER_WEB_TOKEN``), in headless Chromium.

The dashboard asks for the token (the API answered 401), keeps it in ``sessionStorage``, sends it only in
the ``Authorization`` header — of ``/api`` requests and of its fetch()-based SSE streams — and never in a
URL; a refused token is asked for again; after the server restarts the streams reconnect by themselves
with ``Last-Event-ID``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from tests.web.conftest import WebServer
from tests.web.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _playwright
from tests.web.views import publishing

if TYPE_CHECKING:  # playwright itself is imported by _playwright(), which says how to install it
    from playwright.sync_api import Page, Request

TOKEN = "dash-" + secrets.token_hex(16)
EPOCH = "20310303-0930-a1"


@pytest.fixture
def publisher(r: redis.Redis) -> Iterator[None]:
    """Publish SPY heatmap + GEX views 4 times a second, with ingest and chain state."""
    with publishing(r, (("SPY", 512.3, 1.0),), EPOCH):
        yield


def _gex_version(page: Page) -> int:
    return int(page.get_attribute("#hdr-version", "data-gex") or 0)


def _wait_live_and_advancing(page: Page, versions: int = 3) -> None:
    page.wait_for_function("Number(document.querySelector('#heatmap').dataset.tiles) > 0", timeout=15_000)
    page.wait_for_function("Number(document.querySelector('#gex').dataset.bars) > 0", timeout=15_000)
    first = _gex_version(page)
    page.wait_for_function(
        f"Number(document.querySelector('#hdr-version').dataset.gex) >= {first + versions}", timeout=15_000
    )
    page.wait_for_function("document.querySelector('#hdr-stream').textContent === 'live'", timeout=10_000)


def test_the_dashboard_asks_for_the_token_and_streams_with_it(publisher: None) -> None:
    sync_playwright = _playwright()
    server = WebServer(MMAKER_WEB_TOKEN=TOKEN).start()
    restarted: WebServer | None = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                seen: list[Request] = []
                errors: list[str] = []
                page.on("request", lambda request: seen.append(request))
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{server.url}/?u=SPY")

                # 401 from the API: the dashboard asks, nothing streams yet
                page.wait_for_selector("#token-form", state="visible", timeout=15_000)
                assert page.text_content("#hdr-stream") == "token needed"
                assert "needs an access token" in (page.text_content("#token-error") or "")
                assert page.get_attribute("#heatmap", "data-tiles") == "0"

                # a wrong token is refused and asked for again
                page.fill("#token-input", "not-the-token")
                page.click("#token-form button")
                page.wait_for_function(
                    "!document.querySelector('#token-form').hidden && "
                    "document.querySelector('#token-error').textContent.includes('refused')",
                    timeout=15_000,
                )

                page.fill("#token-input", TOKEN)
                page.press("#token-input", "Enter")
                _wait_live_and_advancing(page)
                assert page.is_hidden("#token-form")

                # the token travels in the Authorization header of every API and stream request, in no URL
                streams = [q for q in seen if "/stream/" in q.url]
                assert {q.url.split("/stream/")[1] for q in streams} == {"heatmap/SPY", "gex/SPY"}
                authorized = [q for q in seen if "/api/" in q.url or "/stream/" in q.url]
                assert authorized[-1].all_headers().get("authorization") == f"Bearer {TOKEN}"
                assert all(q.all_headers().get("authorization") == f"Bearer {TOKEN}" for q in streams)
                assert all(TOKEN not in q.url for q in seen) and TOKEN not in page.url
                assert page.evaluate("sessionStorage.getItem('mmaker.token')") == TOKEN
                assert TOKEN not in page.evaluate("JSON.stringify(localStorage)")

                # the server restarts: the streams reconnect by themselves, resuming with Last-Event-ID
                last = _gex_version(page)
                before = len(seen)
                server.stop()
                page.wait_for_function("document.querySelector('#hdr-stream').textContent !== 'live'", timeout=15_000)
                restarted = WebServer(MMAKER_WEB_TOKEN=TOKEN)
                restarted.port = server.port
                restarted.start()
                _wait_live_and_advancing(page)
                resumed = [q for q in seen[before:] if q.url.endswith("/stream/gex/SPY")]
                assert resumed, "the gex stream did not reconnect"
                assert int(resumed[-1].all_headers().get("last-event-id", "0")) >= last
                assert resumed[-1].all_headers().get("authorization") == f"Bearer {TOKEN}"

                # a reload keeps the token for this tab: no question, live again
                page.reload()
                _wait_live_and_advancing(page, versions=1)
                assert page.is_hidden("#token-form")
                assert errors == []
            finally:
                browser.close()
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()
    assert TOKEN not in server.log() and (restarted is None or TOKEN not in restarted.log())
