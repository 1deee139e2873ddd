import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import MAX_SEQUENCE, EventWindow, Quote, SpotTick, Trade, decode_frame

NOW = 1_700_000_000_000  # the receive time of every frame here, Unix ms


def decode(raw: bytes | str, **options: object) -> object:
    """``decode_frame`` of a frame received at :data:`NOW`."""
    return decode_frame(raw, recv_ms=NOW, **options)  # type: ignore[arg-type]


T = {"ev": "T", "sym": "O:SPY251219C00650000", "x": 65, "p": 1.54, "s": 2, "c": [233], "t": 1_700_000_000_000, "q": 5}
Q = {
    "ev": "Q",
    "sym": "O:SPY251219C00650000",
    "bx": 1,
    "ax": 1,
    "bp": 1.5,
    "ap": 1.6,
    "bs": 10,
    "as": 12,
    "t": 1_700_000_000_001,
    "q": 6,
}


def test_trades_and_quotes_in_order() -> None:
    out = decode(orjson.dumps([Q, T]))
    assert out.quotes_and_trades == [
        Quote("O:SPY251219C00650000", 1.5, 1.6, 10, 12, 1_700_000_000_001, 6),
        Trade("O:SPY251219C00650000", 1.54, 2, 1_700_000_000_000, 5),
    ]
    assert out.max_ts_ms == 1_700_000_000_001 and not out.rejects


def test_spot_feeds() -> None:
    stocks = decode(
        orjson.dumps([{"ev": "T", "sym": "SPY", "p": 600.5, "s": 100, "t": NOW + 5, "q": 1}]), feed="stocks"
    )
    assert stocks.spots == [SpotTick("SPY", 600.5, NOW + 5)] and not stocks.quotes_and_trades
    index = decode(orjson.dumps([{"ev": "V", "val": 6000.25, "T": "I:SPX", "t": NOW + 7}]), feed="indices")
    assert index.spots == [SpotTick("I:SPX", 6000.25, NOW + 7)]


def test_each_kind_of_bad_event_is_counted() -> None:
    bad = [
        {**T, "p": math.nan},
        {**T, "p": -1.0},
        {**T, "p": 0},
        {**T, "s": 0},
        {**T, "s": 1.5},
        {**T, "p": "1.5"},
        {**T, "sym": 7},
        {**T, "t": None},
        {k: v for k, v in T.items() if k != "q"},
        {**Q, "bp": math.inf},
        {**Q, "bs": -3},
        {"ev": "XYZ"},
        "not an object",
        {**T, "p": True},
        T,  # a good event in the same frame survives the bad ones, NaN literals included
    ]
    out = decode(_dumps(bad))
    assert [e.q for e in out.quotes_and_trades] == [5]
    assert out.rejects == {
        "bad_price": 6,
        "bad_size": 3,
        "bad_symbol": 1,
        "bad_time_or_sequence": 2,
        "unknown_event": 1,
        "not_an_object": 1,
    }


def _dumps(events: list) -> str:
    # orjson refuses NaN/inf; Massive-like feeds could still send them as JSON extensions
    return "[" + ",".join(_one(e) for e in events) + "]"


def _one(e: object) -> str:
    if isinstance(e, dict):
        return "{" + ",".join(f'"{k}":{_val(v)}' for k, v in e.items()) + "}"
    return orjson.dumps(e).decode()


def _val(v: object) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else "Infinity"
    return orjson.dumps(v).decode()


def test_quote_with_no_bid_is_valid() -> None:
    out = decode(orjson.dumps([{**Q, "bp": 0, "bs": 0}]))
    assert out.quotes_and_trades[0].bid == 0.0


def test_malformed_frames() -> None:
    assert decode(b"\xff\xfe").rejects == {"malformed_frame": 1}
    assert decode("[1,2").rejects == {"malformed_frame": 1}
    assert decode("42").rejects == {"not_an_array": 1}
    assert decode(orjson.dumps({**T})).quotes_and_trades  # a bare event is tolerated


def test_status_events() -> None:
    out = decode(orjson.dumps([{"ev": "status", "status": "auth_success", "message": "authenticated"}]))
    assert out.statuses[0].status == "auth_success"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=20,
)
events = st.fixed_dictionaries(
    {"ev": st.sampled_from(["T", "Q", "V", "status", "A"])},
    optional={k: json_values for k in ("sym", "p", "s", "t", "q", "bp", "ap", "bs", "as", "val", "T", "status")},
)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_never_raise(raw: bytes) -> None:
    for feed in ("options", "stocks", "indices"):
        decode(raw, feed=feed)


@settings(max_examples=300)
@given(st.lists(events | json_values, max_size=10))
def test_any_json_never_raises_and_every_event_is_accounted_for(frame: list) -> None:
    out = decode(orjson.dumps(frame))
    accounted = len(out.quotes_and_trades) + len(out.statuses) + len(out.spots) + sum(out.rejects.values())
    assert accounted == len(frame)
    for event in out.quotes_and_trades:
        assert event.q >= 0 and event.ts_ms >= 0
        if isinstance(event, Trade):
            assert event.price > 0 and event.size > 0 and math.isfinite(event.price)


def test_huge_values_are_rejected() -> None:
    out = decode(
        f'[{{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":99999999999999999999999,"t":{NOW},"q":1}},'
        f'{{"ev":"T","sym":"O:SPY251219C00650000","p":1e300,"s":1,"t":{NOW},"q":2}},'
        f'{{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":20000000,"t":{NOW},"q":3}}]'
    )
    assert not out.quotes_and_trades
    assert out.rejects == {"bad_size": 2, "bad_price": 1}


def test_times_and_sequence_numbers_are_bounded_on_every_feed() -> None:
    """A time outside the window around the receive time, or a sequence number past 2^53 − 1, is dropped and
    counted: one such event would otherwise capture a newer-wins rule (the spot, a contract's sequence)."""
    window = EventWindow(max_age_ms=60_000, max_lead_ms=5_000)
    frame = [
        {**T, "t": NOW + 5_000},  # the latest accepted
        {**T, "t": NOW + 5_001},
        {**T, "t": NOW - 60_000},  # the oldest accepted
        {**T, "t": NOW - 60_001},
        {**T, "t": 2**64 - 1},
        {**Q, "q": MAX_SEQUENCE},
        {**Q, "q": MAX_SEQUENCE + 1},
        {**Q, "q": 2**63 - 1},
    ]
    out = decode(_dumps(frame), window=window)
    assert [(e.ts_ms, e.q) for e in out.quotes_and_trades] == [
        (NOW + 5_000, 5),
        (NOW - 60_000, 5),
        (Q["t"], MAX_SEQUENCE),
    ]
    assert out.rejects == {"time_out_of_window": 3, "bad_time_or_sequence": 2}
    prints = [{"ev": "T", "sym": "SPY", "p": 999_999.0, "s": 1, "t": 2**64 - 1, "q": 1},
              {"ev": "T", "sym": "SPY", "p": 600.0, "s": 1, "t": NOW, "q": 2}]  # fmt: skip
    spots = decode(_dumps(prints), feed="stocks")
    assert spots.spots == [SpotTick("SPY", 600.0, NOW)] and spots.rejects == {"time_out_of_window": 1}


def test_a_fixed_clock_is_the_window_of_a_replay() -> None:
    """Under ``MMAKER_CLOCK_MS`` the window is around that clock, not the receive time: a recording's events
    carry the times they were recorded at."""
    recorded = {**T, "t": NOW - 3 * 86_400_000}
    assert decode(orjson.dumps([recorded])).rejects == {"time_out_of_window": 1}
    replay = EventWindow(fixed_clock_ms=NOW - 3 * 86_400_000 + 60_000)
    assert decode(orjson.dumps([recorded]), window=replay).quotes_and_trades


def test_nan_beside_integers_past_64_bits_is_counted_not_raised() -> None:
    """The frame of issue 16: NaN (only the lenient parser takes it) beside integers past 64 bits."""
    raw = (
        '[{"ev":"T","sym":"X","p":NaN,"s":1,"t":1,"q":1},'
        f'{{"ev":"Q","sym":"O:SPY251219C00650000","bp":1.0,"ap":1.1,"bs":1,"as":1,"t":{NOW},"q":{10**30}}},'
        f'{{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":1,"t":{10**30},"q":7}},'
        f'{{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":{2**64},"t":{NOW},"q":8}}]'
    )
    out = decode(raw)
    assert not out.quotes_and_trades
    assert out.rejects == {"time_out_of_window": 2, "bad_time_or_sequence": 1, "bad_size": 1}
