import math
from collections import Counter
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.decompose import ContractRow, Spot, decompose, parse_row
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


# ----- bounds (issue 16: partial and absurd chains) -----------------------------------------------------------

NOW_MS = 1_700_000_000_000  # the clock of tests.support.chains rows: quotes 100 ms, trades 200 ms, spot 300 ms after it
DAY_MS = 86_400_000


def parsed(row: dict, **kwargs: object) -> tuple[object, Counter]:
    implausible: Counter = Counter()
    return parse_row(row, (), implausible=implausible, **kwargs), implausible  # type: ignore[arg-type]


def test_each_value_is_kept_at_its_bound_and_missing_and_counted_beyond_it() -> None:
    row = snapshot_row("SPY", E1, "C", 100, iv=1e300, bid=2e6)
    row["greeks"] = {"gamma": 1e308, "delta": 3.0, "vega": -1e6, "theta": -2e6}
    row["last_quote"]["ask_size"] = 10**8
    row["last_trade"]["price"] = 1e7
    row["day"]["volume"] = 10**12
    contract, implausible = parsed(row, now_ms=NOW_MS)
    assert isinstance(contract, ContractRow)
    assert (contract.iv, contract.gamma, contract.delta, contract.vega, contract.theta) == (None,) * 5
    assert (contract.bid, contract.ask, contract.ask_size, contract.bid_size) == (None, 1.1, None, 12)
    assert contract.last_price is None and contract.last_trade_ts_ms == 1_700_000_000_200
    assert contract.day_volume == 0
    assert implausible == {"iv": 1, "gamma": 1, "delta": 1, "vega": 1, "theta": 1, "bid": 1, "ask_size": 1,
                           "last_price": 1, "day_volume": 1}  # fmt: skip
    # at their bounds, the same fields are kept
    row = snapshot_row("SPY", E1, "P", 100, iv=10.0, oi=10**7, bid=0.0, ask=1e6, multiplier=1000)
    row["greeks"] = {"gamma": 1e5, "delta": -1.05, "vega": 1e5, "theta": -1e6}
    row["last_quote"]["bid_size"] = 10**7
    row["day"]["volume"] = 10**9
    contract, implausible = parsed(row, now_ms=NOW_MS)
    assert isinstance(contract, ContractRow) and not implausible
    assert (contract.iv, contract.open_interest, contract.multiplier) == (10.0, 10**7, 1000)
    assert (contract.gamma, contract.delta, contract.vega, contract.theta) == (1e5, -1.05, 1e5, -1e6)
    assert (contract.bid, contract.ask, contract.bid_size, contract.day_volume) == (0.0, 1e6, 10**7, 10**9)


@pytest.mark.parametrize(
    ("oi", "expected"),
    [(10**7, 10**7), (0, 0), (250.0, 250), (None, 0), ("12", 0), (10**7 + 1, "bad_open_interest"),
     (1e308, "bad_open_interest"), (12.5, "bad_open_interest"), (math.nan, "bad_open_interest"),
     (math.inf, "bad_open_interest"), (10**400, "bad_open_interest")],
)  # fmt: skip
def test_open_interest_is_an_integer_up_to_ten_million_or_the_row_is_rejected(oi: object, expected: object) -> None:
    row = snapshot_row("SPY", E1, "C", 100)
    row["open_interest"] = oi
    contract, _ = parsed(row)
    assert (contract.open_interest if isinstance(contract, ContractRow) else contract) == expected


@pytest.mark.parametrize(
    ("multiplier", "expected"),
    [(1, 1), (1000, 1000), (150.0, 150), (1001, "bad_multiplier"), (1e15, "bad_multiplier"), (0, "bad_multiplier"),
     (10.5, "bad_multiplier"), (True, "bad_multiplier"), ("100", "bad_multiplier"), (10**30, "bad_multiplier")],
)  # fmt: skip
def test_shares_per_contract_is_an_integer_from_one_to_a_thousand(multiplier: object, expected: object) -> None:
    row = snapshot_row("SPY", E1, "C", 100)
    row["details"]["shares_per_contract"] = multiplier
    contract, _ = parsed(row)
    assert (contract.multiplier if isinstance(contract, ContractRow) else contract) == expected


def test_a_zero_strike_and_an_unknown_contract_type_are_rejected_other_is_policy() -> None:
    zero = snapshot_row("SPY", E1, "C", 100)
    zero["details"].update(ticker="O:SPY300118C00000000", strike_price=0)
    other = snapshot_row("SPY", E1, "C", 101)
    other["details"]["contract_type"] = "other"
    junk = snapshot_row("SPY", E1, "C", 102)
    junk["details"]["contract_type"] = "warrant"
    dec = decompose("SPY", [zero, other, junk], bucket_width=1.0, am_settled_roots=())
    assert dec.rejected == {"bad_strike": 1, "unsupported_contract_type": 1, "bad_contract_type": 1}
    assert dec.untrusted_rows == 2  # Massive's own "other" is not held against the snapshot


def test_timestamps_outside_their_window_drop_the_quote_or_the_trade() -> None:
    row = snapshot_row("SPY", E1, "C", 100)
    now = 1_700_000_000_100 + 30 * DAY_MS  # the quote is exactly 30 days old: kept
    contract, implausible = parsed(row, now_ms=now)
    assert isinstance(contract, ContractRow) and contract.bid == 1.0 and not implausible
    contract, implausible = parsed(row, now_ms=now + 1)  # a millisecond older than that: no quote at all
    assert isinstance(contract, ContractRow) and implausible == {"quote_ts": 1}
    assert (contract.bid, contract.ask, contract.bid_size, contract.ask_size, contract.quote_ts_ms) == (None,) * 5
    assert contract.last_price == 1.05  # a trade 30 days old is still a trade
    future = snapshot_row("SPY", E1, "C", 100)
    future["last_trade"]["sip_timestamp"] = (NOW_MS + 61_000) * 1_000_000
    contract, implausible = parsed(future, now_ms=NOW_MS)
    assert isinstance(contract, ContractRow) and implausible == {"trade_ts": 1}
    assert contract.last_price is None and contract.last_trade_ts_ms is None and contract.bid == 1.0
    old_trade = snapshot_row("SPY", E1, "C", 100)
    old_trade["last_trade"]["sip_timestamp"] = (NOW_MS - 3 * 365 * DAY_MS) * 1_000_000  # a LEAPS's old print
    contract, implausible = parsed(old_trade, now_ms=NOW_MS)
    assert isinstance(contract, ContractRow) and contract.last_price == 1.05 and not implausible
    contract, implausible = parsed(future)  # without the snapshot's clock, times are not judged
    assert isinstance(contract, ContractRow) and contract.last_price == 1.05 and not implausible


def test_an_absurd_spot_is_not_taken_and_counted_once_per_snapshot() -> None:
    rows = chain_rows("SPY", [E1], [99, 100, 101], spot=1e300)
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=(), now_ms=NOW_MS)
    assert dec.spot is None and dec.implausible == {"spot": 1} and len(dec.rows) == 6
    rows[2]["underlying_asset"]["price"] = 100.5  # one plausible row is enough
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=(), now_ms=NOW_MS)
    assert dec.spot == Spot(100.5, 1_700_000_000_300) and dec.implausible == {"spot": 1}


def test_a_spot_of_an_absurd_time_or_far_from_the_strikes_is_not_taken() -> None:
    rows = chain_rows("SPY", [E1], [99, 100, 101])
    for row in rows:
        row["underlying_asset"]["last_updated"] = (NOW_MS + 3_600_000) * 1_000_000
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=(), now_ms=NOW_MS)
    assert dec.spot is None and dec.implausible == {"spot_ts": 1}
    for spot, taken in ((9.9, True), (1010.0, True), (9.8, False), (1011.0, False)):
        rows = chain_rows("SPY", [E1], [99, 100, 101], spot=spot)
        dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=(), now_ms=NOW_MS)
        assert (dec.spot is not None) is taken and dec.implausible == ({} if taken else {"spot": 1}), spot


def test_the_freshest_plausible_spot_wins() -> None:
    rows = chain_rows("SPY", [E1], [99, 100, 101], spot=100.0)
    rows[0]["underlying_asset"].update(price=1e300, last_updated=1_700_000_000_900_000_000)  # newer but absurd
    rows[1]["underlying_asset"].update(price=101.0, last_updated=1_700_000_000_800_000_000)
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=(), now_ms=NOW_MS)
    assert dec.spot == Spot(101.0, 1_700_000_000_800)


JSON_NUMBERS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=3), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 0.0, -0.0, 1e308, -1e308, 1e-320, 10**400]),
)  # fmt: skip
NUMERIC_FIELDS = ("open_interest", "implied_volatility", "greeks.gamma", "greeks.delta", "greeks.vega", "greeks.theta",
                  "last_quote.bid", "last_quote.ask", "last_quote.bid_size", "last_quote.ask_size",
                  "last_quote.last_updated", "last_trade.price", "last_trade.sip_timestamp", "day.volume",
                  "details.shares_per_contract", "underlying_asset.price", "underlying_asset.last_updated")  # fmt: skip


@given(values=st.lists(st.dictionaries(st.sampled_from(NUMERIC_FIELDS), JSON_NUMBERS), min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_whatever_the_numbers_every_kept_value_is_within_its_bounds(values: list[dict]) -> None:
    rows = []
    for i, fields in enumerate(values):
        row = snapshot_row("SPY", E1, "C", 100 + i)
        for path, value in fields.items():
            parent, _, name = path.rpartition(".")
            (row[parent] if parent else row)[name] = value
        rows.append(row)
    dec = decompose("SPY", rows, bucket_width=1.0, am_settled_roots=(), now_ms=NOW_MS)
    assert len(dec.rows) + sum(dec.rejected.values()) == len(rows)
    for c in dec.rows:
        assert 1 <= c.multiplier <= 1000 and 0 <= c.open_interest <= 10**7 and 0 <= c.day_volume <= 10**9
        assert c.iv is None or 0 < c.iv <= 10
        for value, bound in ((c.gamma, 1e5), (c.delta, 1.05), (c.vega, 1e5), (c.theta, 1e6)):
            assert value is None or (math.isfinite(value) and abs(value) <= bound)
        for price in (c.bid, c.ask, c.last_price):
            assert price is None or 0 <= price <= 1e6
        for size in (c.bid_size, c.ask_size):
            assert size is None or 0 <= size <= 10**7
        for ts in (c.quote_ts_ms, c.last_trade_ts_ms):
            assert ts is None or NOW_MS - 4 * 365 * DAY_MS <= ts <= NOW_MS + 60_000
    if dec.spot is not None:
        assert 0 < dec.spot.price <= 1e6
        if dec.rows:  # (without a contract there are no strikes to judge it by, nor a snapshot to apply)
            strikes = [c.spec.strike_milli / 1000 for c in dec.rows]
            assert min(strikes) / 10 <= dec.spot.price <= max(strikes) * 10
    assert all(count > 0 for count in dec.implausible.values())
