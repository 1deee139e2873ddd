"""The ingest service against the simulator (real WebSocket) and a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator

import orjson
import pytest
import redis

from chain.snapshot import run_snapshot
from fabric import keys
from fabric.epochs import active_epoch
from fabric.redis_client import async_redis_from_settings
from fabric.settings import Settings
from ingest.service import IngestConfig, IngestService
from tests.support.servers import ROOT, SimProcess
from tests.support.waiting import until


@pytest.fixture(scope="module")
def feed() -> Iterator[SimProcess]:
    process = SimProcess("--tick-rate", "4000", underlyings="SPY", seed=21).start()
    yield process
    process.stop()


@pytest.fixture
def settings(feed: SimProcess, redis_server) -> Settings:
    return dataclasses.replace(
        Settings.from_env({}),
        redis_url=redis_server.url_db(0),
        massive_rest_url=feed.rest_url,
        massive_ws_url=feed.ws_url,
        underlyings=("SPY",),
        epoch_required_components=(),  # no model workers here: promotion must not wait for them
    )


SCENARIO_TIMEOUT_S = 90.0


def with_service(
    settings: Settings, scenario: Callable[[IngestService], Awaitable[None]], config: IngestConfig | None = None
) -> None:
    async def main() -> None:
        client = async_redis_from_settings(settings)
        service = IngestService(settings, client, config)
        task = asyncio.create_task(service.run())
        try:
            done, _ = await asyncio.wait([asyncio.ensure_future(scenario(service)), task], timeout=SCENARIO_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not done:
                raise AssertionError(f"scenario did not finish in {SCENARIO_TIMEOUT_S}s: {service.status()}")
            for finished in done:
                finished.result()  # the scenario's assertion, or the service's crash
            assert not task.done(), "the ingest service stopped during the scenario"
        finally:
            task.cancel()
            try:
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            except TimeoutError:
                import io

                out = io.StringIO()
                for pending in asyncio.all_tasks():
                    pending.print_stack(limit=8, file=out)
                raise AssertionError("the ingest service did not stop when cancelled:\n" + out.getvalue()) from None
            await client.aclose()

    asyncio.run(main())


def test_ticks_reach_the_active_epoch_and_the_epoch_is_accepted(r: redis.Redis, settings: Settings) -> None:
    assert run_snapshot(r, settings, "SPY").status == "created"
    epoch = active_epoch(r, "SPY")

    async def scenario(service: IngestService) -> None:
        await until(
            lambda: service.stats.counters["trades_applied"] > 20 and service.stats.counters["quotes_applied"] > 20
        )
        await until(lambda: r.hget(keys.ingest_status(), "connected") == "1")
        await until(lambda: r.sismember(keys.epoch_ready("SPY", epoch), "ingest"))

    with_service(settings, scenario)
    dirty = r.smembers(keys.dirty_contracts("SPY", epoch))
    assert dirty
    h = r.hgetall(keys.contract("SPY", epoch, "heatmap", sorted(dirty)[0]))
    assert int(h["trades"]) >= 1 and int(h["volume"]) >= 1 and "trade_q" in h
    spot = r.hgetall(keys.spot("SPY"))
    assert spot["source"] == "stocks" and float(spot["price"]) > 0
    status = r.hgetall(keys.ingest_status())
    assert int(status["subscriptions_trades"]) == r.scard(keys.epoch_universe("SPY", epoch))
    assert int(status["subscriptions_quotes"]) == 1000
    assert float(status["lag_ms_p50"]) >= 0 and int(status["events_committed"]) > 0


def test_reconnects_after_the_feed_drops_every_connection(r: redis.Redis, settings: Settings, feed: SimProcess) -> None:
    run_snapshot(r, settings, "SPY")

    async def scenario(service: IngestService) -> None:
        options = service.connections["options-0"]
        await until(lambda: service.stats.counters["trades_applied"] > 0)
        feed.admin("/admin/drop_connections")
        await until(lambda: options.counters["reconnects"] >= 1)
        before = service.stats.counters["trades_applied"]
        await until(lambda: options.connected and service.stats.counters["trades_applied"] > before + 10)
        assert options.subscribed == options.desired and len(options.desired) > 1000

    with_service(settings, scenario)


def test_a_new_epoch_changes_only_the_difference(r: redis.Redis, settings: Settings, feed: SimProcess) -> None:
    first = run_snapshot(r, settings, "SPY")

    async def scenario(service: IngestService) -> None:
        options = service.connections["options-0"]
        await until(lambda: options.connected and options.subscribed == options.desired and options.desired)
        messages_before = dict(options.counters)
        trades_before = {t for t in options.subscribed if t.startswith("T.")}

        feed.admin("/admin/topology?underlying=SPY&action=list_expiry")
        grown = await asyncio.to_thread(run_snapshot, r, settings, "SPY")
        assert grown.status == "created" and grown.promotion == "promoted"
        await until(lambda: len([t for t in options.subscribed if t.startswith("T.")]) == grown.contracts)
        added = grown.contracts - first.contracts
        # one message adds the new contracts' trades (and any quote that moved up the ranking); quotes that
        # moved down leave in at most one unsubscribe message; no trade topic is dropped
        assert options.counters["subscribe_messages"] - messages_before.get("subscribe_messages", 0) == 1
        assert options.counters["unsubscribe_messages"] - messages_before.get("unsubscribe_messages", 0) <= 1
        assert added > 0 and trades_before < {t for t in options.subscribed if t.startswith("T.")}

        feed.admin("/admin/topology?underlying=SPY&action=expire_0dte")
        shrunk = await asyncio.to_thread(run_snapshot, r, settings, "SPY")
        assert shrunk.status == "created" and shrunk.contracts < grown.contracts
        await until(lambda: len([t for t in options.subscribed if t.startswith("T.")]) == shrunk.contracts)
        assert options.counters["unsubscribe_messages"] >= messages_before.get("unsubscribe_messages", 0) + 1
        assert options.counters["reconnects"] == 0  # never a full resubscribe

    with_service(settings, scenario)


def test_quotes_are_capped_per_connection_and_spread_over_connections(r: redis.Redis, settings: Settings) -> None:
    run_snapshot(r, settings, "SPY")
    config = dataclasses.replace(IngestConfig.from_settings(settings), quote_connections=2)

    async def scenario(service: IngestService) -> None:
        conns = [service.connections["options-0"], service.connections["options-1"]]
        await until(lambda: all(c.connected and c.subscribed == c.desired and c.desired for c in conns))
        quoted = [{t for t in c.subscribed if t.startswith("Q.")} for c in conns]
        assert [len(q) for q in quoted] == [1000, 1000] and not quoted[0] & quoted[1]
        assert not any(t.startswith("T.") for t in conns[1].subscribed)
        await until(lambda: service.stats.counters["quotes_applied"] > 50)
        assert all(c.counters["status:error"] == 0 for c in conns)

    with_service(settings, scenario, config)


def test_quotes_cover_the_nearest_strikes_and_expiries_first(r: redis.Redis, settings: Settings) -> None:
    run_snapshot(r, settings, "SPY")
    spot = float(r.hget(keys.spot("SPY"), "price"))

    async def scenario(service: IngestService) -> None:
        options = service.connections["options-0"]
        await until(lambda: options.connected and options.desired)
        quoted = [t[2:] for t in options.desired if t.startswith("Q.")]
        strikes = [int(t[-8:]) / 1000 for t in quoted]
        assert max(abs(k / spot - 1) for k in strikes) < 0.15
        all_trades = [t[2:] for t in options.desired if t.startswith("T.")]
        nearest_expiry = min(t[-15:-9] for t in all_trades)
        assert any(t[-15:-9] == nearest_expiry for t in quoted)

    with_service(settings, scenario)


def test_auth_failure_exits_non_zero_with_a_clear_message(redis_server) -> None:
    locked = SimProcess("--api-key", "the-right-key", underlyings="SPY", seed=2).start()
    try:
        env = {
            **os.environ,
            "MASSIVE_API_KEY": "wrong-key-123456",
            "MASSIVE_WS_URL": locked.ws_url,
            "MMAKER_UNDERLYINGS": "SPY",
            "REDIS_URL": redis_server.url_db(0),
        }
        done = subprocess.run(
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        locked.stop()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refused the API key" in done.stderr and "MASSIVE_API_KEY" in done.stderr
    assert "wrong-key-123456" not in done.stderr + done.stdout


def test_status_rejects_are_published(r: redis.Redis, settings: Settings) -> None:
    run_snapshot(r, settings, "SPY")

    async def scenario(service: IngestService) -> None:
        await until(lambda: service.connections["options-0"].connected)
        service._on_frame(
            '[{"ev":"T","sym":"O:ZZZ251219C00001000","p":1,"s":1,"t":1,"q":1}, 7]', 0, service.connections["options-0"]
        )
        service._on_frame(b"\x00garbage", 0, service.connections["options-0"])
        await until(lambda: service.stats.rejects["malformed_frame"] == 1)
        await until(lambda: "unknown_contract" in (r.hget(keys.ingest_status(), "rejects") or ""))
        rejects = orjson.loads(r.hget(keys.ingest_status(), "rejects"))
        assert rejects["not_an_object"] == 1 and rejects["unknown_contract"] >= 1

    with_service(settings, scenario)
