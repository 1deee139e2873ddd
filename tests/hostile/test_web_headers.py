"""Abusive request heads against a real ``python -m web``: 100 MB headers, too many headers, garbage.

Each case: the process still runs, the abuser gets its answer (431 / 400) and the counter naming the case
in ``/healthz`` (``web.refused``) moved; other clients are served meanwhile.
"""

from __future__ import annotations

import select
import threading
from pathlib import Path

import redis
import requests

from tests.hostile.web_clients import connect, exchange, get, log_lines, read_response, refused, rss_kb, running

HUGE_BYTES = 100_000_000
ATTACKERS = 4
#: what an attacker sends before it waits for the other clients' requests: a head that is still open
OPENING = b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"a" * 8_000


def _stream_huge_header(port: int, opened: threading.Barrier, go: threading.Event, result: dict) -> None:
    """Open a head, wait for ``go``, then stream a 100 MB header value until the server answers."""
    sock = connect(port)
    try:
        sock.sendall(OPENING)
        sent = len(OPENING)
        opened.wait(30)
        go.wait(30)
        chunk = b"a" * 65536
        sock.setblocking(False)
        while sent < HUGE_BYTES:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            if not writable:  # nothing moved for 30 s: the server hangs
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue
            except OSError as exc:  # reset before any answer: the answer was lost
                result["error"] = repr(exc)
                break
        result["sent"] = sent
        result["response"] = read_response(sock, 30)
    finally:
        sock.close()


def test_100_mb_headers_are_refused_early_and_cost_no_memory(r: redis.Redis) -> None:
    with running() as server:
        assert server.proc is not None
        for _ in range(20):  # warm up whatever a request allocates once
            requests.get(f"{server.url}/api/models", timeout=5)
        before, rss_before = refused(server), rss_kb(server.proc.pid)
        opened, go = threading.Barrier(ATTACKERS + 1), threading.Event()
        results: list[dict] = [{} for _ in range(ATTACKERS)]
        threads = [
            threading.Thread(target=_stream_huge_header, args=(server.port, opened, go, results[i]), daemon=True)
            for i in range(ATTACKERS)
        ]
        for thread in threads:
            thread.start()
        try:
            opened.wait(30)  # four heads are open and half-way: other clients are still served
            assert requests.get(f"{server.url}/api/models", timeout=10).status_code == 200
            assert "status" in server.health()
        finally:
            go.set()
            for thread in threads:
                thread.join(240)
        for result in results:
            response = result.get("response")
            assert response is not None, f"no answer to a 100 MB header: {result}"
            assert response.status == 431 and response.headers["connection"] == "close"
            assert result["sent"] < HUGE_BYTES // 4, "the answer came only after most of the header was sent"
        after = refused(server)
        assert after["headers_too_large"] == before["headers_too_large"] + ATTACKERS
        assert rss_kb(server.proc.pid) - rss_before < 10_000, "a refused header was buffered"
        assert requests.get(f"{server.url}/api/models", timeout=10).status_code == 200


def test_a_head_is_served_up_to_the_byte_limit_and_refused_one_byte_over(r: redis.Redis) -> None:
    with running(MMAKER_WEB_MAX_HEADER_BYTES="4096") as server:
        bare = len(get("/api/models", b"X-Pad: "))
        at_limit = get("/api/models", b"X-Pad: " + b"p" * (4096 - bare))
        assert len(at_limit) == 4096
        before = refused(server)["headers_too_large"]
        served = exchange(server.port, at_limit)
        assert served is not None and served.status == 200
        over = exchange(server.port, get("/api/models", b"X-Pad: " + b"p" * (4097 - bare)))
        assert over is not None and over.status == 431
        assert over.body == b"request line and headers too large\n"
        assert refused(server)["headers_too_large"] == before + 1


def test_too_many_headers_are_refused_with_431(r: redis.Redis) -> None:
    with running() as server:  # the default: 100 headers
        before = refused(server)
        hundred = [b"X-%d: 1" % i for i in range(99)]  # and Host
        served = exchange(server.port, get("/api/models", *hundred))
        assert served is not None and served.status == 200
        one_more = exchange(server.port, get("/api/models", *hundred, b"X-last: 1"))
        assert one_more is not None and one_more.status == 431 and one_more.body == b"too many request headers\n"
        tiny = [b"X%d:" % i for i in range(2_000)]  # 2,000 headers in ~12 kB: under the byte limit
        many = get("/api/models", *tiny)
        assert len(many) < 16_384
        flood = exchange(server.port, many)
        assert flood is not None and flood.status == 431
        after = refused(server)
        assert after["too_many_headers"] == before["too_many_headers"] + 2
        assert after["headers_too_large"] == before["headers_too_large"]


def test_garbage_is_answered_400_counted_and_not_logged_once_per_request(r: redis.Redis) -> None:
    garbage = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/9.9\r\n\r\n", b"HELLO\r\n\r\n"]
    with running() as server:
        before = refused(server)["bad_request"]
        for i in range(150):
            response = exchange(server.port, garbage[i % len(garbage)])
            assert response is not None and response.status == 400
        assert refused(server)["bad_request"] == before + 150
        assert requests.get(f"{server.url}/api/models", timeout=5).status_code == 200
        # one line per reason every few seconds, with the count — never one per request
        assert 1 <= log_lines(server, "(bad_request:") < 15
        assert log_lines(server, "Invalid HTTP request received.") == 0


def test_pipelined_requests_over_the_limit_together_are_served_and_each_head_is_still_bounded(
    r: redis.Redis,
) -> None:
    """Ten ~600-byte requests in one write (6 kB, over a 4 kB limit together): all served; then a head over
    the limit on the same connection: 431."""
    pad = b"X-Pad: " + b"p" * 550
    with running(MMAKER_WEB_MAX_HEADER_BYTES="4096") as server, connect(server.port) as sock:
        before = refused(server)["headers_too_large"]
        sock.sendall(get("/api/models", pad) * 10)
        for _ in range(10):
            response = read_response(sock)
            assert response is not None and response.status == 200
        sock.sendall(get("/api/models", b"X-Pad: " + b"p" * 5_000))
        refused_head = read_response(sock)
        assert refused_head is not None and refused_head.status == 431
        assert refused(server)["headers_too_large"] == before + 1


def test_every_worker_of_python_m_web_workers_2_enforces_the_limits(r: redis.Redis) -> None:
    with running(MMAKER_WEB_WORKERS="2", MMAKER_WEB_MAX_HEADERS="20") as server:
        assert server.proc is not None
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()]
        assert len(workers) == 2
        for pid in workers:  # each worker built its protocol from the settings
            lines = [line for line in server.log().splitlines() if f"process {pid}: at most " in line]
            assert len(lines) == 1 and "/ 20 headers" in lines[0]
        too_many = get("/api/models", *[b"X-%d: 1" % i for i in range(25)])
        for _ in range(20):  # the kernel spreads new connections over both workers
            response = exchange(server.port, too_many)
            assert response is not None and response.status == 431
        served = exchange(server.port, get("/api/models"))
        assert served is not None and served.status == 200
