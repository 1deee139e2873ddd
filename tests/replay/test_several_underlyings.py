"""SPY, SPX and QQQ at once: one ingest process, quote connections sharded under the 1,000 cap, and every
underlying's heatmap and GEX view published by the same task code the workers run."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator

import pytest
import redis

from beat_schedule import build_beat_schedule
from beat_schedule.schedule import ChainSchedule
from chain.snapshot import run_snapshot
from fabric import keys
from fabric.epochs import active_epoch
from fabric.redis_client import async_redis_from_settings
from fabric.settings import Settings
from ingest.service import IngestService
from tasks.gex import recompute as gex_recompute
from tasks.heatmap import recompute as heatmap_recompute
from tests.support.servers import RedisServer, SimProcess

UNDERLYINGS = ("SPY", "SPX", "QQQ")


@pytest.fixture(scope="module")
def feed() -> Iterator[SimProcess]:
    process = SimProcess("--tick-rate", "6000", underlyings=",".join(UNDERLYINGS), seed=3).start()
    yield process
    process.stop()


def test_three_underlyings_share_one_ingest_and_all_publish(feed: SimProcess, redis_server: RedisServer) -> None:
    settings = dataclasses.replace(
        Settings.from_env({"MMAKER_UNDERLYINGS": ",".join(UNDERLYINGS), "MMAKER_INGEST_QUOTE_CONNECTIONS": "3"}),
        redis_url=redis_server.url_db(0),
        massive_rest_url=feed.rest_url,
        massive_ws_url=feed.ws_url,
        epoch_required_components=(),
    )
    assert settings.underlyings == UNDERLYINGS and settings.ingest_quote_connections == 3
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    r.flushdb()
    epochs = {}
    for u in UNDERLYINGS:
        outcome = run_snapshot(r, settings, u)
        assert outcome.status == "created" and outcome.promotion == "promoted", outcome
        epochs[u] = active_epoch(r, u)
    assert len(set(epochs.values())) == 3

    async def scenario() -> dict[str, object]:
        client = async_redis_from_settings(settings)
        service = IngestService(settings, client)
        task = asyncio.create_task(service.run())
        try:
            options = [service.connections[f"options-{k}"] for k in range(3)]
            deadline = time.monotonic() + 60

            def ready() -> bool:
                settled = all(c.connected and c.desired and c.subscribed == c.desired for c in options)
                return settled and all(r.scard(keys.dirty_contracts(u, epochs[u])) > 20 for u in UNDERLYINGS)

            while not ready():
                assert time.monotonic() < deadline and not task.done(), service.status()
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # a status write after the subscriptions settled
            return {
                "quotes": [{t for t in c.subscribed if t.startswith("Q.")} for c in options],
                "trades": [{t for t in c.subscribed if t.startswith("T.")} for c in options],
                "errors": [c.counters["status:error"] for c in options],
                "spot": {name: c.subscribed for name, c in service.connections.items() if not name.startswith("opt")},
            }
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()

    seen = asyncio.run(scenario())
    universe = {u: r.smembers(keys.epoch_universe(u, epochs[u])) for u in UNDERLYINGS}
    total = sum(len(members) for members in universe.values())
    # trades: every contract of every underlying on options-0; quotes: three disjoint slices of 1,000 (the
    # simulator, like Massive, refuses a 1,001st and would have answered with an error status)
    assert len(seen["trades"][0]) == total and seen["trades"][1] == seen["trades"][2] == set()
    assert [len(q) for q in seen["quotes"]] == [1000, 1000, 1000] and total > 3000
    assert not (seen["quotes"][0] & seen["quotes"][1]) and not (seen["quotes"][1] & seen["quotes"][2])
    assert seen["errors"] == [0, 0, 0]
    quoted_roots = {t.split(":")[1][:3] for q in seen["quotes"] for t in q}
    assert quoted_roots == {"SPY", "SPX", "QQQ"}  # the ranking is interleaved: each underlying gets quotes
    assert seen["spot"] == {"stocks": frozenset({"T.SPY", "T.QQQ"}), "indices": frozenset({"V.I:SPX"})}
    status = r.hgetall(keys.ingest_status())
    assert int(status["subscriptions_quotes"]) == 3000 and int(status["subscriptions_trades"]) == total

    for u in UNDERLYINGS:
        assert float(r.hget(keys.spot(u), "price")) > 0
        assert r.hget(keys.chain_cadence(u), "interval_s")  # each underlying keeps its own cadence
        for recompute in (heatmap_recompute, gex_recompute):  # the task shells, with their per-model locks
            (run,) = recompute(u)["epochs"]
            assert run["epoch"] == epochs[u] and run["publication"] == "published", run
        heatmap = json.loads(r.get(keys.model_view("heatmap", u)))
        gex = json.loads(r.get(keys.model_view("gex", u)))
        assert heatmap["underlying"] == gex["underlying"] == u
        assert heatmap["epoch"] == gex["epoch"] == epochs[u]
        assert sum(tile["trades"] for tile in heatmap["tiles"]) > 0 and gex["contracts_used"] > 0
        assert heatmap["bucket_width"] == settings.bucket_width(u)


def test_beat_schedules_every_underlying() -> None:
    settings = Settings.from_env({"MMAKER_UNDERLYINGS": ",".join(UNDERLYINGS)})
    schedule = build_beat_schedule(settings)
    for u in UNDERLYINGS:
        chain = [e for e in schedule.values() if e["task"] == "tasks.chain.snapshot" and e["args"] == (u,)]
        assert len(chain) == 1 and isinstance(chain[0]["schedule"], ChainSchedule)
        for task in ("tasks.heatmap.recompute", "tasks.gex.recompute", "tasks.epochs.promote"):
            assert [e for e in schedule.values() if e["task"] == task and tuple(e["args"]) == (u,)]
