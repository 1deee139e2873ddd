"""``tasks.chain.snapshot`` through a real embedded Celery worker, and by hand through the celery CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from fabric import keys
from fabric.epochs import active_epoch
from tasks import app
from tasks.chain import snapshot
from tests.support.servers import ROOT, SimProcess
from tests.support.waiting import wait_for


def test_broker_is_the_test_server_not_6379(redis_server) -> None:
    assert app.conf.broker_url == redis_server.url_db(1)
    assert str(redis_server.port) in os.environ["REDIS_URL"] and redis_server.port != 6379


def test_queued_snapshot_creates_and_promotes_an_epoch(r: redis.Redis, worker: None) -> None:
    snapshot.apply_async(args=["SPY"], queue="chain")
    wait_for(lambda: active_epoch(r, "SPY") is not None)
    epoch = active_epoch(r, "SPY")
    assert r.hget(keys.epoch_meta("SPY", epoch), "state") == "active"
    assert int(r.hget(keys.chain_cadence("SPY"), "runs")) == 1


def test_called_by_hand_with_the_celery_cli(r: redis.Redis, worker: None) -> None:
    env = {**os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "call", "tasks.chain.snapshot", "--args", '["SPX"]'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for(lambda: active_epoch(r, "SPX") is not None)
    universe = r.smembers(keys.epoch_universe("SPX", active_epoch(r, "SPX")))
    assert any(cid.startswith("O:SPXW:") for cid in universe) and any(cid.startswith("O:SPX:") for cid in universe)


def test_direct_call_does_what_the_scheduled_run_does(r: redis.Redis, sim: SimProcess) -> None:
    first = snapshot("SPY")
    assert first["status"] == "created" and first["promotion"] == "promoted"
    second = snapshot.apply(args=["SPY"]).get()
    assert second["status"] == "refreshed" and second["epoch"] == first["epoch"]


def test_overlapping_snapshot_is_skipped(r: redis.Redis, sim: SimProcess) -> None:
    lock = r.lock(keys.chain_lock("SPY"), timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert snapshot("SPY") == {"underlying": "SPY", "status": "skipped"}
        assert active_epoch(r, "SPY") is None
    finally:
        lock.release()
