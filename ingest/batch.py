"""Turn frames into one Lua call per live epoch — pure, no I/O.

:class:`BatchBuilder` makes one pass over the events of each frame: validate, resolve, filter by sequence
and conflate (the hot path of ingest). A frame of plain quotes and trades only — the common case — is
decoded and checked in one go by msgspec into small structs (its bounds are decode_event's); any other
frame is parsed by orjson and each event decided on its own: an event that is not plainly valid goes
through :func:`ingest.decode.decode_event`, which counts the reason it is rejected, so the fast paths only
decide the common case and rejects stay exact.

- **Resolution.** A ticker maps to its contract id and to every live epoch (active and warming) that holds
  it, through a :class:`Universe` built from Redis whenever the live epochs change. A ticker no live
  epoch holds is counted (``unknown_contract``) and dropped — ingest never creates a contract.
- **Sequence.** Per ticker and event type the sequence number ``q`` must increase; duplicates and
  out-of-order events are counted (``out_of_sequence``) and dropped — unless the event is at least
  :data:`ingest.decode.SEQUENCE_RESTART_GAP_MS` newer than the newest of its kind seen: the feed's numbering
  started again (counted, ``sequence_restarts``). The Lua script checks again, by the same rule, against what
  Redis holds, so a restart of ingest cannot re-apply an event either.
- **Conflation.** Consecutive quotes of one contract collapse to the last one; a quote is flushed just
  before the next trade of its contract, so every trade is still classified against the quote that was
  in force when it printed. The last spot per underlying wins.
- **Layout.** The events of a batch are grouped by contract (each contract's in arrival order; contracts
  are independent, so nothing else about the order matters) and each epoch call sends them to
  ``ingest_batch.lua`` as one JSON argument: per contract a flat array of
  ``0, bid, ask, bid_size, ask_size, ts_ms, q`` (a quote) and ``1, price, size, ts_ms, q`` (a trade).
  Prices travel as JSON numbers — the shortest text that reads back as the same double, so the script
  compares the very micro-dollars :func:`models.heatmap.to_micro` would — except the values the script
  stores (the last quote and the last trade of each contract), which travel as text (prices as their
  ``repr``), so neither Lua nor Redis formats a number: that would cost more than the rest of the script's
  work on a contract. A contract whose only event is one quote (after conflation, about two thirds of the
  contracts of a busy batch) travels instead as six plain arguments — the quote as the text to store — with
  one key: no JSON for the script to decode, no GEX key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import orjson

from fabric import keys
from fabric.contracts import InvalidTicker, parse_ticker
from ingest.decode import (
    DEFAULT_WINDOW,
    MAX_NOTIONAL,
    MAX_PRICE,
    MAX_SEQUENCE,
    MAX_SIZE,
    SEQUENCE_RESTART_GAP_MS,
    Decoded,
    EventWindow,
    Quote,
    SpotTick,
    Trade,
    decode_event,
    parse_frame,
)

QUOTE = 0
TRADE = 1
ScriptCalls = list[tuple[list[str], list[str | int | bytes]]]  # (KEYS, ARGV) of ingest_batch.lua calls
QUOTE_VALUES = 7  # QUOTE, bid, ask, bid_size, ask_size, ts_ms, q
EXPECT_ARG, MARK_ARG = 1, 2  # where an ingest_batch.lua call's ARGV holds the chain marks (see the script)
CHAIN_KEY = 2  # and where its KEYS hold the underlying's chain key
TRADE_VALUES = 5  # TRADE, price, size, ts_ms, q


@dataclass(frozen=True)
class Universe:
    """Ticker → (underlying, contract id, live epochs holding it); spot symbol → underlying."""

    contracts: Mapping[str, tuple[str, str, tuple[str, ...]]]
    spot_symbols: Mapping[str, str]
    epochs: Mapping[str, tuple[str, ...]]  # underlying → live epochs, oldest first

    @classmethod
    def empty(cls) -> Universe:
        """A universe with no contract (before the first epoch exists)."""
        return cls({}, {}, {})


@dataclass
class EpochCall:
    """The arguments of one ``ingest_batch.lua`` call for one epoch of one underlying.

    ``cids[i]`` is a contract and ``events[i]`` its events, flat, in the layout the module docstring gives;
    ``quoted[j]`` is a contract whose only event is one quote (the batch builder puts it there) and
    ``quotes[6j … 6j + 5]`` that quote as the text to store (bid, ask, bid_size, ask_size, ts_ms, q).
    """

    underlying: str
    epoch: str
    cids: list[str] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    slot: dict[str, int] = field(default_factory=dict)
    quoted: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)

    def add(self, cid: str, kind: str, *values: Any) -> None:
        """Append one event of ``cid``: ``"Q", bid, ask, bid_size, ask_size, ts_ms, q`` or
        ``"T", price, size, ts_ms, q`` (prices as floats or decimal text)."""
        i = self.slot.get(cid)
        if i is None:
            i = self.slot[cid] = len(self.cids)
            self.cids.append(cid)
            self.events.append([])
        self.events[i] += (QUOTE if kind == "Q" else TRADE, *values)

    def unpacked(self) -> list[tuple[str, str, tuple[Any, ...]]]:
        """Every event as ``(kind "Q"/"T", cid, values)``, contract by contract (for tests and logs): the
        single-quote contracts first."""
        out = [("Q", cid, tuple(self.quotes[6 * j : 6 * j + 6])) for j, cid in enumerate(self.quoted)]
        for cid, flat in zip(self.cids, self.events, strict=True):
            p = 0
            while p < len(flat):
                width = QUOTE_VALUES if flat[p] == QUOTE else TRADE_VALUES
                out.append(("Q" if flat[p] == QUOTE else "T", cid, tuple(flat[p + 1 : p + width])))
                p += width
        return out

    def keys(self) -> list[str]:
        """KEYS of the call (see :meth:`script_call`)."""
        return self.script_call(0)[0]

    def args(self, max_quote_age_ms: int) -> list[str | int | bytes]:
        """ARGV of the call (see :meth:`script_call`)."""
        return self.script_call(max_quote_age_ms)[1]

    def script_call(self, max_quote_age_ms: int) -> tuple[list[str], list[str | int | bytes]]:
        """(KEYS, ARGV) of the ``ingest_batch.lua`` call.

        KEYS: the dirty set, the counter records, the underlying's chain key, the heatmap hash of every
        contract whose only event is one quote, then heatmap and GEX hash of every other contract.
        ARGV: the quote age limit, the chain's expected and own mark (empty: set by the committer at
        :data:`EXPECT_ARG`, :data:`MARK_ARG`), the sequence restart gap, the number of single-quote contracts
        and their quotes as the text to store (six values each), the other contracts' ids, then their events as
        one JSON array.
        A contract :meth:`add` gave a single quote goes to the single-quote section here (the batch builder
        puts such contracts in ``quoted`` directly).
        """
        u, e = self.underlying, self.epoch
        hm, gx = keys.contract_prefix(u, e, "heatmap"), keys.contract_prefix(u, e, "gex")
        quoted, quotes = list(self.quoted), list(self.quotes)
        cids, events = [], []
        for cid, flat in zip(self.cids, self.events, strict=True):
            if len(flat) == QUOTE_VALUES and flat[0] == QUOTE:
                _, bid, ask, bid_size, ask_size, ts, q = flat
                quoted.append(cid)
                quotes += (_text(bid), _text(ask), str(bid_size), str(ask_size), str(ts), str(q))
            else:
                cids.append(cid)
                events.append(flat)
        call_keys = [keys.dirty_contracts(u, e), keys.heatmap_counters(u, e), keys.ingest_chain(u),
                     *(hm + cid for cid in quoted)]  # fmt: skip
        for cid in cids:
            call_keys += (hm + cid, gx + cid)
        return call_keys, [max_quote_age_ms, "", "", SEQUENCE_RESTART_GAP_MS, len(quoted), *quotes, *cids,
                           orjson.dumps(events)]  # fmt: skip


def _text(price: Any) -> str:
    """A price as the script stores it: decimal text as given, a number as the text ``repr`` gives its
    float (what the script does with a number: the shortest text that reads back as it)."""
    return price if isinstance(price, str) else repr(float(price))


# The typed fast path of a frame: msgspec decodes an ASCII frame of plain quotes and trades straight into
# these structs, checking in C every fixed bound the plain case needs (the same as decode_event's: prices
# finite and in range — an integer price is taken as its float, as decode_event does —, sizes integers in
# range, sequence and time integers in range, a non-empty symbol). A frame with anything else in it (another
# event type, a missing field, a wrong type, a bound broken, malformed JSON, nesting too deep) fails to
# decode as a whole and takes the general path, where every event is decided and every reject counted as
# before. The bounds that depend on more than one field or on the frame — a trade's notional, the event
# time's window around the receive time — are checked in add_events; an event outside them goes to
# decode_event alone, which counts the reason.
_Price0 = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_PRICE)]
_Price = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_PRICE)]
_Size0 = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]
_Size = Annotated[int, msgspec.Meta(gt=0, le=MAX_SIZE)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]  # sequence and time; the window: add_events
_Symbol = Annotated[str, msgspec.Meta(min_length=1)]


class _Q(msgspec.Struct, tag_field="ev", tag="Q", gc=False):
    sym: _Symbol
    bp: _Price0
    ap: _Price0
    bs: _Size0
    as_: _Size0 = msgspec.field(name="as")
    t: _Count
    q: _Count


class _T(msgspec.Struct, tag_field="ev", tag="T", gc=False):
    sym: _Symbol
    p: _Price
    s: _Size
    t: _Count
    q: _Count


_PLAIN_FRAME = msgspec.json.Decoder(list[_Q | _T])


# The per-ticker record a SequenceFilter keeps (a list: indexing is the cheapest access in the hot loop).
# _LAST_TRADE / _LAST_QUOTE: positions in _FLAT of the last trade and of the last quote flushed before a trade
# (-1: none in this batch) — the values the script stores, sent as text by BatchBuilder.build. _QUOTE_TS /
# _TRADE_TS: the newest event time of each kind seen (the sequence restart rule).
_QUOTE_Q, _TRADE_Q, _BATCH, _FLAT, _PENDING, _CHECKED, _SYM, _LAST_TRADE, _LAST_QUOTE, _QUOTE_TS, _TRADE_TS = range(11)


def _new_record(sym: str, checked: Any = None) -> list[Any]:
    return [-1, -1, None, None, None, checked, sym, 0, -1, -1, -1]


class SequenceFilter:
    """The last sequence number seen per ticker and event type (a cache: Redis stays the authority).

    Each ticker's record also carries the :class:`BatchBuilder` state of that ticker (its events in the
    batch being built, its pending quote) and the universe it was last resolved in, so the hot loop does
    one dictionary lookup per event.
    """

    def __init__(self, max_tickers: int = 500_000) -> None:
        self.records: dict[str, list[Any]] = {}
        self.max_tickers = max_tickers

    def record(self, sym: str) -> list[Any]:
        """The record of ``sym`` (created empty: nothing seen)."""
        found = self.records.get(sym)
        if found is None:
            found = self.records[sym] = _new_record(sym)
        return found

    def accept(self, sym: str, q: int, ts_ms: int, *, trade: bool) -> bool:
        """True when ``q`` is newer than anything seen for ``sym`` — or its sequence started again (the event is
        at least :data:`SEQUENCE_RESTART_GAP_MS` newer than the newest seen); remembers it."""
        rec = self.record(sym)
        i, t = (_TRADE_Q, _TRADE_TS) if trade else (_QUOTE_Q, _QUOTE_TS)
        if q <= rec[i] and ts_ms < rec[t] + SEQUENCE_RESTART_GAP_MS:
            return False
        rec[i] = q
        rec[t] = max(rec[t], ts_ms)
        return True

    def trim(self) -> None:
        """Forget everything once more than ``max_tickers`` tickers are held (called between batches)."""
        if len(self.records) > self.max_tickers:
            self.records.clear()


@dataclass
class Batch:
    """The result of :class:`BatchBuilder`: the epoch calls, the latest spot per underlying and counters."""

    calls: list[EpochCall]
    spots: dict[str, SpotTick]
    rejects: Counter[str]
    events_in: int
    quotes_conflated: int
    sequence_restarts: int = 0

    def script_calls(self, max_quote_age_ms: int) -> ScriptCalls:
        """``(KEYS, ARGV)`` of every ``ingest_batch.lua`` call of the batch (one per epoch with events)."""
        return [call.script_call(max_quote_age_ms) for call in self.calls if call.cids or call.quoted]


class BatchBuilder:
    """Accumulates the events of several frames into one :class:`Batch` (see the module docstring)."""

    def __init__(self, universe: Universe, sequence: SequenceFilter, window: EventWindow = DEFAULT_WINDOW) -> None:
        self.universe = universe
        self.sequence = sequence
        self.window = window
        self.rejects: Counter[str] = Counter()
        self._scratch = Decoded()  # the slow path's: its rejects are merged, its statuses ignored
        self.events_in = 0
        self.quotes_conflated = 0
        self.sequence_restarts = 0
        self._spots: list[SpotTick] = []
        self._token = object()  # marks the ticker records that hold this batch's events
        self._touched: list[list[Any]] = []  # those records, in first-touch order

    def add_frame(self, raw: bytes | str, feed: str = "options", *, recv_ms: int) -> int:
        """Add the events of one frame from ``feed`` received at ``recv_ms`` (Unix ms); returns its latest
        event time, ms (0 when none)."""
        # ASCII only (a fast scan): msgspec does not check the UTF-8 of the values it skips, which the general
        # path counts as a malformed frame, and non-ASCII is never the plain case anyway.
        if feed == "options" and raw.isascii():
            try:
                plain = _PLAIN_FRAME.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError, RecursionError):
                pass  # not a frame of plain quotes and trades only: the general path decides every event
            else:
                return self.add_events(plain, recv_ms=recv_ms)
        scratch = Decoded()
        events = parse_frame(raw, scratch)
        if events is None:
            self.rejects.update(scratch.rejects)
            return 0
        if feed != "options":
            scratch.min_ts_ms, scratch.top_ts_ms = self.window.bounds(recv_ms)
            for event in events:
                decode_event(event, scratch, options=False)
            self.rejects.update(scratch.rejects)
            self._spots += scratch.spots
            return max((tick.ts_ms for tick in scratch.spots), default=0)
        return self.add_events(events, recv_ms=recv_ms)

    def add_events(self, events: list[Any], *, recv_ms: int) -> int:
        """Add parsed option events received at ``recv_ms`` (JSON objects in Massive's shape, or the typed fast
        path's structs: fixed bounds checked; a trade's notional and the time window checked here); returns the
        latest event time, ms."""
        contracts = self.universe.contracts
        records = self.sequence.records
        token = self._token
        touched = self._touched
        rejects = self.rejects
        lo, hi = self.window.bounds(recv_ms)
        self._scratch.min_ts_ms, self._scratch.top_ts_ms = lo, hi
        conflated = dropped = restarts = 0
        max_ts = 0
        for event in events:
            cls = type(event)
            if cls is _Q:  # the typed fast path: msgspec checked every fixed bound
                kind, sym, a, b, c, d, ts, q = "Q", event.sym, event.bp, event.ap, event.bs, event.as_, event.t, event.q
                plain = lo <= ts <= hi
                if not plain:  # decode_event counts the reject
                    event = {"ev": "Q", "sym": sym, "bp": a, "ap": b, "bs": c, "as": d, "t": ts, "q": q}
            elif cls is _T:
                kind, sym, a, b, ts, q = "T", event.sym, event.p, event.s, event.t, event.q
                plain = a * b <= MAX_NOTIONAL and lo <= ts <= hi
                if not plain:  # decode_event counts the reject
                    event = {"ev": "T", "sym": sym, "p": a, "s": b, "t": ts, "q": q}
            else:
                # A parsed JSON object: the plain case decided inline; anything else is decided (and counted) by
                # decode_event.
                try:
                    kind, sym, ts, q = event["ev"], event["sym"], event["t"], event["q"]
                    if kind == "Q":
                        a, b, c, d = event["bp"], event["ap"], event["bs"], event["as"]
                        plain = (
                            type(a) is float and type(b) is float and type(c) is int and type(d) is int
                            and 0.0 <= a <= MAX_PRICE and 0.0 <= b <= MAX_PRICE and 0 <= c <= MAX_SIZE
                            and 0 <= d <= MAX_SIZE
                        )  # fmt: skip
                    else:
                        a, b = event["p"], event["s"]
                        plain = (
                            kind == "T" and type(a) is float and type(b) is int and 0.0 < a <= MAX_PRICE
                            and 0 < b <= MAX_SIZE and a * b <= MAX_NOTIONAL
                        )  # fmt: skip
                    plain = (
                        plain and type(ts) is int and type(q) is int and lo <= ts <= hi and 0 <= q <= MAX_SEQUENCE
                        and type(sym) is str and sym
                    )  # fmt: skip
                except (KeyError, TypeError):
                    plain = False
            if not plain:
                decoded = self._decode_slow(event)
                if decoded is None:
                    dropped += 1
                    continue
                if type(decoded) is Trade:
                    kind, sym, a, b, ts, q = "T", *decoded
                else:
                    kind, sym, a, b, c, d, ts, q = "Q", *decoded
            if ts > max_ts:
                max_ts = ts
            rec = records.get(sym)
            if rec is None or rec[_CHECKED] is not contracts:
                if sym not in contracts:
                    rejects[_unknown_reason(sym)] += 1
                    continue
                if rec is None:
                    rec = records[sym] = _new_record(sym, contracts)
                else:
                    rec[_CHECKED] = contracts
            if kind == "Q":
                if q <= rec[_QUOTE_Q]:
                    if ts < rec[_QUOTE_TS] + SEQUENCE_RESTART_GAP_MS:
                        rejects["out_of_sequence"] += 1
                        continue
                    restarts += 1
                rec[_QUOTE_Q] = q
                if ts > rec[_QUOTE_TS]:
                    rec[_QUOTE_TS] = ts
                if rec[_BATCH] is token:
                    if rec[_PENDING] is not None:
                        conflated += 1
                    rec[_PENDING] = (QUOTE, a, b, c, d, ts, q)
                else:
                    rec[_BATCH], rec[_FLAT], rec[_PENDING], rec[_LAST_QUOTE] = token, [], (QUOTE, a, b, c, d, ts, q), -1
                    touched.append(rec)
            else:
                if q <= rec[_TRADE_Q]:
                    if ts < rec[_TRADE_TS] + SEQUENCE_RESTART_GAP_MS:
                        rejects["out_of_sequence"] += 1
                        continue
                    restarts += 1
                rec[_TRADE_Q] = q
                if ts > rec[_TRADE_TS]:
                    rec[_TRADE_TS] = ts
                if rec[_BATCH] is token:
                    flat = rec[_FLAT]
                    if rec[_PENDING] is not None:
                        rec[_LAST_QUOTE] = len(flat)
                        flat += rec[_PENDING]
                        rec[_PENDING] = None
                    rec[_LAST_TRADE] = len(flat)
                    flat += (TRADE, a, b, ts, q)
                else:
                    rec[_BATCH], rec[_FLAT], rec[_PENDING] = token, [TRADE, a, b, ts, q], None
                    rec[_LAST_TRADE], rec[_LAST_QUOTE] = 0, -1
                    touched.append(rec)
        self.events_in += len(events) - dropped
        self.quotes_conflated += conflated
        self.sequence_restarts += restarts
        return max_ts

    def _decode_slow(self, event: Any) -> Quote | Trade | None:
        scratch = self._scratch
        decode_event(event, scratch, options=True)
        if scratch.rejects:
            self.rejects.update(scratch.rejects)
            scratch.rejects.clear()
        scratch.statuses.clear()
        return scratch.quotes_and_trades.pop() if scratch.quotes_and_trades else None

    def add_spots(self, ticks: Iterable[SpotTick]) -> None:
        """Add spot ticks decoded elsewhere."""
        self._spots += ticks

    def build(self) -> Batch:
        """The batch of everything added so far (the builder is spent afterwards)."""
        contracts = self.universe.contracts
        calls: dict[tuple[str, str], EpochCall] = {}
        last: tuple[str, tuple[str, ...]] | None = None
        last_calls: list[EpochCall] = []
        for rec in self._touched:
            # The values the script stores (the last quote and the last trade) travel as text (the docstring).
            flat, quote = rec[_FLAT], rec[_PENDING]
            if flat:
                t = rec[_LAST_TRADE]
                flat[t + 1], flat[t + 3], flat[t + 4] = repr(flat[t + 1]), str(flat[t + 3]), str(flat[t + 4])
                t = rec[_LAST_QUOTE]
                if quote is None and t >= 0:
                    _, bid, ask, bid_size, ask_size, ts, q = flat[t : t + 7]
                    flat[t + 1 : t + 7] = repr(bid), repr(ask), str(bid_size), str(ask_size), str(ts), str(q)
            rec[_BATCH] = rec[_FLAT] = rec[_PENDING] = None
            underlying, cid, epochs = contracts[rec[_SYM]]
            if last is None or epochs is not last[1] or underlying != last[0]:  # mostly the same as before
                last, last_calls = (underlying, epochs), []
                for epoch in epochs:
                    call = calls.get((underlying, epoch))
                    if call is None:
                        call = calls[(underlying, epoch)] = EpochCall(underlying, epoch)
                    last_calls.append(call)
            if quote is not None:
                _, bid, ask, bid_size, ask_size, ts, q = quote
                text = (repr(bid), repr(ask), str(bid_size), str(ask_size), str(ts), str(q))
                if not flat:  # the contract's only event: the script's section of plain arguments
                    for call in last_calls:
                        call.quoted.append(cid)
                        call.quotes += text
                    continue
                flat += (QUOTE, *text)  # after a trade
            for call in last_calls:
                call.cids.append(cid)
                call.events.append(flat)
        self._touched = []
        self.sequence.trim()

        latest: dict[str, SpotTick] = {}
        for tick in self._spots:
            underlying = self.universe.spot_symbols.get(tick.sym)
            if underlying is None:
                self.rejects["unknown_spot_symbol"] += 1
            elif underlying not in latest or tick.ts_ms >= latest[underlying].ts_ms:
                latest[underlying] = tick
        return Batch(list(calls.values()), latest, self.rejects, self.events_in, self.quotes_conflated,
                     self.sequence_restarts)  # fmt: skip


def build_batch(
    events: Iterable[Quote | Trade],
    spots: Iterable[SpotTick],
    universe: Universe,
    sequence: SequenceFilter,
    *,
    recv_ms: int,
    window: EventWindow = DEFAULT_WINDOW,
) -> Batch:
    """Resolve, filter and conflate decoded ``events`` received at ``recv_ms``; returns one :class:`EpochCall`
    per epoch touched."""
    builder = BatchBuilder(universe, sequence, window)
    raw: list[dict[str, Any]] = []
    for event in events:
        if type(event) is Trade:
            raw.append({"ev": "T", "sym": event.sym, "p": event.price, "s": event.size, "t": event.ts_ms,
                        "q": event.q})  # fmt: skip
        else:
            raw.append({"ev": "Q", "sym": event.sym, "bp": event.bid, "ap": event.ask, "bs": event.bid_size,
                        "as": event.ask_size, "t": event.ts_ms, "q": event.q})  # fmt: skip
    builder.add_events(raw, recv_ms=recv_ms)
    builder.add_spots(spots)
    return builder.build()


def _unknown_reason(sym: str) -> str:
    try:
        parse_ticker(sym)
    except InvalidTicker:
        return "bad_symbol"
    return "unknown_contract"
