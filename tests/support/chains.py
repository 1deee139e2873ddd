"""Synthetic Massive snapshot rows for tests that do not need a whole simulator."""

from __future__ import annotations

from datetime import date
from typing import Any


def ticker(root: str, expiry: date, cp: str, strike: float) -> str:
    """A Massive option ticker, written independently of ``fabric.contracts``."""
    return f"O:{root}{expiry:%y%m%d}{cp}{round(strike * 1000):08d}"


def snapshot_row(
    root: str,
    expiry: date,
    cp: str,
    strike: float,
    *,
    spot: float = 100.0,
    oi: int = 1000,
    iv: float | None = 0.2,
    bid: float = 1.0,
    ask: float = 1.1,
    index: bool = False,
    multiplier: int = 100,
) -> dict[str, Any]:
    """One result row in the shape of ``/v3/snapshot/options/{U}``."""
    row: dict[str, Any] = {
        "break_even_price": strike + 1,
        "day": {"volume": 10, "close": 1.05, "last_updated": 1_700_000_000_000_000_000},
        "details": {
            "contract_type": "call" if cp == "C" else "put",
            "exercise_style": "european" if index else "american",
            "expiration_date": expiry.isoformat(),
            "shares_per_contract": multiplier,
            "strike_price": strike,
            "ticker": ticker(root, expiry, cp, strike),
        },
        "greeks": {"delta": 0.5, "gamma": 0.01, "theta": -0.1, "vega": 0.2},
        "last_quote": {
            "ask": ask,
            "ask_size": 10,
            "bid": bid,
            "bid_size": 12,
            "midpoint": (bid + ask) / 2,
            "last_updated": 1_700_000_000_100_000_000,
        },
        "last_trade": {"price": 1.05, "size": 1, "sip_timestamp": 1_700_000_000_200_000_000},
        "open_interest": oi,
        "underlying_asset": {("value" if index else "price"): spot, "last_updated": 1_700_000_000_300_000_000},
    }
    if iv is not None:
        row["implied_volatility"] = iv
    return row


def chain_rows(root: str, expiries: list[date], strikes: list[float], **kwargs: Any) -> list[dict[str, Any]]:
    """Calls and puts at every strike of every expiry."""
    return [snapshot_row(root, e, cp, k, **kwargs) for e in expiries for k in strikes for cp in ("C", "P")]
