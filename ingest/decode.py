"""Decode and validate WebSocket frames — pure, no I/O, the receive time passed in.

A frame is a JSON array of events. Every event is checked before it can reach Redis: its type, the
fields its type needs with the right JSON types, and every number within one set of bounds shared by every
decode path (this module's general path and the typed fast path of :mod:`ingest.batch`):

==================  =========================================================================================
field               bound (else the event is dropped and counted under the reason)
==================  =========================================================================================
price ``p bp ap``   finite, 0 < p ≤ :data:`MAX_PRICE` (a quote side may be 0 = no bid/ask)  → ``bad_price``
``val`` (index)     the same as a price                                                      → ``bad_price``
size ``s bs as``    an integer, 0 < s ≤ :data:`MAX_SIZE` (a quote side may be 0)              → ``bad_size``
notional ``p × s``  ≤ :data:`MAX_NOTIONAL` for an option trade                → ``implausible_notional``
time ``t``          an integer within :class:`EventWindow` of the receive time
                    (not an integer, negative: ``bad_time_or_sequence``; outside the window: ``time_out_of_window``)
sequence ``q``      an integer, 0 ≤ q ≤ :data:`MAX_SEQUENCE`        (else ``bad_time_or_sequence``)
symbol              a non-empty string                                                        → ``bad_symbol``
==================  =========================================================================================

The time window is what keeps one absurd event from capturing a newer-wins rule: a stock print stamped
``2^64 − 1`` would otherwise hold ``massive:spot:{U}`` at its price for good. Its reference is the
receive time — or the fixed clock (``MMAKER_CLOCK_MS``) of a replay, whose recorded events carry the times
they were recorded at. Anything else is counted by reason and dropped; no input — any bytes, NaN, integers
past 64 bits — raises out of :func:`decode_frame`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

#: Bounds of plausibility: a larger price or size is a corrupt event, not a market (and would lose
#: precision in Lua's doubles).
MAX_PRICE = 1_000_000.0
MAX_SIZE = 10_000_000
#: price × size of one trade: keeps every premium, in micro-dollars × a multiplier up to 1,000, below 2^53
#: so Lua's doubles sum it exactly (5e6 × 1e6 × 1,000 = 5e15 < 9.007e15).
MAX_NOTIONAL = 5_000_000.0
#: The largest sequence number: every larger integer is not exact in Lua's doubles (nor in JSON readers).
MAX_SEQUENCE = 2**53 - 1
#: A sequence number that does not grow is accepted anyway when its event is at least this much newer than
#: the newest event of its kind seen for the contract: the feed's numbering started again (a new feed
#: session, a restarted simulator). A duplicate or a reordered event is never that much newer, so the
#: protection that matters — a batch sent again after a lost reply — holds; and a sequence number captured
#: by one absurd event frees itself as soon as the feed's clock passes that event's (bounded) time.
SEQUENCE_RESTART_GAP_MS = 1_000


@dataclass(frozen=True)
class EventWindow:
    """How far an event time may lie from its reference (the receive time, or a fixed replay clock)."""

    max_age_ms: int = 86_400_000
    max_lead_ms: int = 30_000
    fixed_clock_ms: int | None = None

    def bounds(self, recv_ms: int) -> tuple[int, int]:
        """``(lowest, highest)`` event time accepted for a frame received at ``recv_ms``, Unix ms."""
        ref = self.fixed_clock_ms if self.fixed_clock_ms is not None else recv_ms
        return ref - self.max_age_ms, ref + self.max_lead_ms


DEFAULT_WINDOW = EventWindow()


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
    #: the event times accepted (Unix ms): set by :func:`decode_frame` from the receive time
    min_ts_ms: int = 0
    top_ts_ms: int = MAX_SEQUENCE


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


def decode_frame(
    raw: bytes | str, *, recv_ms: int, feed: str = "options", window: EventWindow = DEFAULT_WINDOW
) -> Decoded:
    """Decode one frame from ``feed`` (``options``, ``stocks`` or ``indices``) received at ``recv_ms``
    (Unix ms); never raises."""
    out = Decoded()
    out.min_ts_ms, out.top_ts_ms = window.bounds(recv_ms)
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
    """Validate one parsed event into ``out`` (appended, or its reject counted by reason); never raises.
    Event times are bounded by ``out.min_ts_ms`` … ``out.top_ts_ms``."""
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


def _time(ts: Any, out: Decoded) -> bool:
    """True when ``ts`` is an event time within the window; else the reason is counted."""
    if type(ts) is not int or ts < 0:
        out.rejects["bad_time_or_sequence"] += 1
        return False
    if not out.min_ts_ms <= ts <= out.top_ts_ms:
        out.rejects["time_out_of_window"] += 1
        return False
    return True


def _common(event: dict[str, Any], out: Decoded) -> tuple[str, int, int] | None:
    sym, ts, q = event.get("sym"), event.get("t"), event.get("q")
    if type(sym) is not str or not sym:
        out.rejects["bad_symbol"] += 1
        return None
    if type(q) is not int or not 0 <= q <= MAX_SEQUENCE:
        out.rejects["bad_time_or_sequence"] += 1
        return None
    if not _time(ts, out):
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
    elif not _time(ts, out):
        pass
    elif price is None:
        out.rejects["bad_price"] += 1
    else:
        out.spots.append(SpotTick(sym, price, ts))
