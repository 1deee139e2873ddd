import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import Quote, SpotTick, Trade, decode_frame

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
    out = decode_frame(orjson.dumps([Q, T]))
    assert out.quotes_and_trades == [
        Quote("O:SPY251219C00650000", 1.5, 1.6, 10, 12, 1_700_000_000_001, 6),
        Trade("O:SPY251219C00650000", 1.54, 2, 1_700_000_000_000, 5),
    ]
    assert out.max_ts_ms == 1_700_000_000_001 and not out.rejects


def test_spot_feeds() -> None:
    stocks = decode_frame(
        orjson.dumps([{"ev": "T", "sym": "SPY", "p": 600.5, "s": 100, "t": 5, "q": 1}]), feed="stocks"
    )
    assert stocks.spots == [SpotTick("SPY", 600.5, 5)] and not stocks.quotes_and_trades
    index = decode_frame(orjson.dumps([{"ev": "V", "val": 6000.25, "T": "I:SPX", "t": 7}]), feed="indices")
    assert index.spots == [SpotTick("I:SPX", 6000.25, 7)]


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
    out = decode_frame(_dumps(bad))
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
    out = decode_frame(orjson.dumps([{**Q, "bp": 0, "bs": 0}]))
    assert out.quotes_and_trades[0].bid == 0.0


def test_malformed_frames() -> None:
    assert decode_frame(b"\xff\xfe").rejects == {"malformed_frame": 1}
    assert decode_frame("[1,2").rejects == {"malformed_frame": 1}
    assert decode_frame("42").rejects == {"not_an_array": 1}
    assert decode_frame(orjson.dumps({**T})).quotes_and_trades  # a bare event is tolerated


def test_status_events() -> None:
    out = decode_frame(orjson.dumps([{"ev": "status", "status": "auth_success", "message": "authenticated"}]))
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
        decode_frame(raw, feed=feed)


@settings(max_examples=300)
@given(st.lists(events | json_values, max_size=10))
def test_any_json_never_raises_and_every_event_is_accounted_for(frame: list) -> None:
    out = decode_frame(orjson.dumps(frame))
    accounted = len(out.quotes_and_trades) + len(out.statuses) + len(out.spots) + sum(out.rejects.values())
    assert accounted == len(frame)
    for event in out.quotes_and_trades:
        assert event.q >= 0 and event.ts_ms >= 0
        if isinstance(event, Trade):
            assert event.price > 0 and event.size > 0 and math.isfinite(event.price)


def test_huge_values_are_rejected() -> None:
    out = decode_frame(
        '[{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":99999999999999999999999,"t":1,"q":1},'
        '{"ev":"T","sym":"O:SPY251219C00650000","p":1e300,"s":1,"t":1,"q":2},'
        '{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":20000000,"t":1,"q":3}]'
    )
    assert not out.quotes_and_trades
    assert out.rejects == {"bad_size": 2, "bad_price": 1}
