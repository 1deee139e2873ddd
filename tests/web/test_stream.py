"""``/stream/{model}/{underlying}`` against a real server, real Redis and real HTTP."""

from __future__ import annotations

import queue
import socket
import time

import orjson
import pytest
import redis

from tests.web.conftest import SseStream, WebServer
from tests.web.views import gex_view, heatmap_view, publish_view


def _wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_current_view_at_once_then_every_version_in_order(web: WebServer, r: redis.Redis, sse: type[SseStream]) -> None:
    first, raw = publish_view(r, gex_view("SPY", spot=500.0))
    stream = sse(f"{web.url}/stream/gex/SPY")
    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    event = stream.next(timeout=5)
    assert event == {"id": str(first), "event": "model", "data": raw.decode()}
    published = [publish_view(r, gex_view("SPY", spot=500.0 + i, seed=i))[0] for i in range(1, 6)]
    for i, version in enumerate(published, 1):
        assert version == first + i
        event = stream.next(timeout=5)
        assert event is not None and int(event["id"]) == version
        assert orjson.loads(event["data"])["version"] == version


def test_resume_with_current_last_event_id_waits_for_the_next(
    web: WebServer, r: redis.Redis, sse: type[SseStream]
) -> None:
    current, _ = publish_view(r, heatmap_view("SPX", spot=5000.0, width=5.0))
    stream = sse(f"{web.url}/stream/heatmap/SPX", headers={"Last-Event-ID": str(current)})
    with pytest.raises(queue.Empty):
        stream.next(timeout=1.0)
    following, _ = publish_view(r, heatmap_view("SPX", spot=5001.0, width=5.0, seed=2))
    event = stream.next(timeout=5)
    assert event is not None and int(event["id"]) == following == current + 1


def test_resume_with_an_older_id_gets_the_current_view_at_once(
    web: WebServer, r: redis.Redis, sse: type[SseStream]
) -> None:
    publish_view(r, gex_view("SPY", spot=500.0))
    current, _ = publish_view(r, gex_view("SPY", spot=501.0))
    stream = sse(f"{web.url}/stream/gex/SPY", headers={"Last-Event-ID": str(current - 1)})
    event = stream.next(timeout=5)
    assert event is not None and int(event["id"]) == current


def test_keepalive_pings_arrive(web: WebServer, r: redis.Redis, sse: type[SseStream]) -> None:
    stream = sse(f"{web.url}/stream/gex/SPX")  # nothing published: only pings (every 2 s in these tests)
    assert _wait(lambda: stream.pings >= 1, timeout=6)


def test_stalled_client_is_dropped_while_another_receives_every_version(
    web: WebServer, r: redis.Redis, sse: type[SseStream]
) -> None:
    before = web.health()["sse"]["dropped_slow"]
    # a client that connects and never reads, with a tiny receive window so the server's writes block soon
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", web.port))
    stalled.sendall(b"GET /stream/heatmap/SPY HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    reader = sse(f"{web.url}/stream/heatmap/SPY")
    versions = []
    try:
        assert _wait(lambda: web.health()["sse"]["clients"] == 2)
        for i in range(80):  # 80 views of ~250 kB: far more than the stalled socket's buffers hold
            view = heatmap_view("SPY", spot=500.0 + i / 10, seed=i, pad_bytes=250_000)
            versions.append(publish_view(r, view)[0])
            time.sleep(0.04)
        received = []
        while len(received) < len(versions):
            event = reader.next(timeout=10)
            assert event is not None, "the healthy client was disconnected"
            received.append(int(event["id"]))
        assert received == versions
        assert _wait(lambda: web.health()["sse"]["dropped_slow"] > before, timeout=10)
        assert web.health()["sse"]["clients"] == 1
    finally:
        stalled.close()
    assert "dropped slow SSE client of heatmap:SPY" in web.log()


def test_unknown_model_or_underlying_is_a_json_404_naming_what_exists(web: WebServer, r: redis.Redis) -> None:
    import requests

    publish_view(r, gex_view("SPY", spot=500.0))
    for path in ("/stream/vol/SPY", "/stream/gex/QQQ"):
        response = requests.get(web.url + path, timeout=5)
        assert response.status_code == 404
        body = response.json()
        assert body["models"] == ["heatmap", "gex"] and body["underlyings"] == ["SPY", "SPX"]
        assert body["published"]["gex"]["SPY"] == 1 and body["published"]["heatmap"]["SPY"] is None
    assert "unknown model 'vol'" in requests.get(web.url + "/stream/vol/SPY", timeout=5).json()["detail"]
