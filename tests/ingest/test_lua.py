"""``lua/ingest_batch.lua`` against a real redis-server: classification, exact micro-dollars, sequence, structure."""

from __future__ import annotations

import struct

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import keys
from fabric.scripts import script
from ingest.batch import EXPECT_ARG, MARK_ARG, BatchBuilder, EpochCall, SequenceFilter, Universe
from models.heatmap import COUNTERS, RECORD_BYTES, RECORD_FORMAT, UNREADABLE, apply_trade

U, E = "SPY", "e1"
CID = "O:SPY:2025-12-19:650:C"
HM, GX = keys.contract(U, E, "heatmap", CID), keys.contract(U, E, "gex", CID)
RECORDS = keys.heatmap_counters(U, E)
NOW = 1_800_000_000_000


def seed(
    r: redis.Redis, *, bid: str | None = "1.00", ask: str | None = "1.10", quote_ts: int = NOW, multiplier: int = 100
) -> None:
    fields = {"strike": "650", "expiry": "2025-12-19", "cp": "C", "tile": "0", "slot": "1", "multiplier": multiplier}
    if bid is not None:
        fields.update(bid=bid, ask=ask, quote_ts_ms=quote_ts)
    r.hset(HM, mapping=fields)
    r.hset(GX, mapping={"strike": "650", "volume": 10})
    r.set(RECORDS, bytes(3 * RECORD_BYTES))  # slots 0 … 2 of the epoch; the contract is slot 1


def raw(r: redis.Redis) -> redis.Redis:
    """A client on the same server that returns bytes (the records are binary)."""
    kwargs = r.connection_pool.connection_kwargs
    return redis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0))


def record(r: redis.Redis) -> tuple[int, ...]:
    """The contract's counter record (slot 1) as ingest left it."""
    return struct.unpack(RECORD_FORMAT, raw(r).getrange(RECORDS, RECORD_BYTES, 2 * RECORD_BYTES - 1))


def assert_record_is_the_hash(r: redis.Redis) -> None:
    """The record ingest wrote in the same call holds exactly the hash's counters — or, when one of them
    reached 2^53 (no longer exact in a Lua number), the unreadable mark; its neighbours are untouched."""
    stored = r.hgetall(HM)
    counters = tuple(int(stored.get(name, 0)) for name in COUNTERS)
    if any(abs(value) >= 2**53 for value in counters):
        assert record(r)[4] == UNREADABLE
    else:
        assert record(r) == counters
    records = raw(r).get(RECORDS)
    assert len(records) == 3 * RECORD_BYTES
    assert records[:RECORD_BYTES] == records[2 * RECORD_BYTES :] == bytes(RECORD_BYTES)


def run(r: redis.Redis, events: list[tuple], max_age_ms: int = 60_000, bad_counters: int = 0) -> list[int]:
    """The script's reply without its last element, the count of bad stored counters (checked here)."""
    call = EpochCall(U, E)
    for kind, cid, *values in events:
        call.add(cid, kind, *values)
    reply = script(r, "ingest_batch")(keys=call.keys(), args=call.args(max_age_ms))
    assert reply[6] == bad_counters
    return reply[:6]


def trade(price: str, size: int = 1, q: int = 10, ts: int = NOW + 1, cid: str = CID) -> tuple:
    return ("T", cid, price, size, ts, q)


def quote(bid: str, ask: str, q: int, ts: int = NOW + 1, cid: str = CID) -> tuple:
    return ("Q", cid, bid, ask, 5, 6, ts, q)


@pytest.mark.parametrize(
    ("price", "sign"),
    [("1.10", 1), ("1.25", 1), ("1.00", -1), ("0.95", -1), ("1.08", 1), ("1.02", -1), ("1.05", 0)],
    ids=["at-ask", "above-ask", "at-bid", "below-bid", "inside-near-ask", "inside-near-bid", "midpoint"],
)
def test_quote_rule(r: redis.Redis, price: str, sign: int) -> None:
    seed(r)
    assert run(r, [trade(price, size=3)]) == [0, 1, 0, 0, int(sign > 0), int(sign < 0)]
    micro = round(float(price) * 1e6) * 3 * 100
    h = r.hgetall(HM)
    assert int(h.get("flow_micro", 0)) == sign * micro
    assert int(h.get("buy_micro", 0)) == (micro if sign > 0 else 0)
    assert int(h.get("sell_micro", 0)) == (micro if sign < 0 else 0)
    assert h["volume"] == "3" and h["trades"] == "1" and h["last_price"] == price and h["trade_q"] == "10"
    assert r.hget(GX, "volume") == "13"
    assert r.smembers(keys.dirty_contracts(U, E)) == {CID}


@pytest.mark.parametrize(
    ("bid", "ask", "quote_ts"),
    [
        (None, None, NOW),
        ("1.20", "1.10", NOW),
        ("1.10", "1.10", NOW),
        ("0", "0", NOW),
        ("1.00", "1.10", NOW - 61_000),
    ],
    ids=["no-quote", "crossed", "locked-at-the-quote", "no-ask", "stale"],
)
def test_unusable_quote_leaves_the_trade_unsigned(r: redis.Redis, bid, ask, quote_ts) -> None:
    seed(r, bid=bid, ask=ask, quote_ts=quote_ts)
    assert run(r, [trade("1.10")]) == [0, 1, 0, 0, 0, 0]
    h = r.hgetall(HM)
    assert "flow_micro" not in h and h["volume"] == "1" and h["trades"] == "1"


def test_premium_is_exact_in_micro_dollars_for_any_multiplier(r: redis.Redis) -> None:
    seed(r, multiplier=150)  # an adjusted contract
    run(r, [trade("0.07", size=7, q=1), trade("3.33", size=3, q=2), trade("1.10", size=1, q=3)])
    # 0.07·7·150 = 73.50 (sell), 3.33·3·150 = 1498.50 (buy), 1.10·1·150 = 165.00 (buy)
    assert r.hmget(HM, "buy_micro", "sell_micro", "flow_micro") == ["1663500000", "73500000", "1590000000"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bid_c=st.integers(-5, 400),
    ask_c=st.integers(-5, 400),
    price_c=st.integers(1, 420),
    size=st.integers(1, 50),
    multiplier=st.sampled_from([1, 10, 100, 150]),
)
def test_lua_matches_the_python_reference(
    r: redis.Redis, bid_c: int, ask_c: int, price_c: int, size: int, multiplier: int
) -> None:
    r.delete(HM, GX, keys.dirty_contracts(U, E))
    seed(r, bid=f"{bid_c / 100:.2f}", ask=f"{ask_c / 100:.2f}", multiplier=multiplier)
    run(r, [trade(f"{price_c / 100:.2f}", size=size)])
    expected = apply_trade({}, price_c / 100, size, multiplier, bid_c / 100, ask_c / 100)
    stored = r.hgetall(HM)
    for name in ("flow_micro", "buy_micro", "sell_micro", "volume", "trades"):
        assert int(stored.get(name, 0)) == expected[name], name
    assert_record_is_the_hash(r)


def test_a_trade_uses_the_quote_that_preceded_it_in_the_batch(r: redis.Redis) -> None:
    seed(r)
    result = run(r, [quote("2.00", "2.10", q=1), trade("2.10", q=2), quote("2.50", "2.60", q=3), trade("2.50", q=4)])
    assert result == [2, 2, 0, 0, 1, 1]
    assert r.hmget(HM, "bid", "ask", "quote_q", "bid_size") == ["2.50", "2.60", "3", "5"]


def test_replayed_and_out_of_order_events_are_dropped(r: redis.Redis) -> None:
    seed(r)
    assert run(r, [trade("1.10", q=10)])[1] == 1
    assert run(r, [trade("1.10", q=10), trade("1.10", q=9), quote("1", "2", q=3)]) == [1, 0, 2, 0, 0, 0]
    assert run(r, [quote("1", "2", q=3)]) == [0, 0, 1, 0, 0, 0]
    assert r.hget(HM, "trades") == "1"


def test_a_contract_without_a_hash_is_counted_and_never_created(r: redis.Redis) -> None:
    before = set(r.keys("*"))
    other = "O:SPY:2025-12-19:655:C"
    assert run(r, [trade("1.10", cid=other), quote("1", "2", q=1, cid=other)]) == [0, 0, 0, 2, 0, 0]
    assert set(r.keys("*")) == before


def test_a_zero_bid_is_a_one_sided_market_that_still_signs(r: redis.Redis) -> None:
    seed(r, bid="0", ask="0.05")
    assert run(r, [trade("0.05", q=1), trade("0.01", q=2)]) == [0, 2, 0, 0, 1, 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("Q"), st.integers(0, 300), st.integers(1, 300)),
            st.tuples(st.just("T"), st.integers(1, 320), st.integers(1, 40)),
        ),
        min_size=1,
        max_size=25,
    ),
    st.integers(0, 2**53 - 10**9),
)
def test_a_batch_with_float_prices_matches_the_reference_trade_by_trade(
    r: redis.Redis, events: list[tuple[str, int, int]], stored_flow: int
) -> None:
    """Many events of one contract in one call (summed in the script) ≡ models.heatmap.apply_trade one by one;
    prices as the floats ingest sends, stored as their repr; a counter near 2^53 stays exact."""
    r.delete(HM, GX, keys.dirty_contracts(U, E))
    seed(r)
    r.hset(HM, "buy_micro", stored_flow)
    call = EpochCall(U, E)
    state: dict = {"buy_micro": stored_flow}
    bid, ask = 1.0, 1.1
    last: dict = {}
    for q, (kind, x, y) in enumerate(events, start=1):
        if kind == "Q":
            bid, ask = x / 100, x / 100 + y / 100
            call.add(CID, "Q", bid, ask, 5, 6, NOW + q, q)
            last.update(bid=repr(bid), ask=repr(ask), quote_q=str(q))
        else:
            call.add(CID, "T", x / 100, y, NOW + q, q)
            state = apply_trade(state, x / 100, y, 100, bid, ask)
            last.update(last_price=repr(x / 100), trade_q=str(q))
    script(r, "ingest_batch")(keys=call.keys(), args=call.args(60_000))
    stored = r.hgetall(HM)
    for name in ("flow_micro", "buy_micro", "sell_micro", "volume", "trades"):
        assert int(stored.get(name, 0)) == state.get(name, 0), name
    assert {k: stored[k] for k in last} == last
    if any(kind == "T" for kind, _, _ in events):  # (quotes alone write no record)
        assert_record_is_the_hash(r)


def test_a_dirty_set_created_after_retirement_inherits_the_ttl(r: redis.Redis) -> None:
    seed(r)
    r.expire(HM, 300)
    r.expire(GX, 300)  # what retirement does to every key of the epoch (the dirty set did not exist then)
    assert run(r, [trade("1.10")])[1] == 1
    assert 0 < r.ttl(keys.dirty_contracts(U, E)) <= 300


def test_quotes_alone_apply_to_a_hash_never_quoted_and_skip_a_missing_one(r: redis.Redis) -> None:
    """The quotes-only path reads one field: a hash without quote_q yet is still a contract; no hash, none."""
    seed(r, bid=None)
    other = "O:SPY:2025-12-19:655:C"
    assert run(r, [quote("1.20", "1.30", q=4), quote("1.25", "1.35", q=5), quote("9", "9", q=1, cid=other)]) == [
        2, 0, 0, 1, 0, 0,
    ]  # fmt: skip
    h = r.hgetall(HM)
    assert (h["bid"], h["ask"], h["bid_size"], h["ask_size"], h["quote_q"]) == ("1.25", "1.35", "5", "6", "5")
    assert r.exists(keys.contract(U, E, "heatmap", other)) == 0
    assert r.smembers(keys.dirty_contracts(U, E)) == set()  # quotes do not make a contract dirty


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("Q"), st.integers(0, 30_000), st.integers(1, 3_000), st.integers(0, 9_999)),
            st.tuples(st.just("T"), st.integers(1, 33_000), st.integers(1, 40), st.integers(0, 9_999)),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_frames_through_the_batch_builder_store_exactly_what_they_carried(
    r: redis.Redis, events: list[tuple[str, int, int, int]]
) -> None:
    """Frames → BatchBuilder → the script: the stored quote and trade are the last ones, prices as repr text,
    integers as decimal text (the builder sends them as text; the conflated and flushed quotes included), and
    the counters match models.heatmap.apply_trade event by event."""
    r.delete(HM, GX, keys.dirty_contracts(U, E))
    seed(r)
    sym = "O:SPY251219C00650000"
    universe = Universe({sym: (U, CID, (E,))}, {}, {U: (E,)})
    frame, state = [], {}
    bid, ask, expected = 1.0, 1.1, {}
    for q, (kind, x, y, z) in enumerate(events, start=1):
        if kind == "Q":
            bid, ask = x / 1000, (x + y) / 1000  # up to three decimals: some prices are not exact doubles
            frame.append({"ev": "Q", "sym": sym, "bp": bid, "ap": ask, "bs": z, "as": z + 1, "t": NOW + q, "q": q})
            expected.update(bid=repr(bid), ask=repr(ask), bid_size=str(z), ask_size=str(z + 1),
                            quote_ts_ms=str(NOW + q), quote_q=str(q))  # fmt: skip
        else:
            price = x / 1000
            frame.append({"ev": "T", "sym": sym, "p": price, "s": y, "t": NOW + q, "q": q, "c": [z]})
            state = apply_trade(state, price, y, 100, bid, ask)
            expected.update(last_price=repr(price), last_trade_ts_ms=str(NOW + q), trade_q=str(q))
    builder = BatchBuilder(universe, SequenceFilter())
    builder.add_frame(orjson.dumps(frame), recv_ms=NOW)
    ((call_keys, call_args),) = builder.build().script_calls(60_000)
    quotes, trades, stale, missing, _, _, _, applied, corrupt, _ = script(r, "ingest_batch")(
        keys=call_keys, args=call_args
    )
    assert (applied, corrupt) == (1, 0)
    kept = sum(1 for i, e in enumerate(events) if e[0] == "Q" and (i + 1 == len(events) or events[i + 1][0] == "T"))
    assert (quotes, trades, stale, missing) == (kept, sum(e[0] == "T" for e in events), 0, 0)
    stored = r.hgetall(HM)
    assert {k: stored.get(k) for k in expected} == expected
    for name in ("flow_micro", "buy_micro", "sell_micro", "volume", "trades"):
        assert int(stored.get(name, 0)) == state.get(name, 0), name
    if state:
        assert_record_is_the_hash(r)
    else:  # quotes only: no record written
        assert record(r) == (0, 0, 0, 0, 0)


def test_a_corrupt_stored_counter_is_counted_and_left_never_a_script_error(r: redis.Redis) -> None:
    """HINCRBY on a non-integer fails the whole script, and a failing script would be retried forever: a bad
    counter is left as it is and counted; the good ones of the same trade are still written."""
    seed(r)
    r.hset(HM, mapping={"buy_micro": "abc", "volume": "1e20", "trades": "9007199254740993"})
    assert run(r, [trade("1.10", size=2)], bad_counters=2) == [0, 1, 0, 0, 1, 0]
    assert r.hmget(HM, "buy_micro", "volume", "flow_micro") == ["abc", "1e20", "220000000"]
    assert r.hget(HM, "trades") == "9007199254740994"  # an integer beyond 2^53: added exactly by Redis
    assert record(r)[4] == UNREADABLE  # the heatmap sums this contract's tile from the hashes


def test_a_counter_that_would_pass_2_63_is_counted_and_left_never_a_script_error(r: redis.Redis) -> None:
    """Beyond 2^53 Redis adds (HINCRBY); beyond 2^63 it would refuse — the whole script, retried and finally
    dropped, its GEX volume added on every try. The counter is left as it is and counted instead."""
    seed(r)
    r.hset(HM, "buy_micro", str(2**63 - 5))
    assert run(r, [trade("1.10", size=2)], bad_counters=1) == [0, 1, 0, 0, 1, 0]
    assert r.hmget(HM, "buy_micro", "flow_micro", "trades", "trade_q") == [str(2**63 - 5), "220000000", "1", "10"]
    assert r.hget(GX, "volume") == "12" and record(r)[4] == UNREADABLE


@pytest.mark.parametrize("corrupted", ["dirty", "records"])
def test_a_call_refused_for_a_corrupted_epoch_key_writes_nothing(r: redis.Redis, corrupted: str) -> None:
    """The dirty set and the counters string are checked before any write: a refused call leaves no counter,
    no record and no GEX volume behind, so its retries can neither lose nor add anything twice."""
    seed(r)
    key = {"dirty": keys.dirty_contracts(U, E), "records": RECORDS}[corrupted]
    r.delete(key)
    r.hset(key, "x", "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        run(r, [trade("1.10", size=2), quote("1", "2", q=3, cid="O:SPY:2025-12-19:655:C")])
    assert r.hmget(HM, "trades", "trade_q", "volume", "buy_micro") == [None, None, None, None]
    assert r.hget(GX, "volume") == "10"
    if corrupted != "records":
        assert record(r) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("corrupted", ["gex_type", "gex_volume", "heatmap_type"])
def test_a_contract_with_a_corrupted_key_is_skipped_whole_and_the_others_land(r: redis.Redis, corrupted: str) -> None:
    """A contract whose GEX hash is not a hash, whose GEX volume is not an integer, or whose heatmap key is not
    a hash: nothing of it is written, it is counted as corrupt, and the call goes on — the contracts before and
    after it land and are marked dirty (a script error half-way would leave the ones before it written but
    never marked dirty, and their retry counted as out of sequence)."""
    cids = [f"O:SPY:2025-12-19:{650 + 5 * i}:C" for i in range(3)]
    for slot, cid in enumerate(cids):
        r.hset(keys.contract(U, E, "heatmap", cid), mapping={"multiplier": 100, "slot": slot, "bid": "1.00",
                                                              "ask": "1.20", "quote_ts_ms": NOW})  # fmt: skip
        r.hset(keys.contract(U, E, "gex", cid), mapping={"volume": 0})
    r.set(RECORDS, bytes(3 * RECORD_BYTES))
    bad_hm, bad_gx = keys.contract(U, E, "heatmap", cids[1]), keys.contract(U, E, "gex", cids[1])
    if corrupted == "gex_type":
        r.delete(bad_gx)
        r.set(bad_gx, "corrupted")
    elif corrupted == "gex_volume":
        r.hset(bad_gx, "volume", "lots")
    else:
        r.delete(bad_hm)
        r.set(bad_hm, "corrupted")
    events = [trade("1.20", size=2, q=10 + i, cid=cid) for i, cid in enumerate(cids)]
    events.insert(2, quote("1.10", "1.30", q=20, cid=cids[1]))  # (its quote is not written either)
    call = EpochCall(U, E)
    for kind, cid, *values in events:
        call.add(cid, kind, *values)
    reply = script(r, "ingest_batch")(keys=call.keys(), args=call.args(60_000))
    assert reply == [0, 2, 0, 0, 2, 0, 0, 1, 1, 0]  # two trades applied (buys), one contract corrupt
    for i in (0, 2):
        assert r.hmget(keys.contract(U, E, "heatmap", cids[i]), "trades", "volume") == ["1", "2"]
        assert r.hget(keys.contract(U, E, "gex", cids[i]), "volume") == "2"
    if corrupted != "heatmap_type":
        assert r.hmget(bad_hm, "trades", "trade_q", "bid", "quote_q") == [None, None, "1.00", None]
    if corrupted == "gex_volume":
        assert r.hget(bad_gx, "volume") == "lots"
    assert r.smembers(keys.dirty_contracts(U, E)) == {cids[0], cids[2]}


def test_a_counter_crossing_2_53_marks_the_record_and_back_below_writes_it_again(r: redis.Redis) -> None:
    seed(r)
    r.hset(HM, "volume", 2**53 - 2)
    run(r, [trade("1.10", size=1, q=1)])
    assert_record_is_the_hash(r)  # 2^53 − 1: still exact
    run(r, [trade("1.10", size=1, q=2)])
    assert r.hget(HM, "volume") == str(2**53) and record(r)[4] == UNREADABLE
    r.hset(HM, "volume", 7)  # (repaired by hand)
    run(r, [trade("1.10", size=1, q=3)])
    assert_record_is_the_hash(r)
    assert record(r)[3] == 8


def test_no_record_is_written_outside_the_counters_string(r: redis.Redis) -> None:
    """No counters string (an epoch of an older version), or a slot beyond it: the hash is written, the
    string is neither created nor grown."""
    seed(r)
    r.delete(RECORDS)
    run(r, [trade("1.10", q=1)])
    assert not r.exists(RECORDS) and r.hget(HM, "trades") == "1"
    r.set(RECORDS, bytes(RECORD_BYTES))  # one record only: slot 1 is beyond it
    run(r, [trade("1.10", q=2)])
    assert raw(r).get(RECORDS) == bytes(RECORD_BYTES) and r.hget(HM, "trades") == "2"


def test_a_counter_the_trade_leaves_as_odd_text_marks_the_record_unreadable(r: redis.Redis) -> None:
    """A buy leaves sell_micro as it is; stored as "1e3" (not decimal integer text: the reference reads no
    integer there) the record cannot equal the hash, so it is marked and the tile is summed from the hashes."""
    seed(r)
    r.hset(HM, "sell_micro", "1e3")
    run(r, [trade("1.10", size=1, q=1)])
    assert r.hget(HM, "sell_micro") == "1e3" and record(r)[4] == UNREADABLE
    r.hset(HM, "sell_micro", "1000")
    run(r, [trade("1.10", size=1, q=2)])
    assert_record_is_the_hash(r)


def test_single_quote_contracts_and_the_others_in_one_call_each_get_their_own_events(r: redis.Redis) -> None:
    """Several contracts whose only event is one quote (their section of plain arguments) beside several with
    trades (the JSON section), in one call: every hash gets exactly its own quote or trades, a stale or
    missing single quote is counted, and only the traded contracts are marked dirty."""
    cids = [f"O:SPY:2025-12-19:{650 + 5 * i}:C" for i in range(5)]
    for slot, cid in enumerate(cids[:4]):  # the fifth has no hash
        r.hset(keys.contract(U, E, "heatmap", cid), mapping={"multiplier": 100, "slot": slot, "quote_q": 5})
        r.hset(keys.contract(U, E, "gex", cid), mapping={"volume": 0})
    r.set(RECORDS, bytes(4 * RECORD_BYTES))
    events = [
        quote("1.00", "1.10", q=7, cid=cids[0]),  # single quote: applied
        trade("2.00", size=3, q=8, cid=cids[1]), quote("1.90", "2.00", q=9, cid=cids[1]),
        quote("3.00", "3.10", q=4, cid=cids[2]),  # single quote, older than the stored quote_q 5: stale
        trade("4.00", size=2, q=11, cid=cids[3]),
        quote("5.00", "5.10", q=12, cid=cids[4]),  # single quote, no hash: missing
    ]  # fmt: skip
    assert run(r, events) == [2, 2, 1, 1, 0, 0]

    def stored(i: int, *fields: str) -> list:
        return r.hmget(keys.contract(U, E, "heatmap", cids[i]), *fields)

    assert stored(0, "bid", "ask", "bid_size", "ask_size", "quote_ts_ms", "quote_q", "trades") == [
        "1.00", "1.10", "5", "6", str(NOW + 1), "7", None]  # fmt: skip
    assert stored(1, "bid", "quote_q", "trades", "volume", "last_price") == ["1.90", "9", "1", "3", "2.00"]
    assert stored(2, "bid", "quote_q") == [None, "5"]
    assert stored(3, "bid", "trades", "volume", "last_price") == [None, "1", "2", "4.00"]
    assert r.hget(keys.contract(U, E, "gex", cids[3]), "volume") == "2"
    assert r.exists(keys.contract(U, E, "heatmap", cids[4])) == 0
    assert r.smembers(keys.dirty_contracts(U, E)) == {cids[1], cids[3]}


def chained(call: EpochCall, expect: str, mark: str) -> tuple[list[str], list]:
    """(KEYS, ARGV) of ``call`` with the chain marks the pipelined committer sets."""
    args = call.args(60_000)
    args[EXPECT_ARG], args[MARK_ARG] = expect, mark
    return call.keys(), args


def one_trade(q: int, price: str = "1.10") -> EpochCall:
    call = EpochCall(U, E)
    call.add(CID, "T", price, 1, NOW + q, q)
    return call


def test_a_chained_call_is_applied_only_after_the_call_it_names(r: redis.Redis) -> None:
    seed(r)
    ingest = script(r, "ingest_batch")
    call_keys, args = chained(one_trade(10), "", "t:1")  # nothing in flight: no check
    assert ingest(keys=call_keys, args=args)[7] == 1
    assert r.get(keys.ingest_chain(U)) == "t:1"
    call_keys, args = chained(one_trade(11), "t:0", "t:2")  # names a mark that is not the last applied one
    assert ingest(keys=call_keys, args=args) == [0] * 10
    assert (r.hget(HM, "trades"), r.get(keys.ingest_chain(U))) == ("1", "t:1")  # nothing written
    call_keys, args = chained(one_trade(11), "t:1", "t:2")
    reply = ingest(keys=call_keys, args=args)
    assert (reply[1], reply[7]) == (1, 1)
    assert (r.hget(HM, "trades"), r.get(keys.ingest_chain(U))) == ("2", "t:2")


def test_a_failed_call_and_the_one_pipelined_after_it_are_retried_in_order_and_lose_nothing(r: redis.Redis) -> None:
    """Batch N is refused (the epoch's dirty set is not a set) with batch N+1 already on the wire: the chain
    refuses N+1, so retried in order both land. Unchained, N+1's newer sequence number would have made N's
    retry drop N's trade as out of sequence."""
    seed(r)
    dirty = keys.dirty_contracts(U, E)
    r.set(dirty, "corrupted")
    first_keys, first_args = chained(one_trade(10, "1.10"), "", "t:1")
    then_keys, then_args = chained(one_trade(11, "1.20"), "t:1", "t:2")
    pipe = raw(r).pipeline(transaction=False)
    pipe.evalsha(script(r, "ingest_batch").sha, len(first_keys), *first_keys, *first_args)
    pipe.evalsha(script(r, "ingest_batch").sha, len(then_keys), *then_keys, *then_args)
    failed, refused = pipe.execute(raise_on_error=False)
    assert isinstance(failed, redis.ResponseError) and "WRONGTYPE" in str(failed)
    assert refused == [0] * 10
    assert r.hmget(HM, "trades", "trade_q", "volume") == [None, None, None]  # nothing of the failed call
    r.delete(dirty)  # repaired; the committer retries both, in order, unchained
    ingest = script(r, "ingest_batch")
    first_args[EXPECT_ARG] = then_args[EXPECT_ARG] = ""
    assert ingest(keys=first_keys, args=first_args)[1] == 1
    assert ingest(keys=then_keys, args=then_args)[1] == 1
    assert r.hmget(HM, "trades", "trade_q", "volume", "last_price") == ["2", "11", "2", "1.20"]
    assert r.hget(GX, "volume") == "12"


def test_a_sequence_that_starts_again_is_applied_and_a_resent_batch_is_not(r: redis.Redis) -> None:
    """A sequence number below the stored one is applied when its event is at least the restart gap newer than
    the newest stored of its kind (the feed's numbering started again) — for a single quote, a contract of
    quotes only, and a traded contract — and counted; the same batch sent again changes nothing."""
    from ingest.decode import SEQUENCE_RESTART_GAP_MS as GAP

    seed(r)
    later = NOW + 1 + GAP
    before = run(r, [trade("1.10", q=900), quote("1.00", "1.20", q=901)])
    assert before == [1, 1, 0, 0, 1, 0]
    # too early for a restart: dropped; then the numbering starts again (a trade, a quote after it)
    events = [trade("1.20", q=5, ts=later - 1), trade("1.20", q=5, ts=later), quote("1.00", "1.10", q=6, ts=later),
              trade("1.10", q=7, ts=later + 1)]  # fmt: skip
    call = EpochCall(U, E)
    for kind, cid, *values in events:
        call.add(cid, kind, *values)
    ingest = script(r, "ingest_batch")
    reply = ingest(keys=call.keys(), args=call.args(60_000))
    assert reply[:4] == [1, 2, 1, 0] and reply[9] == 2  # the trade and the quote sequences restarted
    stored = r.hgetall(HM)
    assert (stored["trade_q"], stored["quote_q"], stored["last_trade_ts_ms"]) == ("7", "6", str(later + 1))
    assert ingest(keys=call.keys(), args=call.args(60_000))[:4] == [0, 0, 4, 0]  # resent: every event stale
    # a contract whose only event is one quote, and a contract of quotes only
    single = EpochCall(U, E)
    single.add(CID, "Q", "1.0", "1.3", 5, 6, later + GAP + 10, 2)
    assert ingest(keys=single.keys(), args=single.args(60_000))[0] == 1
    quotes_only = EpochCall(U, E)
    for q, ts in ((1, later + GAP + 20), (1, later + 2 * GAP + 10), (0, later + 2 * GAP + 11)):
        quotes_only.add(CID, "Q", "1.0", "1.4", 5, 6, ts, q)
    reply = ingest(keys=quotes_only.keys(), args=quotes_only.args(60_000))
    assert reply[:3] == [1, 0, 2] and reply[9] == 1  # q 1: too early after q 2, then a restart; q 0 stale
    assert r.hget(HM, "quote_q") == "1"


def test_a_late_print_counts_but_leaves_the_last_trade_to_the_newer_one(r: redis.Redis) -> None:
    seed(r)
    assert run(r, [trade("1.10", q=10, ts=NOW + 500)]) == [0, 1, 0, 0, 1, 0]
    assert run(r, [trade("1.00", size=2, q=11, ts=NOW + 100)]) == [0, 1, 0, 0, 0, 1]  # late: older time
    stored = r.hgetall(HM)
    assert (stored["last_price"], stored["last_trade_ts_ms"], stored["trade_q"]) == ("1.10", str(NOW + 500), "11")
    assert (stored["volume"], stored["trades"]) == ("3", "2")


@pytest.mark.parametrize("refusal", ["oom", "readonly"])
def test_out_of_memory_or_read_only_stops_the_script_and_is_never_taken_for_corruption(refusal: str) -> None:
    """The GEX volume is a traded contract's first write, under redis.pcall so that a corrupted key is skipped
    and counted. Out of memory or a read-only replica refuses that write too: the script must stop with that
    error (ingest retries the batch until it lands), never count every contract as corrupt and return success
    — here with no chain mark, where nothing else would have written and failed."""
    from tests.support.servers import RedisServer, free_port

    server = RedisServer().start()
    client = redis.Redis.from_url(server.url_db(0), decode_responses=True)
    try:
        seed(client)
        call = EpochCall(U, E)
        call.add(CID, "T", "1.10", 1, NOW + 1, 10)
        if refusal == "oom":
            client.config_set("maxmemory", 1)
            error: type[Exception] = redis.exceptions.OutOfMemoryError
        else:
            client.replicaof("127.0.0.1", free_port())  # a master that never answers: the data stays, read-only
            error = redis.exceptions.ReadOnlyError
        ingest = script(client, "ingest_batch")
        with pytest.raises(error):
            ingest(keys=call.keys(), args=call.args(60_000))
        assert client.hget(GX, "volume") == "10" and client.hget(HM, "trade_q") is None
        client.config_set("maxmemory", 0) if refusal == "oom" else client.replicaof("NO", "ONE")
        assert ingest(keys=call.keys(), args=call.args(60_000))[:2] == [0, 1]  # lands once Redis takes writes
        assert client.hget(GX, "volume") == "11"
    finally:
        client.close()
        server.stop()
