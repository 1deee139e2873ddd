from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.contracts import (
    ContractSpec,
    InvalidTicker,
    contract_id_to_ticker,
    format_contract_id,
    format_strike,
    format_ticker,
    parse_contract_id,
    parse_strike,
    parse_ticker,
    ticker_to_contract_id,
)

EXAMPLES = [
    ("O:SPY251219C00650000", "O:SPY:2025-12-19:650:C"),
    ("O:SPY251219P00652500", "O:SPY:2025-12-19:652.5:P"),
    ("O:SPXW230712C04500000", "O:SPXW:2023-07-12:4500:C"),
    ("O:SPX251219P05000000", "O:SPX:2025-12-19:5000:P"),
    ("O:F260116C00004500", "O:F:2026-01-16:4.5:C"),
    ("O:AAPL1260116C00150000", "O:AAPL1:2026-01-16:150:C"),
    ("O:GOOGL260116P00001125", "O:GOOGL:2026-01-16:1.125:P"),
    ("O:BRKB26260116C00000010", "O:BRKB26:2026-01-16:0.01:C"),
]


@pytest.mark.parametrize(("ticker", "cid"), EXAMPLES)
def test_known_tickers_both_ways(ticker: str, cid: str) -> None:
    assert ticker_to_contract_id(ticker) == cid
    assert contract_id_to_ticker(cid) == ticker


def test_spx_and_spxw_are_different_contracts() -> None:
    spx = ticker_to_contract_id("O:SPX251219C06500000")
    spxw = ticker_to_contract_id("O:SPXW251219C06500000")
    assert spx != spxw
    assert parse_contract_id(spx)[1:] == parse_contract_id(spxw)[1:]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "SPY251219C00650000",
        "O:251219C00650000",
        "O:SPY251219X00650000",
        "O:SPY251319C00650000",
        "O:SPY251219C0065000A",
        "O:spy251219C00650000",
        "O:TOOLONGX251219C00650000",
        "O:SPY251219C0065000²",
        None,
        12,
    ],
)
def test_bad_tickers_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidTicker):
        parse_ticker(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "O:SPY:2025-12-19:650.0:C",
        "O:SPY:2025-12-19:0650:C",
        "O:SPY:2025-12-19:650.:C",
        "O:SPY:2025-12-19:1e3:C",
        "O:SPY:2025-12-19:650:X",
        "O:SPY:20251219:650:C",
        "X:SPY:2025-12-19:650:C",
        "O:SPY:2025-12-19:650",
    ],
)
def test_non_canonical_contract_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidTicker):
        parse_contract_id(bad)


def test_strike_canonical_form() -> None:
    assert format_strike(650_000) == "650"
    assert format_strike(652_500) == "652.5"
    assert format_strike(4_500) == "4.5"
    assert format_strike(1_125) == "1.125"
    assert format_strike(0) == "0"
    assert parse_strike("652.5") == 652_500


roots = st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True)
specs = st.builds(
    ContractSpec,
    root=roots,
    expiry=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
    cp=st.sampled_from(["C", "P"]),
    strike_milli=st.integers(min_value=0, max_value=99_999_999),
)


@given(specs)
def test_round_trip_spec_ticker_contract_id(spec: ContractSpec) -> None:
    ticker = format_ticker(spec)
    assert len(ticker) == 2 + len(spec.root) + 15
    assert parse_ticker(ticker) == spec
    cid = format_contract_id(spec)
    assert parse_contract_id(cid) == spec
    assert ticker_to_contract_id(ticker) == cid
    assert contract_id_to_ticker(cid) == ticker


@given(st.integers(min_value=0, max_value=99_999_999))
def test_strike_text_round_trip_is_exact(milli: int) -> None:
    text = format_strike(milli)
    assert parse_strike(text) == milli
    assert float(text) * 1000 == pytest.approx(milli)


@given(st.text(max_size=30))
def test_any_string_either_parses_or_raises_invalid_ticker(text: str) -> None:
    try:
        spec = parse_ticker(text)
    except InvalidTicker:
        return
    assert format_ticker(spec) == text
