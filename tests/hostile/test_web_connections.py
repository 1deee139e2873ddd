"""Connection floods against a real ``python -m web``: over the per-process cap, and up to the open-file limit.

Over the cap a connection may only ask for ``/healthz``; anything else gets a clear 503 (``Connection: close``,
``Retry-After``, a text body). SSE clients already connected keep streaming on the direct transport path.
"""

from __future__ import annotations

import contextlib
import socket

import redis
import requests

from tests.hostile.web_clients import (
    HeldConnection,
    RawResponse,
    connect,
    exchange,
    get,
    log_lines,
    read_response,
    running,
)
from tests.support.waiting import wait_for
from tests.web.views import gex_view, publish_view

CAP = 200
FLOOD = 300


def _event_ids(data: bytes) -> list[int]:
    return [int(line[4:]) for line in data.split(b"\r\n") if line.startswith(b"id: ")]


def _assert_over_capacity(response: RawResponse | None) -> None:
    assert response is not None, "a connection over the cap was closed without an answer"
    assert response.status == 503
    assert response.headers["connection"] == "close" and int(response.headers["retry-after"]) > 0
    assert response.body.startswith(b"over capacity")


def test_a_flood_over_the_cap_gets_503_while_sse_streams_and_healthz_go_on(r: redis.Redis) -> None:
    version, _ = publish_view(r, gex_view("SPY", spot=500.0))
    env = {"MMAKER_WEB_MAX_CONNECTIONS": str(CAP), "MMAKER_WEB_HEADER_TIMEOUT_S": "60"}
    with running(**env) as server:
        streams: list[HeldConnection] = []
        try:
            for _ in range(CAP):  # legitimate SSE clients fill the cap
                held = HeldConnection(connect(server.port))
                held.trickle(get("/stream/gex/SPY", b"Accept: text/event-stream"))
                streams.append(held)
            for held in streams:
                head = read_response(held.sock)
                assert head is not None and head.status == 200, "an SSE client under the cap was refused"
                held.received = head.body
            health = wait_for(
                lambda: (h := server.health())["sse"]["clients"] == CAP and h, 30, "every SSE client registered"
            )
            assert health["sse"]["direct"] == CAP, "SSE left the direct transport path"
            assert health["web"]["connections"] >= CAP and health["web"]["max_connections"] == CAP
            before = health["web"]["refused"]["over_capacity"]

            _assert_over_capacity(exchange(server.port, get("/api/models")))
            _assert_over_capacity(exchange(server.port, get("/stream/gex/SPY")))
            flood = [connect(server.port) for _ in range(FLOOD)]
            try:
                for sock in flood:
                    sock.sendall(get("/api/models/gex/SPY"))
                for sock in flood:
                    _assert_over_capacity(read_response(sock))
            finally:
                for sock in flood:
                    sock.close()
            health_response = requests.get(f"{server.url}/healthz", timeout=10)  # over the cap: still answered
            assert health_response.status_code in (200, 503)
            assert health_response.headers["connection"] == "close"
            body = health_response.json()
            assert body["status"] in ("ok", "stale") and body["sse"]["clients"] == CAP
            assert body["web"]["refused"]["over_capacity"] == before + 2 + FLOOD

            # the streams of the cap still get every new version
            newer, _ = publish_view(r, gex_view("SPY", spot=501.0, seed=2))
            assert newer == version + 1

            def every_stream_has_the_new_version() -> bool:
                for held in streams:
                    held.poll()
                return all(newer in _event_ids(held.received) for held in streams)

            wait_for(every_stream_has_the_new_version, 30, "every SSE stream received the new version", server.log)
            assert not any(held.closed for held in streams)
        finally:
            for held in streams:
                held.sock.close()
        wait_for(lambda: server.health()["web"]["connections"] <= 1, 30, "the streams' connections closed")
        assert requests.get(f"{server.url}/api/models/gex/SPY", timeout=5).status_code == 200
        assert log_lines(server, "(over_capacity:") < (2 + FLOOD) / 10, "a refusal flood flooded the log"


def test_the_open_file_limit_is_raised_and_a_flood_never_exhausts_it(r: redis.Redis) -> None:
    """Started with RLIMIT_NOFILE 256 (hard 1024), default cap 8,000: the soft limit is raised to 1,024 and the
    cap lowered to fit it; 1,100 idle connections then never take the process to its file limit."""
    with running(open_files=(256, 1024), MMAKER_WEB_HEADER_TIMEOUT_S="60") as server:
        web = server.health()["web"]
        assert web["file_ceiling"] == 1024 - 256 and web["max_connections"] == 1024 - 256 - 64
        assert "MMAKER_WEB_MAX_CONNECTIONS=8000 lowered to 704" in server.log()
        flood: list[HeldConnection] = []
        try:
            for _ in range(1_100):
                with contextlib.suppress(OSError):  # a refused connection may be reset while others connect
                    flood.append(HeldConnection(socket.create_connection(("127.0.0.1", server.port), timeout=10)))

            def healthz_answers_on_its_own() -> dict | None:
                try:
                    response = requests.get(f"{server.url}/healthz", timeout=10)
                    return response.json() if "application/json" in response.headers["content-type"] else None
                except (requests.RequestException, ValueError):
                    return None

            # the idle connections over the cap are closed after 2 s; the ones at the file ceiling at once
            body = wait_for(healthz_answers_on_its_own, 60, "/healthz answering during the flood", server.log)
            assert body["web"]["connections"] <= body["web"]["file_ceiling"]
            assert body["web"]["refused"]["at_file_limit"] > 0
            at_limit = [held for held in flood if held.poll() and held.received.startswith(b"HTTP/1.1 503 ")]
            assert at_limit, "no connection at the file ceiling was answered 503"
        finally:
            for held in flood:
                held.sock.close()
        log = server.log()
        assert "Too many open files" not in log and "out of system resource" not in log


def test_a_websocket_upgrade_is_answered_as_plain_http_and_frees_its_slot(r: redis.Redis) -> None:
    """No route needs WebSocket: an Upgrade request is a plain request, its connection closed after the answer
    (a connection handed to a WebSocket protocol would leave the count — and the limits — behind)."""
    upgrade = get(
        "/api/models",
        b"Connection: Upgrade",
        b"Upgrade: websocket",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    )
    with running() as server:
        for _ in range(20):
            response = exchange(server.port, upgrade)
            assert response is not None and response.status == 200 and response.headers["connection"] == "close"
            assert response.body.startswith(b'{"models"')
        wait_for(lambda: server.health()["web"]["connections"] == 1, 10, "every upgraded connection released")
        assert "Unsupported upgrade request" not in server.log()
