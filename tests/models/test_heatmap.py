import itertools
import math
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.heatmap import (
    RECORD_BYTES,
    RECORD_FORMAT,
    UNREADABLE,
    Tile,
    aggregate_tile_values,
    aggregate_tiles,
    apply_trade,
    build_heatmap_view,
    cell_prefix,
    classify_trade,
    counter_slots,
    encode_cells,
    merge_tiles,
    pack_tiles,
    sum_counter_records,
    tile_cell,
    tile_index,
    unpack_tiles,
)

# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(("price", "bid", "ask", "sign"), [
    (2.00, 1.90, 2.00, 1),     # at the ask
    (2.05, 1.90, 2.00, 1),     # above the ask
    (1.90, 1.90, 2.00, -1),    # at the bid
    (1.80, 1.90, 2.00, -1),    # below the bid
    (1.98, 1.90, 2.00, 1),     # inside, nearer the ask
    (1.92, 1.90, 2.00, -1),    # inside, nearer the bid
    (1.95, 1.90, 2.00, 0),     # exactly the midpoint
    (1.20, 1.10, 1.30, 0),     # a decimal midpoint float subtraction would misjudge
    (1.200001, 1.10, 1.30, 1),  # a micro-dollar above the midpoint
    (1.2000004, 1.10, 1.30, 0),  # below a micro-dollar: the midpoint
    (0.03, 0.0, 0.05, 1),      # zero bid, positive ask: a real one-sided market
    (0.01, 0.0, 0.05, -1),
    (1.95, None, 2.00, 0),     # no bid
    (1.95, 1.90, None, 0),     # no ask
    (1.95, math.nan, 2.00, 0),
    (0.05, 0.0, 0.0, 0),       # zero quote
    (1.95, 2.00, 1.90, 0),     # crossed
    (2.10, 2.00, 1.90, 0),     # crossed, even outside
    (1.95, -0.1, 2.00, 0),     # negative bid
    (0.0, 1.90, 2.00, 0),      # no price
    (2.00, 2.00, 2.00, 0),     # locked: at the locked price → unsigned
    (2.01, 2.00, 2.00, 1),     # locked: above
    (1.99, 2.00, 2.00, -1),    # locked: below
])  # fmt: skip
def test_quote_rule(price: float, bid: float | None, ask: float | None, sign: int) -> None:
    assert classify_trade(price, bid, ask) == sign


@settings(max_examples=200, deadline=None)
@given(bid_c=st.integers(1, 100_000), spread_c=st.integers(1, 500), offset_c=st.integers(-1_000, 1_000))
def test_quote_rule_on_cent_grids(bid_c: int, spread_c: int, offset_c: int) -> None:
    # Integer cents decide exactly what the rule should answer.
    ask_c = bid_c + spread_c
    price_c = bid_c + offset_c
    if price_c <= 0:
        return
    if price_c >= ask_c:
        expected = 1
    elif price_c <= bid_c:
        expected = -1
    else:
        expected = (2 * price_c > bid_c + ask_c) - (2 * price_c < bid_c + ask_c)
    assert classify_trade(price_c / 100, bid_c / 100, ask_c / 100) == expected


def test_apply_trade_counts_signed_premium() -> None:
    state = {"strike": "100", "cp": "C"}  # live counters absent = 0
    bought = apply_trade(state, 2.00, 3, 100, 1.90, 2.00)
    assert bought == {"strike": "100", "cp": "C", "flow_micro": 600_000_000, "buy_micro": 600_000_000,
                      "sell_micro": 0, "volume": 3, "trades": 1}  # fmt: skip
    sold = apply_trade(bought, 1.90, 2, 100, 1.90, 2.00)
    assert sold["flow_micro"] == 220_000_000 and sold["sell_micro"] == 380_000_000
    mid = apply_trade(sold, 1.95, 10, 100, 1.90, 2.00)
    assert mid["flow_micro"] == sold["flow_micro"] and mid["volume"] == 15 and mid["trades"] == 3
    assert mid["buy_micro"] == 600_000_000 and mid["sell_micro"] == 380_000_000
    # counters as Redis text
    text = apply_trade({"flow_micro": "10500000", "buy_micro": "10500000", "volume": "1", "trades": "1"},
                       1.0, 1, 10, 0.5, 1.0)  # fmt: skip
    assert text["flow_micro"] == 20_500_000 and text["buy_micro"] == 20_500_000 and text["volume"] == 2
    # a print with no price or size changes nothing
    assert apply_trade(mid, 0.0, 5, 100, 1.9, 2.0) == mid
    assert apply_trade(mid, 2.0, 0, 100, 1.9, 2.0) == mid
    assert state == {"strike": "100", "cp": "C"}  # input untouched


# ---------------------------------------------------------------- tiles

contract_strategy = st.fixed_dictionaries(
    {"tile": st.integers(0, 11).map(str), "cp": st.sampled_from(["C", "P"])},
    optional={
        "flow_micro": st.integers(-(10**13), 10**13).map(str),
        "buy_micro": st.integers(0, 10**13).map(str),
        "sell_micro": st.integers(0, 10**13).map(str),
        "volume": st.integers(0, 100_000).map(str),
        "trades": st.integers(0, 10_000).map(str),
    },
)


def test_aggregate_tiles_sums_per_tile_and_splits_calls_and_puts() -> None:
    contracts = [
        {"tile": "4", "cp": "C", "flow_micro": "600000000", "buy_micro": "600000000", "volume": "3", "trades": "1"},
        {"tile": "4", "cp": "P", "flow_micro": "-380000000", "sell_micro": "380000000", "volume": "2", "trades": "1"},
        {"tile": "5", "cp": "C"},  # never traded: all counters absent
        {"tile": "", "cp": "C", "flow_micro": "1"},  # unparseable rows are skipped
        {"tile": "6", "cp": "X", "flow_micro": "1"},
        {"tile": "6", "cp": "C", "flow_micro": "abc"},
        {"tile": "6", "cp": "C", "flow_micro": "1.5"},
    ]
    tiles = aggregate_tiles(contracts)
    assert set(tiles) == {4, 5}
    assert tiles[4].to_view() == {"net_flow": 220.0, "buy_premium": 600.0, "sell_premium": 380.0, "volume": 5,
                                  "trades": 2, "call_flow": 600.0, "put_flow": -380.0}  # fmt: skip
    assert tiles[5].is_empty and not tiles[4].is_empty


@settings(max_examples=100, deadline=None)
@given(contracts=st.lists(contract_strategy, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_aggregating_any_split_equals_aggregating_all(contracts: list[dict], cuts: list[int]) -> None:
    bounds = [0, *sorted(min(c, len(contracts)) for c in cuts), len(contracts)]
    parts = [aggregate_tiles(contracts[a:b]) for a, b in itertools.pairwise(bounds)]
    assert merge_tiles(*parts) == aggregate_tiles(contracts)
    assert aggregate_tiles(reversed(contracts)) == aggregate_tiles(contracts)


tile_strategy = st.builds(
    Tile,
    *(st.integers(-(10**18), 10**18) for _ in range(3)),
    st.integers(0, 10**12), st.integers(0, 10**9),
    *(st.integers(-(10**18), 10**18) for _ in range(2)),
)  # fmt: skip


@given(tiles=st.lists(tile_strategy, max_size=5))
def test_pack_unpack_round_trip_is_exact(tiles: list[Tile]) -> None:
    packed = pack_tiles(tiles)
    assert len(packed) == 56 * len(tiles) and unpack_tiles(packed) == tiles
    assert unpack_tiles(packed + b"\x01" * 20) == tiles  # a trailing partial record is not a tile


def test_tile_records_are_fixed_little_endian_and_refuse_what_int64_cannot_hold() -> None:
    assert pack_tiles([Tile(net_flow_micro=-2, volume=5)]) == struct.pack("<7q", -2, 0, 0, 5, 0, 0, 0)
    assert pack_tiles([(1, 2, 3, 4, 5, 6, 7)]) == struct.pack("<7q", 1, 2, 3, 4, 5, 6, 7)
    pack_tiles([Tile(net_flow_micro=2**63 - 1, buy_premium_micro=-(2**63))])
    for too_big in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError):
            pack_tiles([Tile(put_flow_micro=too_big)])


@given(expiry_index=st.integers(0, 60), bucket_first=st.integers(-5, 5000), bucket_count=st.integers(1, 3000),
       data=st.data())  # fmt: skip
def test_tile_index_round_trip(expiry_index: int, bucket_first: int, bucket_count: int, data: st.DataObject) -> None:
    bucket = data.draw(st.integers(bucket_first, bucket_first + bucket_count - 1))
    index = tile_index(expiry_index, bucket, bucket_first=bucket_first, bucket_count=bucket_count)
    assert index == expiry_index * bucket_count + (bucket - bucket_first)
    assert tile_cell(index, bucket_first=bucket_first, bucket_count=bucket_count) == (expiry_index, bucket)


def test_tile_index_matches_the_readme_example_and_rejects_outside_buckets() -> None:
    # Buckets 99, 100, 101 (width 1); O:SPY:2030-02-15:100:C sits in expiry row 1 → tile 3 + 1.
    assert tile_index(1, 100, bucket_first=99, bucket_count=3) == 4
    assert tile_index(0, 101, bucket_first=99, bucket_count=3) == 2
    with pytest.raises(ValueError):
        tile_index(0, 102, bucket_first=99, bucket_count=3)


def test_build_heatmap_view() -> None:
    tiles = {
        4: Tile(net_flow_micro=220_000_000, buy_premium_micro=600_000_000, sell_premium_micro=380_000_000, volume=5,
                trades=2, call_flow_micro=600_000_000, put_flow_micro=-380_000_000),
        0: Tile(volume=1, trades=1),  # unsigned print only: still non-empty
        2: Tile(),  # empty: left out
        9: Tile(volume=1, trades=1),  # outside the plane (2 expiries × 3 buckets): ignored
    }  # fmt: skip
    view = build_heatmap_view(tiles, expiries=["2030-01-18", "2030-02-15"], bucket_first=1000, bucket_count=3,
                              bucket_width=2.5, spot=2502.25)  # fmt: skip
    assert view["spot"] == 2502.25 and view["bucket_width"] == 2.5
    assert view["buckets"] == [2500.0, 2502.5, 2505.0]
    assert view["expiries"] == ["2030-01-18", "2030-02-15"]
    assert view["tiles"] == [
        {"expiry": "2030-01-18", "bucket": 2500.0, "net_flow": 0.0, "buy_premium": 0.0, "sell_premium": 0.0,
         "volume": 1, "trades": 1, "call_flow": 0.0, "put_flow": 0.0},
        {"expiry": "2030-02-15", "bucket": 2502.5, "net_flow": 220.0, "buy_premium": 600.0, "sell_premium": 380.0,
         "volume": 5, "trades": 2, "call_flow": 600.0, "put_flow": -380.0},
    ]  # fmt: skip
    empty = build_heatmap_view({}, expiries=[], bucket_first=0, bucket_count=0, bucket_width=0.1, spot=None)
    assert empty == {"spot": None, "bucket_width": 0.1, "buckets": [], "expiries": [], "tiles": []}
    assert build_heatmap_view({}, expiries=["x"], bucket_first=1, bucket_count=3, bucket_width=0.1,
                              spot=None)["buckets"] == [0.1, 0.2, 0.3]  # fmt: skip


def test_contracts_to_view_end_to_end() -> None:
    rows = [
        {"tile": "1", "cp": "C", **apply_trade({}, 2.0, 3, 100, 1.9, 2.0)},
        {"tile": "1", "cp": "P", **apply_trade({}, 1.0, 1, 100, 1.0, 1.1)},
    ]
    rows = [{k: str(v) for k, v in row.items()} for row in rows]
    tiles = aggregate_tiles(rows)
    stored = dict(zip(tiles, unpack_tiles(pack_tiles(tiles.values())), strict=True))
    view = build_heatmap_view(stored, expiries=["2030-01-18"],
                              bucket_first=10, bucket_count=2, bucket_width=1.0, spot=11.0)  # fmt: skip
    assert view["tiles"] == [{"expiry": "2030-01-18", "bucket": 11.0, "net_flow": 500.0, "buy_premium": 600.0,
                              "sell_premium": 100.0, "volume": 4, "trades": 2, "call_flow": 600.0,
                              "put_flow": -100.0}]  # fmt: skip


# --- counter records ------------------------------------------------------------------------------------------


def test_counter_slots_put_a_tiles_contracts_side_by_side_calls_first() -> None:
    tile_of = {"O:X:2030-01-18:101:P": 4, "O:X:2030-01-18:100:P": 4, "O:X:2030-01-18:101:C": 4,
               "O:X:2030-01-18:99:C": 2, "O:X:2030-01-18:100:C": 4}  # fmt: skip
    assert counter_slots(tile_of) == ["O:X:2030-01-18:99:C", "O:X:2030-01-18:100:C", "O:X:2030-01-18:101:C",
                                      "O:X:2030-01-18:100:P", "O:X:2030-01-18:101:P"]  # fmt: skip


record_value = st.integers(-(2**53) + 1, 2**53 - 1)
contract_counters = st.tuples(record_value, record_value, record_value, st.integers(0, 2**53 - 1),
                              st.integers(0, 2**53 - 1))  # fmt: skip


tile_members = st.tuples(st.lists(contract_counters, max_size=4), st.lists(contract_counters, max_size=4))


@given(tiles=st.lists(tile_members, min_size=1, max_size=12), pick=st.data())
def test_record_sums_equal_the_reference_sums(tiles: list[tuple[list, list]], pick: st.DataObject) -> None:
    """Tiles of calls and puts laid out as chain decomposition lays them out, summed from their records:
    exactly :func:`aggregate_tile_values` on the same counters (Python integers), for any subset of tiles."""
    records, spans, rows = b"", [], []
    for index, (calls, puts) in enumerate(tiles):
        spans.append((len(records) // RECORD_BYTES, len(calls), len(puts)))
        for cp, counters in [("C", c) for c in calls] + [("P", p) for p in puts]:
            records += struct.pack(RECORD_FORMAT, *counters)
            rows.append((str(index), cp, *map(str, counters)))
    chosen = sorted(pick.draw(st.sets(st.sampled_from([i for i, s in enumerate(spans) if s[1] + s[2]]))
                              if any(s[1] + s[2] for s in spans) else st.just(set())))  # fmt: skip
    sums = sum_counter_records(records, *zip(*(spans[i] for i in chosen), strict=True)) if chosen else None
    reference = aggregate_tile_values(rows)
    assert (sums.tolist() if chosen else []) == [list(reference[i].counters()) for i in chosen]


def test_an_unreadable_or_missing_record_sends_the_tiles_to_the_hashes() -> None:
    good = struct.pack(RECORD_FORMAT, 5, 5, 0, 1, 1)
    marked = struct.pack(RECORD_FORMAT, 0, 0, 0, 0, UNREADABLE)
    assert sum_counter_records(good + good, [0], [1], [1]).tolist() == [[10, 10, 0, 2, 2, 5, 5]]
    assert sum_counter_records(good + marked, [0], [1], [1]) is None
    assert sum_counter_records(good + marked, [0], [1], [0]).tolist() == [[5, 5, 0, 1, 1, 5, 0]]  # not in it
    assert sum_counter_records(good + struct.pack(RECORD_FORMAT, 2**53, 0, 0, 1, 1), [0], [1], [1]) is None
    assert sum_counter_records(good + struct.pack(RECORD_FORMAT, -(2**53), 0, 0, 1, 1), [0], [1], [1]) is None
    assert sum_counter_records(good, [0], [1], [1]) is None  # too short for the tile
    assert sum_counter_records(good, [], [], []).shape == (0, 7)


tile_value = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(10**12), 10**12),
    st.just(0),
    st.sampled_from([2**53 - 1, 2**53, -(2**53), 2**53 + 1, 1, -1, 10**6, 15, 999_999]),
)
cell_row = st.tuples(st.lists(tile_value, min_size=7, max_size=7), st.booleans(),
                     st.sampled_from(["2026-12-18", "2027-01-15"]),
                     st.sampled_from([5800.0, 5.5, 0.001, 123456.0, 0.0]))  # fmt: skip


@given(rows=st.lists(cell_row, max_size=40))
def test_encoded_cells_are_the_bytes_orjson_gives_for_the_cells(rows: list) -> None:
    """The vectorised encoder is byte-for-byte ``orjson.dumps`` of the cell :func:`build_heatmap_view` would
    hold (braces stripped), for any counters — beyond 2^53 (encoded from Python ints), empty rows and rows
    outside the plane (b"")."""
    sums = np.array([counters for counters, *_ in rows], dtype=np.int64).reshape(-1, 7)
    prefixes = np.array([cell_prefix(expiry, bucket) for _, _, expiry, bucket in rows] + [None], dtype=object)[:-1]
    visible = np.array([shown for _, shown, *_ in rows], dtype=bool)
    encoded = encode_cells(sums, prefixes, visible)
    assert encode_cells(sums, prefixes) == [
        orjson.dumps({"expiry": e, "bucket": b, **Tile(*c).to_view()})[1:-1] if any(c) else b"" for c, _, e, b in rows
    ]
    assert encoded == [
        orjson.dumps({"expiry": e, "bucket": b, **Tile(*c).to_view()})[1:-1] if shown and any(c) else b""
        for c, shown, e, b in rows
    ]
