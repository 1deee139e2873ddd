"""``tasks.heatmap.recompute`` and ``tasks.gex.recompute`` through the real worker and by hand."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis

from fabric import keys
from tasks.gex import recompute as gex_recompute
from tasks.heatmap import recompute as heatmap_recompute
from tests.fabric.test_exposure import golden_epoch
from tests.support.waiting import wait_for


def test_queued_recomputes_publish_both_views(r: redis.Redis, worker: None) -> None:
    epoch = golden_epoch(r)
    gex_recompute.apply_async(args=["SPY"], queue="gex")
    heatmap_recompute.apply_async(args=["SPY"], queue="heatmap")
    wait_for(lambda: r.exists(keys.model_view("gex", "SPY")) and r.exists(keys.model_view("heatmap", "SPY")))
    assert orjson.loads(r.get(keys.model_view("gex", "SPY")))["epoch"] == epoch
    assert orjson.loads(r.get(keys.model_view("heatmap", "SPY")))["epoch"] == epoch


def test_an_expired_message_is_discarded(r: redis.Redis, worker: None) -> None:
    golden_epoch(r)
    gex_recompute.apply_async(args=["SPY"], queue="gex", expires=datetime.now(UTC) - timedelta(seconds=1))
    heatmap_recompute.apply_async(args=["SPY"], queue="heatmap")  # a live message behind it on another queue
    wait_for(lambda: r.exists(keys.model_view("heatmap", "SPY")))
    time.sleep(1.0)
    assert not r.exists(keys.model_view("gex", "SPY"))
    gex_recompute.apply_async(args=["SPY"], queue="gex")  # the worker is alive: a fresh message runs
    wait_for(lambda: r.exists(keys.model_view("gex", "SPY")))


def test_by_hand_does_what_the_scheduled_run_does(r: redis.Redis) -> None:
    golden_epoch(r)
    first = gex_recompute("SPY")
    second = gex_recompute.apply(args=["SPY"]).get()
    assert first["epochs"][0]["publication"] == "published" and first["epochs"][0]["version"] == 1
    assert second["epochs"][0]["version"] == 2 and second["epochs"][0]["cached"]
    assert heatmap_recompute("spy")["epochs"][0]["publication"] == "published"


@pytest.mark.parametrize("model", ["heatmap", "gex"])
def test_runs_never_overlap(r: redis.Redis, model: str) -> None:
    golden_epoch(r)
    task = heatmap_recompute if model == "heatmap" else gex_recompute
    lock = r.lock(keys.model_lock(model, "SPY"), timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert task("SPY") == {"underlying": "SPY", "status": "skipped"}
        assert not r.exists(keys.model_view(model, "SPY"))
    finally:
        lock.release()
