"""The committer of ``python -m ingest`` against a real redis-server: batches of two underlyings, one of which
Redis refuses until its corrupted dirty set is repaired, sent one at a time (depth 1) and pipelined (depth 2).

Whatever was on the wire when the refusal came back, every trade lands exactly once, in order, and the
counters say exactly what landed: nothing lost, nothing counted twice, no GEX volume added twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from fabric import keys
from fabric.scripts import script_source
from fabric.settings import Settings
from ingest import service as service_module
from ingest.batch import Batch, EpochCall
from ingest.decode import SpotTick
from ingest.service import IngestConfig, IngestService
from models.heatmap import RECORD_BYTES
from tests.support.servers import RedisServer

E = "e1"
NOW = 1_800_000_000_000
CONTRACTS = {"SPY": "O:SPY:2025-12-19:650:C", "QQQ": "O:QQQ:2025-12-19:500:C"}
BATCHES = 12
#: a script that keeps the server busy for a second: the first batches queue up on the committer's socket
STALL = "local t = redis.call('TIME') repeat local n = redis.call('TIME') until (n[1] - t[1]) * 1e6 + n[2] - t[2] > 1e6"


def seed(r: redis.Redis) -> None:
    for u, cid in CONTRACTS.items():
        r.hset(keys.contract(u, E, "heatmap", cid), mapping={"multiplier": 100, "slot": 0, "bid": "1.00",
                                                              "ask": "1.20", "quote_ts_ms": NOW})  # fmt: skip
        r.hset(keys.contract(u, E, "gex", cid), mapping={"volume": 0})
        r.set(keys.heatmap_counters(u, E), bytes(RECORD_BYTES))


def batch(q: int, spot: bool = False) -> tuple[Batch, list, list[int]]:
    """One trade (size 2, at the ask: a buy) of each underlying's contract, sequence number ``q`` (and, with
    ``spot``, a SPY spot tick)."""
    calls = []
    for u, cid in CONTRACTS.items():
        call = EpochCall(u, E)
        call.add(cid, "T", "1.20", 2, NOW + q, q)
        calls.append(call)
    made = Batch(calls, {"SPY": SpotTick("SPY", 650.0, NOW + q)} if spot else {}, Counter(), len(calls), 0)
    return made, made.script_calls(60_000), [0]


async def commit_all(url: str, depth: int, r: redis.Redis, broken: str) -> Counter:
    """Feed the batches to a committer; repair the ``broken`` key once Redis has refused a write; return the
    counters."""
    client = AsyncRedis.from_url(url)
    service = IngestService(dataclasses.replace(Settings.from_env({}), redis_url=url), client,
                            IngestConfig(pipeline_depth=depth))  # fmt: skip
    for name in ("ingest_batch", "set_spot"):
        await client.script_load(script_source(name))
    stall = threading.Thread(target=lambda: redis.Redis.from_url(url).eval(STALL, 0))
    stall.start()  # Redis answers nothing for a second: at depth 2 two batches are on the wire by then
    await asyncio.sleep(0.05)
    committer = asyncio.create_task(service._committer())

    async def feed() -> None:
        for q in range(10, 10 + BATCHES):
            await service._commits.put(batch(q))

    feeder = asyncio.create_task(feed())
    try:
        while not service.stats.counters["redis_errors"]:
            await asyncio.sleep(0.002)
        r.delete(broken)  # repaired: the retries land
        await feeder
        await service._commits.join()
    finally:
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
        await client.aclose()
        stall.join()
    return service.stats.counters + Counter({f"rejects:{k}": v for k, v in service.stats.rejects.items()})


@pytest.mark.parametrize("depth", [1, 2])
def test_a_refused_underlying_is_retried_in_order_and_nothing_is_lost_or_counted_twice(
    redis_server: RedisServer, r: redis.Redis, depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_REFUSALS", 10_000)  # refused until repaired, never dropped
    seed(r)
    spy_dirty = keys.dirty_contracts("SPY", E)
    r.set(spy_dirty, "corrupted")  # every SPY call is refused (before any write) until repaired
    counters = asyncio.run(commit_all(redis_server.url_db(0), depth, r, spy_dirty))

    for u, cid in CONTRACTS.items():
        stored = r.hmget(keys.contract(u, E, "heatmap", cid), "trades", "volume", "trade_q", "buy_micro")
        assert stored == [str(BATCHES), str(2 * BATCHES), str(10 + BATCHES - 1), str(BATCHES * 240_000_000)], u
        assert r.smembers(keys.dirty_contracts(u, E)) == {cid}
    for u, cid in CONTRACTS.items():  # no GEX volume added twice by a retry
        assert r.hget(keys.contract(u, E, "gex", cid), "volume") == str(2 * BATCHES), u
    assert counters["trades_applied"] == 2 * BATCHES and counters["buys"] == 2 * BATCHES  # counted once each
    assert counters["rejects:out_of_sequence"] == 0 and counters["batches_dropped"] == 0
    assert counters["redis_errors"] >= 1 and counters["events_committed"] == 2 * BATCHES
    # depth 2: the second batch was sent before the first one's refusal came back; its SPY call named the
    # first one's mark and was refused, its QQQ call landed (and was counted, not sent again)
    assert counters["chain_refused"] == (1 if depth == 2 else 0)


async def commit_refused_for_good(url: str, depth: int, spot: bool) -> Counter:
    """Feed three batches to a committer while a key stays corrupted (never repaired); the counters."""
    client = AsyncRedis.from_url(url)
    service = IngestService(dataclasses.replace(Settings.from_env({}), redis_url=url), client,
                            IngestConfig(pipeline_depth=depth))  # fmt: skip
    for name in ("ingest_batch", "set_spot"):
        await client.script_load(script_source(name))
    committer = asyncio.create_task(service._committer())
    try:
        for q in range(10, 13):
            await service._commits.put(batch(q, spot))
        await asyncio.wait_for(service._commits.join(), 60)
    finally:
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
        await client.aclose()
    return service.stats.counters


@pytest.mark.parametrize("depth", [1, 2])
def test_a_batch_refused_for_good_counts_its_events_as_dropped_unless_only_its_spot_update_was_refused(
    redis_server: RedisServer, r: redis.Redis, depth: int
) -> None:
    """events_committed counts the events of batches whose every script call landed: a batch with a call
    refused for good is dropped (its events in events_dropped — the calls of other underlyings that landed
    stay applied and counted as applied); a batch whose only refused write is its spot update is committed."""
    seed(r)
    r.set(keys.dirty_contracts("SPY", E), "corrupted")  # every SPY call refused, for good; QQQ's land
    counters = asyncio.run(commit_refused_for_good(redis_server.url_db(0), depth, spot=False))
    assert counters["batches_dropped"] == 3 and counters["events_dropped"] == 6, counters
    assert counters["events_committed"] == 0 and counters["trades_applied"] == 3, counters
    assert r.hget(keys.contract("QQQ", E, "heatmap", CONTRACTS["QQQ"]), "trades") == "3"

    r.flushdb()
    seed(r)
    r.set(keys.spot("SPY"), "corrupted")  # set_spot refused, for good; every option call lands
    counters = asyncio.run(commit_refused_for_good(redis_server.url_db(0), depth, spot=True))
    assert counters["batches_dropped"] == 3 and counters["events_dropped"] == 0, counters
    assert counters["events_committed"] == 6 and counters["trades_applied"] == 6, counters
    for u, cid in CONTRACTS.items():
        assert r.hget(keys.contract(u, E, "heatmap", cid), "trades") == "3", u
