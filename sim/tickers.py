"""Massive option ticker encoding: ``O:`` + root + YYMMDD + C/P + strike x 1000 padded to 8 digits."""

from __future__ import annotations

from datetime import date


def encode(root: str, expiry: date, is_call: bool, strike: float) -> str:
    """Build an option ticker, e.g. ``encode("SPY", date(2025,12,19), True, 650) == "O:SPY251219C00650000"``."""
    return f"O:{root}{expiry:%y%m%d}{'C' if is_call else 'P'}{round(strike * 1000):08d}"


def decode(ticker: str) -> tuple[str, date, bool, float]:
    """Parse a ticker from the right into ``(root, expiry, is_call, strike)``."""
    if not ticker.startswith("O:") or len(ticker) < 18:
        raise ValueError(f"not an option ticker: {ticker!r}")
    body = ticker[2:]
    root, tail = body[:-15], body[-15:]
    expiry = date(2000 + int(tail[0:2]), int(tail[2:4]), int(tail[4:6]))
    if tail[6] not in "CP":
        raise ValueError(f"bad contract type in {ticker!r}")
    return root, expiry, tail[6] == "C", int(tail[7:]) / 1000.0


def underlying_ticker(name: str, is_index: bool) -> str:
    """The Massive underlying symbol: ``I:SPX`` for an index, ``SPY`` for a stock/ETF."""
    return f"I:{name}" if is_index else name
