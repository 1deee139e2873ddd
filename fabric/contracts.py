"""Contract ids ↔ Massive option tickers — pure and exact both ways.

A Massive ticker is ``O:`` + root + ``YYMMDD`` + ``C``/``P`` + strike × 1000 zero-padded to 8 digits
(``O:SPY251219C00650000``). It is parsed from the right: the last 15 characters are fixed-width, the root
is whatever lies between ``O:`` and them (1–6 characters; a digit marks an adjusted contract, ``SPY1``).

A contract id is ``O:{ROOT}:{EXP}:{STRIKE}:{CP}`` (``O:SPY:2025-12-19:650:C``, ``O:SPXW:2025-12-19:6502.5:P``)
with the strike written canonically: no exponent, no trailing zeros, no trailing dot. Strikes are kept as
integer thousandths so no float ever enters the round trip.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import NamedTuple

_ROOT = re.compile(r"[A-Z][A-Z0-9]{0,5}")
_STRIKE = re.compile(r"(0|[1-9][0-9]{0,4})(\.[0-9]{0,2}[1-9])?")
MAX_STRIKE_THOUSANDTHS = 99_999_999


class ContractSpec(NamedTuple):
    """One option contract: root, expiry, call/put ("C"/"P") and strike in thousandths of a point."""

    root: str
    expiry: date
    cp: str
    strike_milli: int

    @property
    def strike(self) -> float:
        """The strike as a float (for math only; identity uses ``strike_milli``)."""
        return self.strike_milli / 1000.0


class InvalidTicker(ValueError):
    """A string that is not a valid option ticker or contract id."""


def format_strike(strike_milli: int) -> str:
    """The canonical decimal of a strike in thousandths: 650000 → ``650``, 652500 → ``652.5``."""
    whole, frac = divmod(strike_milli, 1000)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:03d}".rstrip("0")


def parse_strike(text: str) -> int:
    """The thousandths of a canonical strike decimal; raises :class:`InvalidTicker` if not canonical."""
    if not _STRIKE.fullmatch(text):
        raise InvalidTicker(f"not a canonical strike: {text!r}")
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + (int(frac.ljust(3, "0")) if frac else 0)


def _check_root(root: str, source: str) -> None:
    if not _ROOT.fullmatch(root):
        raise InvalidTicker(f"bad root {root!r} in {source!r}")


def parse_ticker(ticker: str) -> ContractSpec:
    """Parse a Massive option ticker (``O:SPY251219C00650000``) into a :class:`ContractSpec`."""
    if not isinstance(ticker, str) or len(ticker) < 18 or not ticker.startswith("O:") or not ticker.isascii():
        raise InvalidTicker(f"not an option ticker: {ticker!r}")
    root, tail = ticker[2:-15], ticker[-15:]
    _check_root(root, ticker)
    yymmdd, cp, digits = tail[:6], tail[6], tail[7:]
    if cp not in "CP" or not yymmdd.isdigit() or not digits.isdigit():
        raise InvalidTicker(f"bad tail {tail!r} in {ticker!r}")
    try:
        expiry = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))
    except ValueError as exc:
        raise InvalidTicker(f"bad expiry in {ticker!r}") from exc
    return ContractSpec(root, expiry, cp, int(digits))


def format_ticker(spec: ContractSpec) -> str:
    """The Massive ticker of a contract."""
    _check_root(spec.root, spec.root)
    if not 0 <= spec.strike_milli <= MAX_STRIKE_THOUSANDTHS or spec.cp not in ("C", "P"):
        raise InvalidTicker(f"cannot encode {spec!r}")
    if not 2000 <= spec.expiry.year <= 2099:
        raise InvalidTicker(f"expiry out of range in {spec!r}")
    return f"O:{spec.root}{spec.expiry:%y%m%d}{spec.cp}{spec.strike_milli:08d}"


def format_contract_id(spec: ContractSpec) -> str:
    """The contract id of a contract: ``O:SPY:2025-12-19:650:C``."""
    return f"O:{spec.root}:{spec.expiry.isoformat()}:{format_strike(spec.strike_milli)}:{spec.cp}"


def parse_contract_id(cid: str) -> ContractSpec:
    """Parse a contract id; raises :class:`InvalidTicker` unless it is exactly canonical."""
    parts = cid.split(":") if isinstance(cid, str) else []
    if len(parts) != 5 or parts[0] != "O" or parts[4] not in ("C", "P"):
        raise InvalidTicker(f"not a contract id: {cid!r}")
    _, root, exp, strike, cp = parts
    _check_root(root, cid)
    try:
        expiry = date.fromisoformat(exp)
    except ValueError as exc:
        raise InvalidTicker(f"bad expiry in {cid!r}") from exc
    if expiry.isoformat() != exp:
        raise InvalidTicker(f"non-canonical expiry in {cid!r}")
    spec = ContractSpec(root, expiry, cp, parse_strike(strike))
    if spec.strike_milli > MAX_STRIKE_THOUSANDTHS:
        raise InvalidTicker(f"strike too large in {cid!r}")
    return spec


@lru_cache(maxsize=131_072)
def ticker_to_contract_id(ticker: str) -> str:
    """``O:SPY251219C00650000`` → ``O:SPY:2025-12-19:650:C`` (cached: the ingest hot path calls it)."""
    return format_contract_id(parse_ticker(ticker))


@lru_cache(maxsize=131_072)
def contract_id_to_ticker(cid: str) -> str:
    """``O:SPY:2025-12-19:650:C`` → ``O:SPY251219C00650000``."""
    return format_ticker(parse_contract_id(cid))
