"""Smoke test of the ingest benchmark's parts: the replay server speaks Massive's protocol, and
``python -m ingest`` commits exactly the valid replayed events of its universe to Redis. No timing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import date
from pathlib import Path

import orjson
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from bench.feed_replay import ReplayFile, generate
from bench.ingest_throughput import (
    INGEST_ENV,
    Child,
    check_quote_subscriptions,
    quoted_tickers,
    start_ingest,
    start_replay,
)
from chain.decompose import decompose
from chain.store import write_decomposition
from fabric import keys
from fabric.contracts import contract_id_to_ticker
from tests.support.chains import chain_rows
from tests.support.servers import free_port

DB = 7  # a private database of the run's redis-server


async def _read_stream(port: int, expected_events: int) -> tuple[list[str], list[dict]]:
    statuses: list[str] = []
    events: list[dict] = []
    async with connect(f"ws://127.0.0.1:{port}/options", compression=None, max_size=2**24) as ws:
        statuses += [e["status"] for e in orjson.loads(await ws.recv())]
        await ws.send(orjson.dumps({"action": "auth", "params": "any-key"}).decode())
        statuses += [e["status"] for e in orjson.loads(await ws.recv())]
        await ws.send(orjson.dumps({"action": "subscribe", "params": "T.*,Q.O:SPY310117C00650000"}).decode())
        async with asyncio.timeout(10):
            while len(events) < expected_events:
                for e in orjson.loads(await ws.recv()):
                    if e["ev"] == "status":
                        statuses.append(e["status"])
                    else:
                        events.append(e)
    async with connect(f"ws://127.0.0.1:{port}/stocks", compression=None) as ws:
        statuses += [e["status"] for e in orjson.loads(await ws.recv())]
        await ws.send(orjson.dumps({"action": "auth", "params": "k"}).decode())
        await ws.send(orjson.dumps({"action": "subscribe", "params": "T.SPY"}).decode())
        statuses += [e["status"] for e in orjson.loads(await ws.recv())]
        statuses += [e["status"] for e in orjson.loads(await ws.recv())]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await ws.recv()  # the stocks feed carries nothing
    return statuses, events


def _status(r: redis.Redis) -> tuple[dict, dict]:
    status = r.hgetall(keys.ingest_status())
    return orjson.loads(status.get("counters") or "{}"), orjson.loads(status.get("rejects") or "{}")


def _spy_epoch(r: redis.Redis) -> tuple[str, list[str], list[str]]:
    """An empty database, then one 80-contract SPY epoch written by chain: (epoch, contract ids, tickers)."""
    r.flushdb()
    rows = chain_rows("SPY", [date(2031, 1, 17), date(2031, 2, 21)], [float(k) for k in range(640, 660)], spot=650.0)
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=())
    write_decomposition(r, dec, now_ms=time.time_ns() // 1_000_000, retire_ttl_s=300)
    cids = sorted(r.smembers(keys.epoch_universe("SPY", dec.epoch_id)))
    tickers = [contract_id_to_ticker(c) for c in cids]
    assert len(tickers) == 80
    return dec.epoch_id, cids, tickers


def test_replayed_events_are_committed_exactly(redis_server, tmp_path: Path) -> None:
    url = redis_server.url_db(DB)
    r = redis.Redis.from_url(url, decode_responses=True)
    epoch, cids, tickers = _spy_epoch(r)

    replay: ReplayFile = generate(tmp_path / "frames.jsonl", tickers, 20_000, frame_events=(500, 1_000), seed=3)
    assert replay.quotes + replay.trades == replay.events == 20_000 and replay.trades > 1_000
    assert set(replay.trade_placement) == {"at_ask", "at_bid", "inside", "outside"}
    dup_ticker, dup_q = next(iter(replay.last_quote_q.items()))
    invalid = [  # not in the universe, and a repeated sequence number: both must be dropped and counted
        {"ev": "T", "sym": "O:SPY310117C09999000", "p": 1.0, "s": 1, "t": replay.t_last_ms, "q": replay.q_last + 1},
        {"ev": "Q", "sym": dup_ticker, "bp": 1.0, "ap": 1.1, "bs": 1, "as": 1, "t": replay.t_last_ms, "q": dup_q},
    ]
    with open(replay.path, "ab") as fh:
        fh.write(orjson.dumps(invalid) + b"\n")

    port = free_port()
    server = start_replay(replay.path, port, "max")
    ingest: Child | None = None
    try:
        statuses, events = asyncio.run(_read_stream(port, replay.events + 2))
        assert statuses[:3] == ["connected", "auth_success", "success"]
        assert statuses[3:] == ["connected", "auth_success", "success"]
        assert len(events) == replay.events + 2
        last: dict[str, int] = {}
        for e in events[:-2]:
            key = f"{e['ev']}:{e['sym']}"
            assert e["q"] > last.get(key, 0)
            last[key] = e["q"]

        ingest = start_ingest(url, f"ws://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while True:
            counters, rejects = _status(r)
            if counters.get("events_in", 0) >= replay.events + 2 or time.monotonic() > deadline:
                break
            assert ingest.proc.poll() is None, ingest.tail()
            time.sleep(0.1)
        time.sleep(1.2)  # one more status update: nothing else may arrive
        counters, rejects = _status(r)
    finally:
        if ingest is not None:
            ingest.stop()
        server.stop()

    assert counters["events_in"] == replay.events + 2, (counters, rejects)
    assert rejects == {"unknown_contract": 1, "out_of_sequence": 1}
    assert counters["trades_applied"] == replay.trades
    assert counters["quotes_applied"] + counters.get("quotes_conflated", 0) == replay.quotes
    assert counters.get("overflow_frames", 0) == 0

    pipe = r.pipeline(transaction=False)
    for cid in cids:
        pipe.hmget(keys.contract("SPY", epoch, "heatmap", cid), "trades", "trade_q", "quote_q")
    stored = dict(zip(tickers, pipe.execute(), strict=True))
    assert {t: int(v[0]) for t, v in stored.items() if int(v[0] or 0)} == replay.trades_by_ticker  # "0": none
    assert {t: int(v[2]) for t, v in stored.items() if int(v[2] or 0)} == replay.last_quote_q
    assert r.scard(keys.dirty_contracts("SPY", epoch)) == len(replay.trades_by_ticker)
    r.flushdb()


def test_a_feed_for_quote_tickers_quotes_only_those_and_the_server_reports_any_left_unsubscribed(
    tmp_path: Path,
) -> None:
    """Massive sends quotes only for subscribed contracts (at most 1,000 per connection): a file generated for
    ingest's quoted contracts carries quotes for those alone, and the replay server says after every
    subscription change how many of the file's quoted tickers the client has not subscribed."""
    tickers = [f"O:SPY310117C00{k:03d}000" for k in range(600, 640)]
    quoted = tickers[5:15]
    replay = generate(tmp_path / "q.jsonl", tickers, 6_000, frame_events=(200, 400), seed=5, quote_tickers=quoted)
    events = [e for line in replay.path.read_bytes().splitlines() for e in orjson.loads(line)]
    assert len(events) == replay.events == 6_000
    assert {e["sym"] for e in events if e["ev"] == "Q"} == set(quoted) and replay.quoted == len(quoted)
    assert len({e["sym"] for e in events if e["ev"] == "T"} - set(quoted)) > 20  # trades for the others too
    assert 0.75 < replay.quotes / replay.events < 0.85
    with pytest.raises(ValueError, match="not one of the tickers"):
        generate(tmp_path / "bad.jsonl", tickers, 100, quote_tickers=["O:SPY310117P00600000"])

    async def subscribe(port: int, steps: list[tuple[str, list[str], bool]], server: Child) -> list[str]:
        seen: list[str] = []
        async with connect(f"ws://127.0.0.1:{port}/options", compression=None, max_size=2**24) as ws:
            drain = asyncio.create_task(_drain(ws))
            await ws.send(orjson.dumps({"action": "auth", "params": "k"}).decode())
            for action, topics, all_subscribed in steps:
                before = server.last("replay quote subscriptions")
                await ws.send(orjson.dumps({"action": action, "params": ",".join(topics)}).decode())
                async with asyncio.timeout(10):
                    while server.last("replay quote subscriptions") in (None, before):
                        await asyncio.sleep(0.02)
                seen.append(server.last("replay quote subscriptions") or "")
                if all_subscribed:
                    check_quote_subscriptions(server, replay.quoted)
                else:
                    with pytest.raises(RuntimeError, match="not all subscribed"):
                        check_quote_subscriptions(server, replay.quoted)
            drain.cancel()
        return seen

    port = free_port()
    server = start_replay(replay.path, port, "max")
    try:
        seen = asyncio.run(subscribe(port, [
            ("subscribe", ["T.*", *(f"Q.{t}" for t in quoted[:4])], False),
            ("subscribe", [f"Q.{t}" for t in quoted[4:]], True),
            ("unsubscribe", [f"Q.{quoted[0]}"], False),
        ], server))  # fmt: skip
    finally:
        server.stop()
    assert [line.split("replay ", 1)[1] for line in seen] == [
        "quote subscriptions 4, quoted tickers of the file not subscribed 6",
        "quote subscriptions 10, quoted tickers of the file not subscribed 0",
        "quote subscriptions 9, quoted tickers of the file not subscribed 1",
    ]


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def test_the_benchmark_feed_quotes_exactly_the_contracts_ingest_subscribes_quotes_to(
    redis_server, tmp_path: Path
) -> None:
    """``quoted_tickers`` is ingest's own plan: a feed generated for it passes the subscription check once
    ``python -m ingest`` has subscribed, and a feed quoting other contracts fails it. A quote cap of 20 on an
    80-contract universe, so the ranking decides."""
    url = redis_server.url_db(DB)
    r = redis.Redis.from_url(url, decode_responses=True)
    _, cids, tickers = _spy_epoch(r)
    plan = {**INGEST_ENV, "MMAKER_INGEST_QUOTES_PER_CONNECTION": "20"}
    quoted = quoted_tickers(r, "SPY", cids, plan)
    assert len(quoted) == 20 and set(quoted) < set(tickers)
    others = [t for t in tickers if t not in quoted][:20]

    def subscription_report(quote_tickers: list[str]) -> tuple[str, RuntimeError | None]:
        replay = generate(tmp_path / "f.jsonl", tickers, 4_000, frame_events=(200, 400), seed=9,
                          quote_tickers=quote_tickers)  # fmt: skip
        port = free_port()
        server = start_replay(replay.path, port, "max")
        ingest: Child | None = None
        try:
            ingest = start_ingest(url, f"ws://127.0.0.1:{port}", plan_env=plan)
            line = server.wait_for("replay quote subscriptions", 30)
            try:
                check_quote_subscriptions(server, replay.quoted)
            except RuntimeError as exc:
                return line, exc
            return line, None
        finally:
            if ingest is not None:
                ingest.stop()
            server.stop()

    line, failure = subscription_report(quoted)
    assert failure is None and line.endswith("quote subscriptions 20, quoted tickers of the file not subscribed 0")
    line, failure = subscription_report(others)
    assert failure is not None and line.endswith("quote subscriptions 20, quoted tickers of the file not subscribed 20")
    r.flushdb()
