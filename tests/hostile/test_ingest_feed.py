"""A hostile feed against the real ``python -m ingest``: frames no market sends, statuses by the million, a
socket that goes quiet, a key refused after it was taken.

The feed is :class:`~tests.hostile.feed_server.ScriptedFeed` (it sends exactly what a test hands it); the epoch
comes from a simulator snapshot into a redis-server of the test's own. Each case asserts that the process still
runs, that every valid event sent beside the hostile ones is committed exactly once (trades in the hashes =
trades applied), that no absurd value reaches Redis, and that the counter naming the case moved.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
import redis

from fabric import keys
from fabric.contracts import contract_id_to_ticker
from ingest.decode import SEQUENCE_RESTART_GAP_MS
from tests.hostile.feed_server import ScriptedFeed, status_frame
from tests.support.ingest import Running, U, ingest_running, log_text, status, trades_in_redis
from tests.support.waiting import wait_for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connection(r: redis.Redis, name: str) -> dict:
    """The status of one of ingest's connections (its counters included)."""
    return orjson.loads(r.hget(keys.ingest_status(), "connections") or "{}").get(name, {})


class Market:
    """Valid events for the epoch's contracts, with sequence numbers that only grow."""

    def __init__(self, run: Running) -> None:
        cids = sorted(run.r.smembers(keys.epoch_universe(U, run.epoch)))
        self.tickers = [contract_id_to_ticker(cid) for cid in cids]
        self.cid = dict(zip(self.tickers, cids, strict=True))
        self.q = 1_000_000_000

    def next_q(self) -> int:
        self.q += 1
        return self.q

    def trade(self, i: int, price: float = 1.25, size: int = 1) -> dict:
        return {"ev": "T", "sym": self.tickers[i], "x": 65, "p": price, "s": size, "c": [209], "t": now_ms(),
                "q": self.next_q()}  # fmt: skip

    def quote(self, i: int, bid: float = 1.2, ask: float = 1.3, **fields: object) -> dict:
        return {"ev": "Q", "sym": self.tickers[i], "bx": 1, "ax": 1, "bp": bid, "ap": ask, "bs": 5, "as": 7,
                "t": now_ms(), "q": self.next_q(), **fields}  # fmt: skip


def trades_applied(r: redis.Redis) -> int:
    return status(r)[0].get("trades_applied", 0)


@pytest.fixture(scope="module")
def feed() -> Iterator[ScriptedFeed]:
    server = ScriptedFeed().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def running(feed: ScriptedFeed) -> Iterator[Running]:
    with ingest_running(seed=31, ws_url=feed.url, tick_rate=0) as run:
        wait_for(lambda: feed.connected("options") and feed.connected("stocks"), 30, "ingest subscribed", run.log)
        yield run


def test_a_frame_with_nan_and_integers_past_64_bits_is_counted_and_its_valid_events_land(
    feed: ScriptedFeed, running: Running
) -> None:
    """The frame that stopped ingest — and then the whole stack — again and again: NaN (only the lenient
    parser reads it) beside integers past 64 bits in every field. Every hostile event is counted, every
    valid one beside them lands, and the process lives."""
    r, market = running.r, Market(running)
    before, rejects_before = status(r)
    frames = []
    for i in range(200):
        valid = market.trade(i % 50)
        huge = {**market.quote(i % 50), "q": 10**30}  # the contract's real sequence captured for good, once
        late = {**market.trade(i % 50), "t": 2**64 + i}
        wide = {**market.trade(i % 50), "s": 2**64}
        text = json.dumps([valid, huge, late, wide])  # (orjson cannot write integers past 64 bits)
        nan = f'{{"ev":"T","sym":"{market.tickers[i % 50]}","p":NaN,"s":1,"t":{now_ms()},"q":{market.next_q()}}},'
        frames.append(text.replace("[", "[" + nan, 1))
    assert feed.send("options", frames) == 1
    wait_for(lambda: trades_applied(r) >= before.get("trades_applied", 0) + 200, 30, "the valid trades", running.log)
    assert running.proc.poll() is None, log_text(running)
    counters, rejects = status(r)
    grew = {k: rejects.get(k, 0) - rejects_before.get(k, 0) for k in rejects}
    assert grew["bad_price"] == 200 and grew["bad_time_or_sequence"] == 200 and grew["time_out_of_window"] == 200
    assert grew["bad_size"] == 200
    assert counters["trades_applied"] - before.get("trades_applied", 0) == 200
    assert counters.get("batches_unbuildable", 0) == counters.get("frames_failed", 0) == 0
    assert trades_in_redis(r, running.epoch) == counters["trades_applied"]
    quote_qs = {int(r.hget(keys.contract(U, running.epoch, "heatmap", market.cid[t]), "quote_q") or 0)
                for t in market.tickers[:50]}  # fmt: skip
    assert max(quote_qs) < 2**53  # no absurd sequence number was stored


def test_one_absurd_time_or_sequence_number_captures_nothing(feed: ScriptedFeed, running: Running) -> None:
    """Newer-wins rules fed one absurd value: a stock print stamped 2^64 − 1 (and a spot a previous version
    stored with such a time), quotes numbered 2^64 − 1, 2^63 − 1 and 2^53 − 1. None holds its key: the spot
    follows the next real print, and the contract's quotes the next real quote — at once for the values past
    the bound, once the restart gap has passed for 2^53 − 1 (the largest value allowed)."""
    r, market = running.r, Market(running)
    spot_key = keys.spot(U)
    feed.send("stocks", [json.dumps([{"ev": "T", "sym": U, "p": 999_999.0, "s": 100, "t": 2**64 - 1, "q": 5}])])
    feed.send("stocks", [orjson.dumps([{"ev": "T", "sym": U, "p": 601.25, "s": 100, "t": now_ms(), "q": 6}])])
    wait_for(lambda: r.hget(spot_key, "price") == "601.25", 30, "the real print's spot", running.log)
    r.hset(spot_key, mapping={"price": "999999.0", "ts_ms": str(2**64 - 1), "source": "stocks"})  # poisoned before
    feed.send("stocks", [orjson.dumps([{"ev": "T", "sym": U, "p": 602.5, "s": 100, "t": now_ms(), "q": 7}])])
    wait_for(lambda: r.hget(spot_key, "price") == "602.5", 30, "a poisoned spot replaced", running.log)

    key = keys.contract(U, running.epoch, "heatmap", market.cid[market.tickers[60]])
    for absurd in (2**64 - 1, 2**63 - 1):
        feed.send("options", [json.dumps([market.quote(60, bid=9.0, ask=9.5, q=absurd)])])
    real = market.quote(60, bid=1.5, ask=1.6)
    feed.send("options", [orjson.dumps([real])])
    wait_for(lambda: r.hget(key, "quote_q") == str(real["q"]), 30, "the real quote", running.log)
    capture = market.quote(60, bid=8.0, ask=8.5, q=2**53 - 1)
    feed.send("options", [orjson.dumps([capture])])
    wait_for(lambda: r.hget(key, "quote_q") == str(2**53 - 1), 30, "the largest sequence number", running.log)
    time.sleep(SEQUENCE_RESTART_GAP_MS / 1000)  # the feed's clock passes the capturing event's time
    after = market.quote(60, bid=1.7, ask=1.8)
    feed.send("options", [orjson.dumps([after])])
    wait_for(lambda: r.hget(key, "quote_q") == str(after["q"]), 30, "the quote after the gap", running.log)
    assert r.hget(key, "bid") == "1.7"
    wait_for(lambda: status(r)[0].get("sequence_restarts", 0) >= 1 and status(r)[0].get("sequence_restarts_applied"),
             30, "the restart counted", running.log)  # fmt: skip
    assert running.proc.poll() is None


def test_a_million_distinct_statuses_grow_neither_the_status_nor_the_log(feed: ScriptedFeed, running: Running) -> None:
    """Status texts come from the feed: counted under fixed names (``other``), logged at most once per kind
    every few seconds. The status hash stays small, and ingest goes on committing."""
    r, market = running.r, Market(running)
    log_before = len(log_text(running).splitlines())
    sent = 0
    for block in range(100):
        events = [{"ev": "status", "status": f"weird-{block}-{i}", "message": "x" * 50} for i in range(1_000)]
        feed.send("options", [orjson.dumps(events)])
        sent += len(events)
    wait_for(lambda: connection(r, "options-0").get("status:other", 0) >= sent, 60, "every status counted",
             running.log)  # fmt: skip
    applied = trades_applied(r)
    feed.send("options", [orjson.dumps([market.trade(70)])])
    wait_for(lambda: trades_applied(r) == applied + 1, 30, "a trade after the flood", running.log)
    assert len(r.hget(keys.ingest_status(), "connections") or "") < 4_000
    assert len(log_text(running).splitlines()) - log_before < 40
    assert running.proc.poll() is None


@pytest.fixture
def quiet_feed() -> Iterator[tuple[ScriptedFeed, Running]]:
    """A feed of its own and an ingest that calls a connection silent after 2 s."""
    server = ScriptedFeed().start()
    try:
        with ingest_running(seed=32, ws_url=server.url, tick_rate=0, env={"MMAKER_INGEST_SILENT_S": "2"}) as run:
            wait_for(lambda: server.connected("options") and server.connected("stocks"), 30, "subscribed", run.log)
            yield server, run
    finally:
        server.stop()


def test_an_options_socket_that_goes_quiet_while_stocks_talk_is_noticed_and_reconnected(
    quiet_feed: tuple[ScriptedFeed, Running],
) -> None:
    feed, run = quiet_feed
    talking = threading.Event()

    def stocks() -> None:
        q = 10
        while not talking.wait(0.2):
            q += 1
            feed.send("stocks", [orjson.dumps([{"ev": "T", "sym": U, "p": 600.0, "s": 100, "t": now_ms(), "q": q}])])

    thread = threading.Thread(target=stocks, daemon=True)
    thread.start()
    try:
        logins = feed.logins["options"]
        wait_for(lambda: connection(run.r, "options-0").get("restarted:silent", 0) >= 1, 30,
                 "the silent options connection restarted", run.log)  # fmt: skip
        wait_for(lambda: feed.logins["options"] > logins and feed.connected("options"), 30, "options back", run.log)
        assert status(run.r)[0]["silent_restarts"] >= 1
        assert connection(run.r, "stocks").get("restarted:silent", 0) == 0  # the one that talks is left alone
        assert "received nothing for" in log_text(run)
        assert run.proc.poll() is None
    finally:
        talking.set()
        thread.join(5)


def test_auth_failed_after_a_successful_login_is_retried_not_fatal(quiet_feed: tuple[ScriptedFeed, Running]) -> None:
    """``auth_failed`` on a connection that was authenticated, and again at the next logins: the feed's word
    against a key it took. The connection backs off and tries again; the process lives; once the feed takes the
    key again, events land."""
    feed, run = quiet_feed
    market = Market(run)
    feed.refuse_auth = True
    logins = feed.logins["options"]
    feed.send("options", [status_frame("auth_failed", "authentication failed")])
    wait_for(lambda: feed.logins["options"] >= logins + 2, 60, "logins retried after auth_failed", run.log)
    assert run.proc.poll() is None, log_text(run)
    feed.refuse_auth = False
    wait_for(lambda: feed.connected("options"), 60, "options subscribed again", run.log)
    applied = trades_applied(run.r)
    feed.send("options", [orjson.dumps([market.trade(3)])])
    wait_for(lambda: trades_applied(run.r) == applied + 1, 30, "a trade after the refusals", run.log)
    assert connection(run.r, "options-0").get("status:auth_failed", 0) >= 2
    assert run.proc.poll() is None
