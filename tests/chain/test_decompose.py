import math
from datetime import date

from chain.decompose import decompose, parse_row
from tests.support.chains import chain_rows, snapshot_row

E1, E2 = date(2030, 1, 18), date(2030, 2, 15)


def test_decompose_builds_topology_and_tiles() -> None:
    rows = chain_rows("SPY", [E2, E1], [99, 100, 101.5])
    dec = decompose("spy", rows, bucket_width=1.0, am_settled_roots=("SPX",))
    assert dec.underlying == "SPY"
    assert len(dec.rows) == 12 and not dec.rejected
    assert dec.expiries == ("2030-01-18", "2030-02-15")
    assert dec.buckets == (99, 100, 101)
    tiles = dict(zip(dec.contract_ids, dec.tiles(), strict=True))
    assert tiles["O:SPY:2030-01-18:99:C"] == 0
    assert tiles["O:SPY:2030-01-18:101.5:P"] == 2
    assert tiles["O:SPY:2030-02-15:100:C"] == 3 + 1
    assert dec.spot is not None and dec.spot.price == 100.0 and dec.spot.ts_ms == 1_700_000_000_300


def test_same_topology_same_epoch_id_in_any_order() -> None:
    rows = chain_rows("SPY", [E1, E2], [99, 100, 101])
    a = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=())
    b = decompose("SPY", list(reversed(rows)), bucket_width=1.0, am_settled_roots=())
    c = decompose(
        "SPY", chain_rows("SPY", [E1, E2], [99, 100, 101], oi=5, iv=0.3), bucket_width=1.0, am_settled_roots=()
    )
    assert a.epoch_id == b.epoch_id == c.epoch_id
    d = decompose("SPY", rows + chain_rows("SPY", [date(2030, 3, 15)], [100]), bucket_width=1.0, am_settled_roots=())
    assert d.epoch_id != a.epoch_id


def test_bad_rows_are_rejected_and_counted() -> None:
    good = snapshot_row("SPY", E1, "C", 100)
    wrong_type = snapshot_row("SPY", E1, "C", 101)
    wrong_type["details"]["contract_type"] = "put"
    other = snapshot_row("SPY", E1, "C", 102)
    other["details"]["contract_type"] = "other"
    bad_ticker = snapshot_row("SPY", E1, "C", 103)
    bad_ticker["details"]["ticker"] = "O:SPY??"
    wrong_strike = snapshot_row("SPY", E1, "C", 104)
    wrong_strike["details"]["strike_price"] = 105
    bad_mult = snapshot_row("SPY", E1, "C", 106, multiplier=0)
    dec = decompose(
        "SPY",
        [good, dict(good), wrong_type, other, bad_ticker, wrong_strike, bad_mult, "junk", {"details": None}],
        bucket_width=1.0,
        am_settled_roots=(),
    )
    assert dec.contract_ids == ["O:SPY:2030-01-18:100:C"]
    assert dec.rejected == {
        "duplicate": 1,
        "inconsistent_details": 2,
        "unsupported_contract_type": 1,
        "bad_ticker": 1,
        "bad_multiplier": 1,
        "not_an_object": 1,
        "missing_details": 1,
    }


def test_nan_and_negative_numbers_become_missing() -> None:
    row = snapshot_row("SPY", E1, "P", 100, iv=math.nan, bid=-1.0)
    row["open_interest"] = -5
    row["greeks"]["gamma"] = math.inf
    parsed = parse_row(row, ())
    assert not isinstance(parsed, str)
    assert parsed.iv is None and parsed.bid is None and parsed.gamma is None
    assert parsed.open_interest == 0
    assert parsed.theta == -0.1  # greeks may be negative


def test_expired_contracts_are_dropped_and_adjusted_multiplier_kept() -> None:
    past = snapshot_row("SPY", date(2020, 1, 17), "C", 100)
    adjusted = snapshot_row("SPY1", E1, "C", 100, multiplier=150)
    dec = decompose("SPY", [past, adjusted], bucket_width=1.0, am_settled_roots=(), now_ms=1_700_000_000_000)
    assert dec.rejected == {"expired": 1}
    assert dec.rows[0].multiplier == 150 and dec.rows[0].cid == "O:SPY1:2030-01-18:100:C"


def test_index_spot_uses_value() -> None:
    rows = chain_rows("SPXW", [E1], [5000], spot=5012.5, index=True)
    dec = decompose("SPX", rows, bucket_width=5.0, am_settled_roots=("SPX",))
    assert dec.spot is not None and dec.spot.price == 5012.5
