"""Fault tests: under load, kill -9 every process type in turn, then Redis itself (AOF on), and restart it.

One stack for the module (what ``make run`` starts, every process a real subprocess, Redis with
``--appendonly yes --appendfsync always``). A watcher reads every view every few ms throughout: views only of
the active epoch, versions never going back, no view disappearing — Redis being unreachable is tolerated only
while the test itself restarts Redis. After each restart the views keep advancing. After quiescing: every
heatmap tile equals a from-scratch recomputation, every retired epoch's keys have a TTL, and the chain cadence
continued across the beat and Redis restarts from the one stored before.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
import redis
import requests

from beat_schedule.cadence import cadence_state, parse_cadence
from beat_schedule.controller import CadenceBounds, next_chain_interval_s
from fabric import keys
from fabric.settings import Settings
from fabric.tiles import read_tiles
from models.heatmap import aggregate_tiles
from tests.e2e.views import ViewLedger
from tests.support.servers import RedisServer
from tests.support.stack import Stack
from tests.support.waiting import wait_for

MODELS = ("heatmap", "gex")
#: One underlying keeps the module fast on two shared cores (tests/e2e/test_stack.py runs SPY and SPX).
UNDERLYINGS = ("SPY",)
#: Short cadences keep each wait after a restart short (the module usually takes under a minute), but it kills
#: and restarts 7 processes or servers and allows up to 40 s after each for the views to advance, so a slow
#: run can last several minutes. A retired epoch's keys live an hour, not the default 5 min: the first SPY
#: epoch, retired early on, must still have keys when the module ends, however slow the run.
ENV = {"MMAKER_GEX_INTERVAL_MS": "2000", "MMAKER_HEATMAP_INTERVAL_MS": "500", "MMAKER_CHAIN_INTERVAL_MIN_S": "4",
       "MMAKER_CHAIN_INTERVAL_DEFAULT_S": "5", "MMAKER_EPOCH_RETIRE_TTL_S": "3600"}  # fmt: skip
EPOCH_KEY = re.compile(r"^(?:massive:)?epoch:\{(\w+)\}:([0-9a-f]{16}):")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    server = RedisServer(aof=True).start()
    running = Stack(server, underlyings=",".join(UNDERLYINGS), env=ENV).start()
    try:
        yield running
    finally:
        running.stop()
        server.stop()


class Watcher(threading.Thread, ViewLedger):
    """Reads every view every few ms, atomically with the active pointer, and records any violation; also
    every chain run recorded in the cadence hash.

    A Redis error is a violation unless ``redis_down`` is set (the test is restarting Redis).
    """

    def __init__(self, url: str) -> None:
        threading.Thread.__init__(self, daemon=True)
        ViewLedger.__init__(self, UNDERLYINGS, MODELS)
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        self.stop_event = threading.Event()
        self.redis_down = threading.Event()
        self.cadences: dict[str, list[dict[str, str]]] = {u: [] for u in UNDERLYINGS}  # every recorded run
        self.rounds_ok = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._read_cadences()
                self.read_views(self.r)
                self.rounds_ok += 1
            except redis.RedisError as exc:
                if not self.redis_down.is_set():
                    self.violations.append(f"redis error outside its restart: {exc!r}")
                time.sleep(0.05)
            time.sleep(0.01)

    def _read_cadences(self) -> None:
        for u in UNDERLYINGS:
            record = self.r.hgetall(keys.chain_cadence(u))
            history = self.cadences[u]
            if record and (not history or history[-1].get("runs") != record.get("runs")):
                history.append(record)

    def wait_advanced(self, stack: Stack, what: str, timeout_s: float = 40) -> None:
        """Until every view has a newer version, computed after now (a promotion publishing prepared views
        moves versions too; ``as_of_ms`` says a worker recomputed it)."""
        before = dict(self.latest)
        now_ms = time.time_ns() // 1_000_000
        wait_for(lambda: len(before) == len(MODELS) * len(UNDERLYINGS)
                 and all(self.latest.get(k, -1) > v and self.as_of_ms[k] > now_ms for k, v in before.items()),
                 timeout_s, f"every view advancing after {what}", stack)  # fmt: skip


def cadence(r: redis.Redis, u: str) -> dict[str, str]:
    return r.hgetall(keys.chain_cadence(u))


def chain_idle(stack: Stack, r: redis.Redis) -> bool:
    """No chain snapshot running or queued, and the next one not due for a while: the stored cadence is the
    latest record, and any snapshot from now on is sent by a beat that read it."""
    broker = redis.Redis.from_url(stack.redis.url_db(1))
    try:
        queued = any(b"tasks.chain.snapshot" in message for message in broker.lrange("chain", 0, -1))
    finally:
        broker.close()
    running = any(r.exists(keys.chain_lock(u)) for u in UNDERLYINGS)
    now_ms = time.time_ns() // 1_000_000
    due_in_ms = min(int(cadence(r, u).get("next_run_ms", 0)) - now_ms for u in UNDERLYINGS)
    return not queued and not running and due_in_ms > 1_000


def check_cadence_continues(watcher: Watcher, stack: Stack, stored: dict[str, dict[str, str]], what: str) -> None:
    """The first snapshot after a restart starts no earlier than the stored next run and moves the controller
    on from the stored state (latency EWMA, interval) — not from a fresh one. ``stored`` must be the latest
    record with no snapshot queued or running (:func:`chain_idle`)."""
    bounds = CadenceBounds.from_settings(Settings.from_env(stack.env))
    for u, before in stored.items():
        runs = str(int(before["runs"]) + 1)
        wait_for(lambda u=u, runs=runs: any(c["runs"] == runs for c in watcher.cadences[u]), 30,
                 f"a {u} chain snapshot after the {what}", stack)  # fmt: skip
        after = next(c for c in watcher.cadences[u] if c["runs"] == runs)
        assert after["last_error"] == "", (u, before, after)
        latency_ms = float(after["latency_ms_last"])
        assert int(after["last_run_ms"]) - latency_ms >= int(before["next_run_ms"]) - 1, (u, before, after)
        expected = next_chain_interval_s(cadence_state(parse_cadence(before), bounds), latency_ms=latency_ms,
                                         error=None, bounds=bounds)  # fmt: skip
        assert float(after["interval_s"]) == pytest.approx(expected.interval_s), (u, before, after)
        assert float(after["latency_ms_ewma"]) == pytest.approx(expected.latency_ewma_ms), (u, before, after)


def sse_ids(url: str, count: int, timeout_s: float = 40, last_event_id: int | None = None) -> list[int]:
    """``count`` event ids from a fresh SSE connection, retrying the connection until the server answers."""
    deadline = time.monotonic() + timeout_s
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    while True:
        try:
            ids: list[int] = []
            with requests.get(url, stream=True, timeout=10, headers=headers) as response:
                assert response.status_code == 200, response.text
                for line in response.iter_lines(decode_unicode=True):
                    if line.startswith("id:"):
                        ids.append(int(line[3:].strip()))
                    if len(ids) == count:
                        return ids
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def ingest_counters(r: redis.Redis) -> dict[str, int]:
    raw = r.hget(keys.ingest_status(), "counters")
    return orjson.loads(raw) if raw else {}


def heatmap_from_scratch(r: redis.Redis, u: str, epoch: str) -> dict[int, tuple[int, ...]]:
    cids = r.zrange(keys.model_index(u, epoch, "heatmap", "plane"), 0, -1)
    pipe = r.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(keys.contract(u, epoch, "heatmap", cid))
    return {t: tile.counters() for t, tile in aggregate_tiles(pipe.execute()).items() if not tile.is_empty}


def heatmap_stored(r: redis.Redis, u: str, epoch: str) -> dict[int, tuple[int, ...]]:
    _, tiles = read_tiles(r, u, epoch)
    return {t: tile.counters() for t, tile in tiles.items() if not tile.is_empty}


def test_every_process_and_redis_killed_under_load(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis.url_db(0), decode_responses=True, socket_timeout=5)
    wait_for(lambda: all(r.exists(keys.model_view(m, u)) for m in MODELS for u in UNDERLYINGS), 120,
             "first heatmap and GEX views", stack)  # fmt: skip
    watcher = Watcher(stack.redis.url_db(0))
    watcher.start()
    try:
        wait_for(lambda: len(watcher.latest) == len(MODELS) * len(UNDERLYINGS), 10, "the watcher reading every view")
        spy_first = r.get(keys.active_epoch("SPY"))
        # a topology change while processes die: the new epoch is warmed and promoted across the restarts
        stack.sim.admin("/admin/topology?underlying=SPY&action=list_expiry")

        # ingest: the new process resubscribes and commits trades again
        stack.restart("ingest")
        started_ms = time.time_ns() // 1_000_000
        wait_for(lambda: int(r.hget(keys.ingest_status(), "updated_ms") or 0) > started_ms
                 and ingest_counters(r).get("trades_applied", 0) > 0, 30, "trades committed by the new ingest",
                 stack)  # fmt: skip
        watcher.wait_advanced(stack, "the ingest restart")

        # beat, when no snapshot is queued or running (the stored cadence is the latest record), then every
        # worker while the new beat starts; the cadence is checked once a snapshot ran after all that
        wait_for(lambda: chain_idle(stack, r), 30, "no chain snapshot queued or running", stack)
        stack.kill("beat", tree=True)
        stored = {u: cadence(r, u) for u in UNDERLYINGS}
        stack.start("beat")
        for name in ("chain", "heatmap", "gex"):
            stack.restart(name)
            watcher.wait_advanced(stack, f"the {name} worker restart")

        # web: an SSE client reconnects (Last-Event-ID) and receives increasing ids from the new process
        url = f"http://127.0.0.1:{stack.web_port}/stream/heatmap/SPY"
        before_ids = sse_ids(url, 2)
        stack.restart("web")
        after_ids = sse_ids(url, 3, last_event_id=before_ids[-1])
        assert before_ids == sorted(before_ids) and after_ids == sorted(after_ids), (before_ids, after_ids)
        assert len(set(after_ids)) == 3 and after_ids[0] > before_ids[-1], (before_ids, after_ids)
        check_cadence_continues(watcher, stack, stored, "beat restart")  # by the new beat and the new chain worker

        # the new SPY epoch was promoted (every component accepted it despite the restarts)
        wait_for(lambda: r.get(keys.active_epoch("SPY")) != spy_first, 60, "the new SPY epoch promoted", stack)
        spy_second = r.get(keys.active_epoch("SPY"))
        assert r.hget(keys.epoch_meta("SPY", spy_second), "missing_at_promotion") == ""
        watcher.wait_advanced(stack, "the promotion")

        # Redis itself: kill -9, start again on the same port from its append-only file
        active = {u: r.get(keys.active_epoch(u)) for u in UNDERLYINGS}
        created = {u: r.hget(keys.epoch_meta(u, e), "created_ms") for u, e in active.items()}
        wait_for(lambda: chain_idle(stack, r), 30, "no chain snapshot queued or running", stack)
        watcher.redis_down.set()
        stored = {u: cadence(r, u) for u in UNDERLYINGS}
        counters = ingest_counters(r)
        stack.redis.kill()
        time.sleep(1.0)  # every process notices
        stack.redis.start()
        restarted_ms = time.time_ns() // 1_000_000
        rounds = watcher.rounds_ok
        wait_for(lambda: watcher.rounds_ok > rounds + 2, 20, "the watcher reading Redis again")
        watcher.redis_down.clear()
        for u in UNDERLYINGS:  # nothing rebuilt: the same epochs, the stored cadence
            assert r.get(keys.active_epoch(u)) == active[u]
            assert r.hget(keys.epoch_meta(u, active[u]), "created_ms") == created[u]
            now = cadence(r, u)
            assert now == stored[u] or int(now["runs"]) > int(stored[u]["runs"]), (u, stored[u], now)
        watcher.wait_advanced(stack, "the Redis restart")
        # a status ingest published after the restart (the append-only file brings back the last one before the
        # kill, which may already count more trades than were read above), with trades committed since
        wait_for(lambda: int(r.hget(keys.ingest_status(), "updated_ms") or 0) > restarted_ms
                 and ingest_counters(r).get("trades_applied", 0) > counters.get("trades_applied", 0), 30,
                 "ingest committing trades after the Redis restart", stack)  # fmt: skip
        assert ingest_counters(r).get("redis_errors", 0) > 0  # it noticed, counted, and went on
        check_cadence_continues(watcher, stack, stored, "Redis restart")
        ids = sse_ids(url, 2)  # web resubscribed to the restarted Redis
        assert ids[1] > ids[0] and ids[0] >= after_ids[-1]
    finally:
        watcher.stop_event.set()
        watcher.join(5)

    assert watcher.violations == []
    for name, proc in stack.procs.items():
        assert proc.poll() is None, f"{name} exited:\n{stack.log(name)[-2000:]}"

    # quiesce: no more trades; wait for ingest to commit the rest and the heatmap to drain every dirty set
    stack.sim.admin("/admin/tick_rate?events_per_s=0")
    history: list[int] = []

    def ingest_settled() -> bool:
        history.append(int(r.hget(keys.ingest_status(), "events_committed") or 0))
        return (
            len(history) > 30 and len(set(history[-30:])) == 1 and r.hget(keys.ingest_status(), "queue_frames") == "0"
        )

    wait_for(ingest_settled, 30, "ingest idle", stack)
    live = {u: r.zrange(keys.live_epochs(u), 0, -1) for u in UNDERLYINGS}

    def drained() -> bool:
        return not any(r.exists(keys.dirty_contracts(u, e), keys.dirty_processing(u, e))
                       for u, epochs in live.items() for e in epochs)  # fmt: skip

    wait_for(drained, 30, "every dirty set drained by the heatmap", stack)
    traded = 0
    for u, epochs in live.items():
        for epoch in epochs:
            stored_tiles = heatmap_stored(r, u, epoch)
            assert stored_tiles == heatmap_from_scratch(r, u, epoch), f"{u} {epoch}: tiles ≠ from scratch"
            traded += sum(t[4] for t in stored_tiles.values())
    assert traded > 0

    # every key of an epoch that is not live (retired) has a TTL
    retired = []
    for key in r.scan_iter(count=10_000):
        match = EPOCH_KEY.match(key)
        if match and match.group(2) not in live.get(match.group(1), ()):
            retired.append(key)
    assert any(f":{spy_first}:" in key for key in retired)
    no_ttl = [key for key in retired if r.ttl(key) == -1]  # -2: expired since the scan, which is fine
    assert no_ttl == []
