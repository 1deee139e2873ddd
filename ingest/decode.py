"""Decode and validate WebSocket frames — pure, no I/O, the receive time passed in.

A frame is a JSON array of events. Every event is checked before it can reach Redis: its type, the
fields its type needs with the right JSON types, finite positive prices and sizes (a quote side may be
0 = no bid/ask), a non-negative timestamp and sequence number. Anything else is counted by reason and
dropped; no input — any bytes — raises out of :func:`decode_frame`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson


class Quote(NamedTuple):
    """An option quote: ``Q`` event."""

    sym: str
    bid: float
    ask: float
    bid_size: int
    ask_size: int
    ts_ms: int
    q: int


class Trade(NamedTuple):
    """An option trade: ``T`` event."""

    sym: str
    price: float
    size: int
    ts_ms: int
    q: int


class SpotTick(NamedTuple):
    """An underlying price: a stock trade (``T`` on /stocks) or an index value (``V`` on /indices)."""

    sym: str
    price: float
    ts_ms: int


class Status(NamedTuple):
    """A ``status`` event: connected, auth_success, auth_failed, max_connections, …"""

    status: str
    message: str


@dataclass
class Decoded:
    """What one frame held, in arrival order, with the rejects counted by reason."""

    quotes_and_trades: list[Quote | Trade] = field(default_factory=list)
    spots: list[SpotTick] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    rejects: Counter[str] = field(default_factory=Counter)
    max_ts_ms: int = 0


#: Bounds of plausibility: a larger price or size is a corrupt event, not a market (and would lose
#: precision in Lua's doubles).
MAX_PRICE = 1_000_000.0
MAX_SIZE = 10_000_000
#: price × size of one trade: keeps every premium, in micro-dollars × a multiplier up to 1,000, below 2^53
#: so Lua's doubles sum it exactly (5e6 × 1e6 × 1,000 = 5e15 < 9.007e15).
MAX_NOTIONAL = 5_000_000.0


def _price(value: Any, *, allow_zero: bool = False) -> float | None:
    kind = type(value)
    if kind is not float and kind is not int:
        return None
    f = float(value) if kind is float or abs(value) < 2**53 else math.inf
    if not math.isfinite(f) or f < 0 or f > MAX_PRICE or (f == 0 and not allow_zero):
        return None
    return f


def _count(value: Any, *, allow_zero: bool = False) -> int | None:
    if type(value) is not int or value < 0 or value > MAX_SIZE or (value == 0 and not allow_zero):
        return None
    return value


def decode_frame(raw: bytes | str, *, feed: str = "options") -> Decoded:
    """Decode one frame from ``feed`` (``options``, ``stocks`` or ``indices``); never raises."""
    out = Decoded()
    events = parse_frame(raw, out)
    if events is not None:
        options = feed == "options"
        for event in events:
            decode_event(event, out, options=options)
    return out


def parse_frame(raw: bytes | str, out: Decoded) -> list[Any] | None:
    """The events of a frame, not yet validated (a bare event is tolerated); None, counted in ``out``, if none."""
    try:
        events = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        events = _lenient(raw)
        if events is None:
            out.rejects["malformed_frame"] += 1
            return None
    if type(events) is dict:
        events = [events]
    if type(events) is not list:
        out.rejects["not_an_array"] += 1
        return None
    return events


def decode_event(event: Any, out: Decoded, *, options: bool) -> None:
    """Validate one parsed event into ``out`` (appended, or its reject counted by reason); never raises."""
    if type(event) is not dict:
        out.rejects["not_an_object"] += 1
        return
    ev = event.get("ev")
    if ev == "Q" and options:
        _quote(event, out)
    elif ev == "T":
        if options:
            _trade(event, out)
        else:
            _spot(event, out, "sym", "p")
    elif ev == "V" and not options:
        _spot(event, out, "T", "val")
    elif ev == "status":
        status, message = event.get("status"), event.get("message")
        out.statuses.append(Status(status if type(status) is str else "", message if type(message) is str else ""))
    else:
        out.rejects["unknown_event"] += 1


def _lenient(raw: bytes | str) -> Any:
    """Python's parser accepts NaN / Infinity literals: parse with it so only the bad events are dropped."""
    try:
        return json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None


def _common(event: dict[str, Any], out: Decoded) -> tuple[str, int, int] | None:
    sym, ts, q = event.get("sym"), event.get("t"), event.get("q")
    if type(sym) is not str or not sym:
        out.rejects["bad_symbol"] += 1
        return None
    if type(ts) is not int or ts < 0 or type(q) is not int or q < 0:
        out.rejects["bad_time_or_sequence"] += 1
        return None
    return sym, ts, q


def _quote(event: dict[str, Any], out: Decoded) -> None:
    common = _common(event, out)
    if common is None:
        return
    bid, ask = _price(event.get("bp"), allow_zero=True), _price(event.get("ap"), allow_zero=True)
    if bid is None or ask is None:
        out.rejects["bad_price"] += 1
        return
    bid_size, ask_size = _count(event.get("bs"), allow_zero=True), _count(event.get("as"), allow_zero=True)
    if bid_size is None or ask_size is None:
        out.rejects["bad_size"] += 1
        return
    sym, ts, q = common
    out.quotes_and_trades.append(Quote(sym, bid, ask, bid_size, ask_size, ts, q))
    if ts > out.max_ts_ms:
        out.max_ts_ms = ts


def _trade(event: dict[str, Any], out: Decoded) -> None:
    common = _common(event, out)
    if common is None:
        return
    price = _price(event.get("p"))
    if price is None:
        out.rejects["bad_price"] += 1
        return
    size = _count(event.get("s"))
    if size is None:
        out.rejects["bad_size"] += 1
        return
    if price * size > MAX_NOTIONAL:
        out.rejects["implausible_notional"] += 1
        return
    sym, ts, q = common
    out.quotes_and_trades.append(Trade(sym, price, size, ts, q))
    if ts > out.max_ts_ms:
        out.max_ts_ms = ts


def _spot(event: dict[str, Any], out: Decoded, sym_field: str, price_field: str) -> None:
    sym, ts = event.get(sym_field), event.get("t")
    price = _price(event.get(price_field))
    if type(sym) is not str or not sym:
        out.rejects["bad_symbol"] += 1
    elif type(ts) is not int or ts < 0:
        out.rejects["bad_time_or_sequence"] += 1
    elif price is None:
        out.rejects["bad_price"] += 1
    else:
        out.spots.append(SpotTick(sym, price, ts))
