import json

import orjson

from ingest.batch import SequenceFilter, Universe
from ingest.batch import build_batch as _build_batch
from ingest.decode import SEQUENCE_RESTART_GAP_MS, Quote, SpotTick, Trade

NOW = 1_700_000_000_000  # the receive time of every event here, Unix ms

A, B = "O:SPY251219C00650000", "O:SPY251219P00650000"
CID_A, CID_B = "O:SPY:2025-12-19:650:C", "O:SPY:2025-12-19:650:P"
UNIVERSE = Universe(
    contracts={A: ("SPY", CID_A, ("e1",)), B: ("SPY", CID_B, ("e1", "e2"))},
    spot_symbols={"SPY": "SPY", "I:SPX": "SPX"},
    epochs={"SPY": ("e1", "e2")},
)


def build_batch(events: list, spots: list, universe: Universe, sequence: SequenceFilter):
    """``build_batch`` of events received at :data:`NOW`."""
    return _build_batch(events, spots, universe, sequence, recv_ms=NOW)


def q(sym: str, seq: int, bid: float = 1.0, ask: float = 1.1, ts: int | None = None) -> Quote:
    return Quote(sym, bid, ask, 10, 10, NOW + seq if ts is None else ts, seq)


def t(sym: str, seq: int, price: float = 1.05, ts: int | None = None) -> Trade:
    return Trade(sym, price, 1, NOW + seq if ts is None else ts, seq)


def kinds(call) -> list[tuple]:
    """(kind, cid, q) of every event of ``call`` (the values the script stores travel as text)."""
    return [(kind, cid, int(values[-1])) for kind, cid, values in call.unpacked()]


def test_consecutive_quotes_conflate_but_a_trade_keeps_the_quote_in_force() -> None:
    batch = build_batch([q(A, 1), q(A, 2), t(A, 3), q(A, 4), q(A, 5), q(A, 6)], [], UNIVERSE, SequenceFilter())
    (call,) = batch.calls
    assert kinds(call) == [("Q", CID_A, 2), ("T", CID_A, 3), ("Q", CID_A, 6)]
    assert batch.quotes_conflated == 3 and batch.events_in == 6


def test_events_go_to_every_live_epoch_holding_the_contract() -> None:
    batch = build_batch([t(A, 1), t(B, 2)], [], UNIVERSE, SequenceFilter())
    by_epoch = {call.epoch: kinds(call) for call in batch.calls}
    assert by_epoch == {"e1": [("T", CID_A, 1), ("T", CID_B, 2)], "e2": [("T", CID_B, 2)]}
    e1 = next(c for c in batch.calls if c.epoch == "e1")
    assert e1.keys()[:3] == [
        "epoch:{SPY}:e1:heatmap:dirty_contracts",
        "epoch:{SPY}:e1:heatmap:counters",
        "massive:ingest:chain:{SPY}",
    ]
    assert e1.keys()[3:5] == [f"epoch:{{SPY}}:e1:heatmap:contract:{CID_A}", f"epoch:{{SPY}}:e1:gex:contract:{CID_A}"]
    assert e1.args(120_000)[:7] == [120_000, "", "", SEQUENCE_RESTART_GAP_MS, 0, CID_A, CID_B]  # no single quote


def test_a_contract_whose_only_event_is_one_quote_travels_as_plain_text() -> None:
    """Such contracts (about half of a busy batch) get one key and six arguments — the quote as the text the
    script stores — and no JSON; the others follow with both hashes and their events as JSON."""
    batch = build_batch([q(A, 1, 1.25, 1.5), q(A, 2, 1.0, 2.0), t(B, 3), q(B, 4)], [], UNIVERSE, SequenceFilter())
    e1 = next(c for c in batch.calls if c.epoch == "e1")
    assert e1.keys() == ["epoch:{SPY}:e1:heatmap:dirty_contracts", "epoch:{SPY}:e1:heatmap:counters",
                         "massive:ingest:chain:{SPY}", f"epoch:{{SPY}}:e1:heatmap:contract:{CID_A}",
                         f"epoch:{{SPY}}:e1:heatmap:contract:{CID_B}",
                         f"epoch:{{SPY}}:e1:gex:contract:{CID_B}"]  # fmt: skip
    args = e1.args(60_000)
    gap = SEQUENCE_RESTART_GAP_MS
    assert args[:12] == [60_000, "", "", gap, 1, "1.0", "2.0", "10", "10", str(NOW + 2), "2", CID_B]
    (b_events,) = orjson.loads(args[12])
    assert (b_events[0], b_events[5], len(b_events)) == (1, 0, 12)  # B: its trade, then its quote
    assert len(args) == 13


def test_unknown_and_bad_symbols_are_counted_and_dropped() -> None:
    batch = build_batch([t("O:QQQ251219C00500000", 1), t("O:??", 2), t(A, 3)], [], UNIVERSE, SequenceFilter())
    assert batch.rejects == {"unknown_contract": 1, "bad_symbol": 1}
    assert [kinds(c) for c in batch.calls] == [[("T", CID_A, 3)]]


def test_out_of_order_and_duplicate_sequence_numbers_are_dropped_across_batches() -> None:
    seq = SequenceFilter()
    first = build_batch([t(A, 5), t(A, 5), t(A, 4), q(A, 3)], [], UNIVERSE, seq)
    assert first.rejects == {"out_of_sequence": 2}  # the quote has its own sequence per type
    second = build_batch([t(A, 5), t(A, 6)], [], UNIVERSE, seq)
    assert second.rejects == {"out_of_sequence": 1}
    assert kinds(second.calls[0]) == [("T", CID_A, 6)]


def test_a_sequence_that_starts_again_is_followed_and_a_resent_one_is_not() -> None:
    """A sequence number that does not grow is taken when its event is the restart gap newer than the newest
    seen (the feed's numbering started again), and then followed; a duplicate or reordered event never is."""
    seq = SequenceFilter()
    first = build_batch([t(A, 900, ts=NOW), q(A, 901, ts=NOW)], [], UNIVERSE, seq)
    assert first.events_in == 2 and not first.rejects
    later = NOW + SEQUENCE_RESTART_GAP_MS
    again = build_batch([t(A, 900, ts=NOW), t(A, 5, ts=later - 1), t(A, 5, ts=later), t(A, 6, ts=later + 1),
                         t(A, 5, ts=later + 2), q(A, 7, ts=later + 3)], [], UNIVERSE, seq)  # fmt: skip
    assert again.rejects == {"out_of_sequence": 3}  # the resent one, one too early, then a duplicate
    assert again.sequence_restarts == 2  # the trade sequence at `later`, the quote sequence
    assert kinds(again.calls[0]) == [("T", CID_A, 5), ("T", CID_A, 6), ("Q", CID_A, 7)]


def test_latest_spot_per_underlying_wins() -> None:
    spots = [
        SpotTick("SPY", 600.0, 5),
        SpotTick("SPY", 601.0, 7),
        SpotTick("SPY", 599.0, 6),
        SpotTick("I:SPX", 6000.0, 1),
        SpotTick("QQQ", 500.0, 1),
    ]
    batch = build_batch([], spots, UNIVERSE, SequenceFilter())
    assert batch.spots == {"SPY": SpotTick("SPY", 601.0, 7), "SPX": SpotTick("I:SPX", 6000.0, 1)}
    assert batch.rejects == {"unknown_spot_symbol": 1}


def test_the_frame_fast_path_counts_exactly_what_decode_frame_counts() -> None:
    import orjson

    from ingest.batch import BatchBuilder
    from ingest.decode import decode_frame

    good_t = {"ev": "T", "sym": A, "p": 1.05, "s": 2, "t": NOW + 5, "q": 7, "c": [1]}
    good_q = {"ev": "Q", "sym": B, "bp": 1.0, "ap": 1.1, "bs": 1, "as": 2, "t": NOW + 6, "q": 8}
    frame = orjson.dumps([
        good_t, good_q, {**good_t, "p": 2, "q": 8}, {**good_q, "bp": 0, "q": 9}, {**good_t, "p": True, "q": 9},
        {**good_t, "s": 0}, {**good_q, "as": -1}, {**good_t, "sym": ""}, {**good_t, "t": -1}, {"ev": "X"},
        {"ev": "status", "status": "success"}, 7, [1], {**good_q, "ap": 1e300},
        {k: v for k, v in good_q.items() if k != "bs"},
    ])  # fmt: skip
    builder = BatchBuilder(UNIVERSE, SequenceFilter())
    assert builder.add_frame(frame, recv_ms=NOW) == NOW + 6
    batch = builder.build()
    decoded = decode_frame(frame, recv_ms=NOW)
    assert batch.rejects == decoded.rejects
    assert batch.events_in == len(decoded.quotes_and_trades) == 4
    e1 = next(call for call in batch.calls if call.epoch == "e1")
    assert kinds(e1) == [("Q", CID_B, 9), ("T", CID_A, 7), ("T", CID_A, 8)]  # (single quotes first)
    assert e1.unpacked()[2][2][0] == "2.0"  # an integer price becomes the float text repr gives


def _frames():
    """Frames of option events as Massive sends them: half of them plain quotes and trades only (in range, of
    the right types: the typed fast path takes them), half with values or events it must not take."""
    from hypothesis import strategies as st

    def events(price, size, count, sym, other):
        quote = st.fixed_dictionaries(
            {"ev": st.just("Q"), "sym": sym, "bp": price, "ap": price, "bs": size, "as": size, "t": count,
             "q": count},
            optional={"bx": st.integers(0, 400), "ax": st.integers(0, 400)},
        )  # fmt: skip
        trade = st.fixed_dictionaries(
            {"ev": st.just("T"), "sym": sym, "p": price, "s": size, "t": count, "q": count},
            optional={"c": st.lists(st.integers(0, 300), max_size=2), "x": st.integers(0, 70)},
        )
        return st.lists(st.one_of(quote, trade, *other), max_size=25)

    # times and sequence numbers: near the receive time (in the window), anywhere up to 2^70 (mostly outside it,
    # or past 2^53), at the window's edges
    count = st.one_of(st.integers(NOW - 10**8, NOW + 10**5), st.integers(0, 2**70),
                      st.sampled_from([NOW - 86_400_000, NOW - 86_400_001, NOW + 30_000, NOW + 30_001, 2**53 - 1,
                                       2**53, 2**63 - 1, 2**64, 2**64 + 1]))  # fmt: skip
    plain = events(
        st.one_of(st.floats(0.0, 1e6), st.integers(1, 1_000_000)), st.integers(1, 10_000_000),
        count, st.sampled_from([A, B, "O:QQQ251219C00650000", "garbage"]), [],
    )  # fmt: skip
    mixed = events(
        st.one_of(st.floats(min_value=0.0, max_value=2e6, allow_nan=False), st.integers(-5, 2_000_000),
                  st.just(float("inf")), st.booleans(), st.none(), st.text(max_size=3)),
        st.one_of(st.integers(-3, 20_000_000), st.floats(0, 10), st.booleans(), st.none()),
        st.one_of(count, st.integers(-3, -1), st.floats(0, 10), st.booleans()),
        st.sampled_from([A, B, "", "O:QQQ251219C00650000", "garbage", 7]),
        [st.just({"ev": "status", "status": "success"}), st.just({"ev": "X"}), st.just(7)],
    )  # fmt: skip
    return st.lists(st.one_of(plain, mixed), min_size=1, max_size=4)


def _general_path_only(raw: bytes | str, builder) -> int:
    """``builder.add_frame(raw)`` with the typed fast path switched off (every frame takes the general path)."""
    from unittest import mock

    import msgspec

    class Refuse:
        def decode(self, raw: bytes | str) -> None:
            raise msgspec.ValidationError("general path only")

    with mock.patch("ingest.batch._PLAIN_FRAME", Refuse()):
        return builder.add_frame(raw, recv_ms=NOW)


def _wire(events: list, how: str) -> bytes | str:
    """A frame as it may come off the socket: text or bytes, ASCII-escaped or UTF-8, or damaged (in its first
    object: an invalid UTF-8 byte, nesting deeper than any decoder goes, an unpaired surrogate in a str)."""
    text = json.dumps(events, ensure_ascii=how == "ascii")  # integers beyond 64 bits and Infinity too
    if how == "ascii":
        return text
    if how == "deep":
        return text.replace("{", '{"deep": ' + "[" * 2000 + "]" * 2000 + ", ", 1)
    if how == "surrogate":
        return text.replace("{", '{"z": "\ud800", ', 1)
    raw = text.encode("utf-8", "surrogatepass")
    return raw.replace(b"{", b'{"z": "\xff", ', 1) if how == "invalid-utf8" else raw


def test_the_typed_fast_path_builds_exactly_what_the_general_path_builds() -> None:
    """Any frame — plain quotes and trades only (msgspec takes it) or not, text or bytes, non-ASCII, invalid
    UTF-8, nested too deep: never an exception, and the batch is the one the general path (orjson + per-event
    checks) builds — calls, rejects, counts, latest event time."""
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from ingest.batch import BatchBuilder

    how = st.sampled_from(["ascii", "utf8", "invalid-utf8", "deep", "surrogate"])
    sym = st.one_of(st.sampled_from([A, B, "\ud800", "é"]), st.text(max_size=4))

    # The case that made ``make test`` fail once: a zero-sided quote stamped 2^64 in a frame with an unpaired
    # surrogate (the general path took the time, orjson could not write it into the script's arguments).
    zero_sided = {"ev": "Q", "sym": A, "bp": 0.0, "ap": 0.0, "bs": 0, "as": 0, "t": 2**64, "q": 1}

    @settings(max_examples=300, deadline=None)
    @example([[zero_sided], [], [], []], ["surrogate", "ascii", "ascii", "ascii"], A)
    @example([[{**zero_sided, "t": NOW, "q": 2**64 - 1}, {**zero_sided, "ev": "T", "p": 1.0, "s": 1, "t": NOW}]],
             ["utf8"] * 4, A)  # fmt: skip
    @given(_frames(), st.lists(how, min_size=4, max_size=4), sym)
    def check(frames: list[list], hows: list[str], odd_sym: str) -> None:
        fast, general = BatchBuilder(UNIVERSE, SequenceFilter()), BatchBuilder(UNIVERSE, SequenceFilter())
        for events, wire in zip(frames, hows, strict=False):
            if wire != "ascii" and events and isinstance(events[0], dict):
                events = [{**events[0], "sym": odd_sym}, *events[1:]]
            raw = _wire(events, wire)
            assert fast.add_frame(raw, recv_ms=NOW) == _general_path_only(raw, general)
        a, b = fast.build(), general.build()
        assert a.script_calls(5000) == b.script_calls(5000)
        assert (a.rejects, a.events_in, a.quotes_conflated, a.sequence_restarts) == (
            b.rejects, b.events_in, b.quotes_conflated, b.sequence_restarts)  # fmt: skip

    check()


def test_a_frame_of_plain_events_takes_the_typed_fast_path() -> None:
    """The fast path is taken (not only equivalent): a frame of plain quotes and trades is decoded by msgspec
    into structs, a frame with one event it cannot take is not."""
    import msgspec

    from ingest.batch import _PLAIN_FRAME

    good_t = {"ev": "T", "sym": A, "p": 1.05, "s": 2, "t": 5, "q": 7, "c": [1], "x": 4}  # times: any in range
    good_q = {"ev": "Q", "sym": B, "bp": 1.0, "ap": 1.1, "bs": 1, "as": 2, "t": 6, "q": 8, "bx": 1, "ax": 2}
    decoded = _PLAIN_FRAME.decode(orjson.dumps([good_t, good_q]))
    assert [(e.sym, e.q) for e in decoded] == [(A, 7), (B, 8)]
    for bad in ({**good_q, "bp": -0.5}, {**good_t, "s": 0}, {**good_t, "p": 1e7}, {**good_q, "t": 1.5},
                {"ev": "status", "status": "success"}, {k: v for k, v in good_q.items() if k != "q"}):  # fmt: skip
        try:
            _PLAIN_FRAME.decode(orjson.dumps([good_t, bad]))
        except msgspec.ValidationError:
            continue
        raise AssertionError(f"the fast path took {bad}")
