"""``python -m web --workers 2``: two server processes on one port, each with its own subscription."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from tests.web.conftest import SseStream, WebServer
from tests.web.views import gex_view, publish_view


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_every_stream_of_every_worker_gets_every_version(r: redis.Redis, sse: type[SseStream]) -> None:
    server = WebServer(MMAKER_WEB_WORKERS="2").start()
    assert server.proc is not None
    workers = children(server.proc.pid)
    try:
        assert len(workers) == 2
        first, _ = publish_view(r, gex_view("SPY", spot=500.0))
        streams = [sse(f"{server.url}/stream/gex/SPY") for _ in range(12)]  # the kernel spreads them
        assert all(int(stream.next(timeout=5)["id"]) == first for stream in streams)
        versions = [publish_view(r, gex_view("SPY", spot=500.0 + i, seed=i))[0] for i in range(1, 4)]
        for stream in streams:
            assert [int(stream.next(timeout=5)["id"]) for _ in versions] == versions
    finally:
        server.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "a worker outlived SIGTERM"
