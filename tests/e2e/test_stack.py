"""End to end: every process as a real subprocess against a test redis-server (what ``make run`` starts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import orjson
import pytest
import redis
import requests

from fabric import keys
from tests.e2e.views import ViewLedger
from tests.support.servers import RedisServer
from tests.support.stack import Stack
from tests.support.waiting import wait_for

MODELS = ("heatmap", "gex")
UNDERLYINGS = ("SPY", "SPX")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    server = RedisServer().start()
    running = Stack(server).start()
    try:
        yield running
    finally:
        running.stop()
        server.stop()


class Watcher(threading.Thread, ViewLedger):
    """Reads every view every few ms, atomically with the active pointer, and records any violation."""

    def __init__(self, r: redis.Redis) -> None:
        threading.Thread.__init__(self, daemon=True)
        ViewLedger.__init__(self, UNDERLYINGS, MODELS)
        self.r = r
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.read_views(self.r)
            time.sleep(0.02)


def test_views_publish_stream_and_survive_a_topology_change(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis.url_db(0), decode_responses=True)
    wait_for(lambda: all(r.exists(keys.model_view(m, u)) for m in MODELS for u in UNDERLYINGS), 120,
             "first heatmap and GEX views of SPY and SPX", stack)  # fmt: skip
    for u in UNDERLYINGS:
        meta = r.hgetall(keys.epoch_meta(u, r.get(keys.active_epoch(u))))
        assert meta["state"] == "active" and meta["missing_at_promotion"] == ""  # every component accepted it

    watcher = Watcher(r)
    watcher.start()
    try:
        # SSE: the current view at once, then new versions with increasing ids
        url = f"http://127.0.0.1:{stack.web_port}/stream/gex/SPY"
        ids: list[int] = []
        with requests.get(url, stream=True, timeout=30) as response:
            assert response.status_code == 200
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("id:"):
                    ids.append(int(line[3:].strip()))
                if len(ids) == 3:
                    break
        assert ids == sorted(ids) and len(set(ids)) == 3

        before = r.get(keys.active_epoch("SPY"))
        stack.sim.admin("/admin/topology?underlying=SPY&action=list_expiry")
        wait_for(lambda: r.get(keys.active_epoch("SPY")) != before, 90, "a new SPY epoch promoted", stack)
        after = r.get(keys.active_epoch("SPY"))
        wait_for(lambda: orjson.loads(r.get(keys.model_view("heatmap", "SPY")))["epoch"] == after, 10,
                 "the heatmap view of the new epoch")  # fmt: skip
        time.sleep(2.0)
    finally:
        watcher.stop_event.set()
        watcher.join(5)

    assert watcher.violations == []
    assert watcher.epochs["SPY"] == {before, after}
    for (model, u), history in watcher.versions.items():
        assert history[-1] > history[0], f"{model} {u} did not advance"
    new_meta = r.hgetall(keys.epoch_meta("SPY", after))
    assert new_meta["missing_at_promotion"] == "" and r.hget(keys.epoch_meta("SPY", before), "state") == "retired"
    old_keys = list(r.scan_iter(match=f"*:{before}:*", count=10_000))
    assert old_keys and all(0 < r.ttl(k) <= 300 for k in old_keys)
    health = requests.get(f"http://127.0.0.1:{stack.web_port}/healthz", timeout=10)
    assert health.status_code == 200, health.text
