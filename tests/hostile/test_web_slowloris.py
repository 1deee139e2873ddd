"""Slowloris against a real ``python -m web``: heads trickled byte by byte, idle connections, and a keep-alive
connection whose next request trickles — all closed at the header deadline while ``/healthz`` answers."""

from __future__ import annotations

import threading

import redis
import requests

from tests.hostile.web_clients import HeldConnection, connect, get, read_response, refused, running
from tests.support.waiting import wait_for

TRICKLERS = 300
IDLE = 50


def _trickle(connections: list[HeldConnection], stop: threading.Event) -> None:
    """Every 0.3 s one more byte of an endless header value on every connection still open."""
    while not stop.wait(0.3):
        for held in connections:
            held.trickle(b"a")


def test_slowloris_is_closed_at_the_header_deadline_while_healthz_answers(r: redis.Redis) -> None:
    # the 200 connections of the cap outlive the first /healthz probe by seconds (it must find the cap full)
    env = {"MMAKER_WEB_MAX_CONNECTIONS": "200", "MMAKER_WEB_HEADER_TIMEOUT_S": "6"}
    with running(**env) as server:
        before = refused(server)["header_timeout"]
        tricklers = [HeldConnection(connect(server.port)) for _ in range(TRICKLERS)]
        for held in tricklers:
            held.trickle(b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        idle = [HeldConnection(connect(server.port)) for _ in range(IDLE)]  # never send a byte
        stop = threading.Event()
        thread = threading.Thread(target=_trickle, args=(tricklers, stop), daemon=True)
        thread.start()
        probes: list[tuple[int, dict]] = []

        def drained_while_healthz_answers() -> bool:
            response = requests.get(f"{server.url}/healthz", timeout=10)  # never unanswered
            probes.append((response.status_code, response.json()))
            return all([held.poll() for held in tricklers + idle])

        try:
            wait_for(drained_while_healthz_answers, 60, "every slowloris connection closed by the server", server.log)
        finally:
            stop.set()
            thread.join(10)
            for held in tricklers + idle:
                held.sock.close()
        assert probes and all(status in (200, 503) and "status" in body for status, body in probes)
        assert any(body["web"]["connections"] > 200 for _, body in probes), "the flood never filled the cap"
        for held in tricklers:
            assert held.received.startswith(b"HTTP/1.1 408 "), held.received[:100]
        assert all(held.received == b"" for held in idle)  # nothing of a request came: closed without a word
        assert refused(server)["header_timeout"] >= before + TRICKLERS + IDLE
        assert requests.get(f"{server.url}/api/models", timeout=5).status_code == 200


def test_a_keep_alive_request_trickled_byte_by_byte_is_cut_at_the_header_deadline(r: redis.Redis) -> None:
    """uvicorn's keep-alive timer is cancelled by any byte: the deadline of the next request's head is not."""
    with running(MMAKER_WEB_HEADER_TIMEOUT_S="2") as server:
        before = refused(server)["header_timeout"]
        held = HeldConnection(connect(server.port))
        held.trickle(get("/api/models"))
        first = read_response(held.sock)
        assert first is not None and first.status == 200 and first.headers.get("connection") != "close"
        opening = b"GET /api/models HTTP/1.1\r\nX-Slow: "
        held.trickle(opening)
        stop = threading.Event()
        thread = threading.Thread(target=_trickle, args=([held], stop), daemon=True)
        thread.start()
        try:
            wait_for(held.poll, 30, "the trickling keep-alive connection closed by the server", server.log)
        finally:
            stop.set()
            thread.join(10)
            held.sock.close()
        assert held.received.startswith(b"HTTP/1.1 408 ")
        assert held.sent > len(get("/api/models")) + len(opening), "the client was cut before it trickled a byte"
        assert refused(server)["header_timeout"] == before + 1
