"""Test helpers: a real simulator server on a free port, run in a background thread with its own loop."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import requests

from sim.config import SimConfig
from sim.server import SimServer

CLOCK = datetime(2025, 11, 24, 15, 0, tzinfo=UTC)  # Monday 10:00 New York: a 0DTE is listed


class ThreadedSim:
    """A :class:`SimServer` running in a daemon thread; ``url``/``port`` once started."""

    def __init__(self, config: SimConfig) -> None:
        self.server = SimServer(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> ThreadedSim:
        self._thread.start()
        assert self._ready.wait(30), "simulator did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def admin(self, name: str, **params: object) -> dict:
        resp = requests.get(f"{self.url}/admin/{name}", params=params, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def get(self, underlying: str, key: str | None = "test-key", **params: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.get(f"{self.url}/v3/snapshot/options/{underlying}", params=params, headers=headers, timeout=30)


def make_sim(**overrides: object) -> ThreadedSim:
    """Start a simulator with test defaults (port 0, seed 7, fixed clock) overridden by ``overrides``."""
    cfg = {"port": 0, "seed": 7, "underlyings": ("SPY", "SPX"), "clock": CLOCK, "tick_rate": 4000.0}
    cfg.update(overrides)
    return ThreadedSim(SimConfig(**cfg)).start()  # type: ignore[arg-type]


def fetch_all(sim: ThreadedSim, underlying: str, **params: object) -> list[dict]:
    """Follow ``next_url`` from the first page to the end; returns every result."""
    out: list[dict] = []
    resp = sim.get(underlying, **params)
    seen: set[str] = set()
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        out.extend(body["results"])
        if "next_url" not in body:
            return out
        assert body["next_url"] not in seen
        seen.add(body["next_url"])
        resp = requests.get(body["next_url"], headers={"Authorization": "Bearer test-key"}, timeout=30)
