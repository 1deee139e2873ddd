"""Turn decoded events into one Lua call per live epoch — pure, no I/O.

- **Resolution.** A ticker maps to its contract id and to every live epoch (active and warming) that holds
  it, through a :class:`Universe` built from Redis whenever the live epochs change. A ticker no live
  epoch holds is counted (``unknown_contract``) and dropped — ingest never creates a contract.
- **Sequence.** Per ticker and event type the sequence number ``q`` must increase; duplicates and
  out-of-order events are counted (``out_of_sequence``) and dropped. The Lua script checks again against
  what Redis holds, so a restart cannot re-apply an event either.
- **Conflation.** Consecutive quotes of one contract collapse to the last one; a quote is flushed just
  before the next trade of its contract, so every trade is still classified against the quote that was
  in force when it printed. The last spot per underlying wins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fabric import keys
from fabric.contracts import InvalidTicker, parse_ticker
from ingest.decode import Quote, SpotTick, Trade

QUOTE_TOKENS = 8
TRADE_TOKENS = 6


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
    """The arguments of one ``ingest_batch.lua`` call for one epoch of one underlying."""

    underlying: str
    epoch: str
    cids: list[str] = field(default_factory=list)
    slot: dict[str, int] = field(default_factory=dict)
    events: list[str | int | float] = field(default_factory=list)
    count: int = 0

    def index_of(self, cid: str) -> int:
        """The 1-based position of ``cid`` among this call's contracts (added on first use)."""
        i = self.slot.get(cid)
        if i is None:
            self.cids.append(cid)
            i = self.slot[cid] = len(self.cids)
        return i

    def keys(self) -> list[str]:
        """KEYS of the call: the dirty set, then heatmap and GEX hash of every contract."""
        u, e = self.underlying, self.epoch
        hm, gx = keys.contract_prefix(u, e, "heatmap"), keys.contract_prefix(u, e, "gex")
        out = [keys.dirty_contracts(u, e)]
        for cid in self.cids:
            out += (hm + cid, gx + cid)
        return out

    def args(self, max_quote_age_ms: int) -> list[str | int | float]:
        """ARGV of the call."""
        return [max_quote_age_ms, *self.cids, *self.events]


class SequenceFilter:
    """The last sequence number seen per ticker and event type (a cache: Redis stays the authority)."""

    def __init__(self, max_tickers: int = 500_000) -> None:
        self._quote: dict[str, int] = {}
        self._trade: dict[str, int] = {}
        self._max = max_tickers

    def accept(self, sym: str, q: int, *, trade: bool) -> bool:
        """True when ``q`` is newer than anything seen for ``sym``; remembers it."""
        seen = self._trade if trade else self._quote
        if q <= seen.get(sym, -1):
            return False
        if len(seen) >= self._max:
            seen.clear()
        seen[sym] = q
        return True


@dataclass
class Batch:
    """The result of :func:`build_batch`: the epoch calls, the latest spot per underlying and counters."""

    calls: list[EpochCall]
    spots: dict[str, SpotTick]
    rejects: Counter[str]
    events_in: int
    quotes_conflated: int


def build_batch(
    events: Iterable[Quote | Trade],
    spots: Iterable[SpotTick],
    universe: Universe,
    sequence: SequenceFilter,
) -> Batch:
    """Resolve, filter and conflate ``events``; returns one :class:`EpochCall` per epoch touched."""
    rejects: Counter[str] = Counter()
    calls: dict[tuple[str, str], EpochCall] = {}
    pending: dict[str, Quote] = {}
    conflated = 0
    n_in = 0
    contracts = universe.contracts

    def emit(event: Quote | Trade, found: tuple[str, str, tuple[str, ...]]) -> None:
        underlying, cid, epochs = found
        for epoch in epochs:
            call = calls.get((underlying, epoch))
            if call is None:
                call = calls[(underlying, epoch)] = EpochCall(underlying, epoch)
            i = call.index_of(cid)
            if type(event) is Trade:
                call.events += ("T", i, repr(event.price), event.size, event.ts_ms, event.q)
            else:
                call.events += ("Q", i, repr(event.bid), repr(event.ask), event.bid_size, event.ask_size,
                                event.ts_ms, event.q)  # fmt: skip
            call.count += 1

    for event in events:
        n_in += 1
        sym = event.sym
        found = contracts.get(sym)
        if found is None:
            rejects[_unknown_reason(sym)] += 1
            continue
        is_trade = type(event) is Trade
        if not sequence.accept(sym, event.q, trade=is_trade):
            rejects["out_of_sequence"] += 1
            continue
        if is_trade:
            quote = pending.pop(sym, None)
            if quote is not None:
                emit(quote, found)
            emit(event, found)
        else:
            if sym in pending:
                conflated += 1
            pending[sym] = event  # type: ignore[assignment]
    for sym, quote in pending.items():
        emit(quote, contracts[sym])

    latest: dict[str, SpotTick] = {}
    for tick in spots:
        underlying = universe.spot_symbols.get(tick.sym)
        if underlying is None:
            rejects["unknown_spot_symbol"] += 1
        elif underlying not in latest or tick.ts_ms >= latest[underlying].ts_ms:
            latest[underlying] = tick
    return Batch(list(calls.values()), latest, rejects, n_in, conflated)


def _unknown_reason(sym: str) -> str:
    try:
        parse_ticker(sym)
    except InvalidTicker:
        return "bad_symbol"
    return "unknown_contract"
