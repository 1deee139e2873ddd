"""Decompose a chain snapshot once into the heatmap and GEX projections — pure, no Redis.

Each result row is validated; a row that cannot be trusted (unparseable ticker, details that disagree with
the ticker, a contract type that is neither call nor put, a bad multiplier, a duplicate) is rejected and
counted by reason, never guessed at. Optional numbers (IV, greeks, quotes, last trade) that are missing,
NaN, infinite or negative are treated as missing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, NamedTuple

from fabric.contracts import ContractSpec, InvalidTicker, format_contract_id, format_strike, parse_ticker
from fabric.topology import bucket_of, compute_epoch_id, epoch_day, settlement_ms
from models.heatmap import counter_slots

NS_PER_MS = 1_000_000


class ContractRow(NamedTuple):
    """One validated contract of a snapshot, with its static and seed live fields."""

    cid: str
    ticker: str
    spec: ContractSpec
    multiplier: int
    settle_ms: int
    open_interest: int
    iv: float | None
    gamma: float | None
    delta: float | None
    vega: float | None
    theta: float | None
    bid: float | None
    ask: float | None
    bid_size: int | None
    ask_size: int | None
    quote_ts_ms: int | None
    last_price: float | None
    last_trade_ts_ms: int | None
    day_volume: int


@dataclass(frozen=True)
class Spot:
    """The underlying's price as the snapshot reported it."""

    price: float
    ts_ms: int


@dataclass(frozen=True)
class Decomposition:
    """A snapshot decomposed: the contracts, the topology they declare and its epoch id."""

    underlying: str
    rows: tuple[ContractRow, ...]
    bucket_width: float
    expiries: tuple[str, ...]
    buckets: tuple[int, ...]
    epoch_id: str
    spot: Spot | None
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def contract_ids(self) -> list[str]:
        """Every contract id, sorted."""
        return [row.cid for row in self.rows]

    def tiles(self) -> list[int]:
        """The heatmap tile index (plane score) of every row: expiry row × bucket column."""
        rows_of = {e: i for i, e in enumerate(self.expiries)}
        first, width = (self.buckets[0] if self.buckets else 0), len(self.buckets)
        return [
            rows_of[row.spec.expiry.isoformat()] * width + bucket_of(row.spec.strike_milli, self.bucket_width) - first
            for row in self.rows
        ]

    def slots(self) -> list[int]:
        """The counter-record slot of every row (:func:`models.heatmap.counter_slots`: a tile's contracts side
        by side, calls first)."""
        order = counter_slots(dict(zip(self.contract_ids, self.tiles(), strict=True)))
        slot_of = {cid: i for i, cid in enumerate(order)}
        return [slot_of[row.cid] for row in self.rows]


def _num(value: Any, *, positive: bool = False) -> float | None:
    """A finite, non-negative (or positive) float, or None (bools, strings, NaN, ±inf, negatives)."""
    kind = type(value)
    if kind is not float and kind is not int:
        return None
    f = float(value)
    if not math.isfinite(f) or f < 0 or (positive and f == 0):
        return None
    return f


def _int(value: Any) -> int | None:
    f = _num(value)
    return None if f is None else int(f)


def _greek(value: Any) -> float | None:
    """Greeks may be negative (theta, put delta): only finiteness is required."""
    kind = type(value)
    if kind is not float and kind is not int:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _ns_to_ms(value: Any) -> int | None:
    ns = _int(value)
    return ns // NS_PER_MS if ns else None


@lru_cache(maxsize=131_072)
def _identify(ticker: str) -> tuple[ContractSpec, str]:
    """The spec and contract id of a ticker (cached: a chain repeats its tickers every snapshot)."""
    spec = parse_ticker(ticker)
    return spec, format_contract_id(spec)


@lru_cache(maxsize=4096)
def _settlement_ms(root: str, expiry: date, am_settled_roots: tuple[str, ...]) -> int:
    return settlement_ms(root, expiry, am_settled_roots)


def parse_row(row: Any, am_settled_roots: tuple[str, ...]) -> ContractRow | str:
    """A validated :class:`ContractRow`, or the reason the row is rejected."""
    if not isinstance(row, dict):
        return "not_an_object"
    details = row.get("details")
    if not isinstance(details, dict):
        return "missing_details"
    ticker = details.get("ticker")
    try:
        spec, cid = _identify(ticker)
    except (InvalidTicker, TypeError):
        return "bad_ticker"
    ctype = details.get("contract_type")
    if ctype not in ("call", "put"):
        return "unsupported_contract_type"
    if (ctype == "call") != (spec.cp == "C"):
        return "inconsistent_details"
    strike = _num(details.get("strike_price"))
    if strike is None or round(strike * 1000) != spec.strike_milli:
        return "inconsistent_details"
    if details.get("expiration_date") != spec.expiry.isoformat():
        return "inconsistent_details"
    multiplier = details.get("shares_per_contract", 100)
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float) or not multiplier > 0:
        return "bad_multiplier"
    if isinstance(multiplier, float) and (not math.isfinite(multiplier) or not multiplier.is_integer()):
        return "bad_multiplier"
    greeks = row.get("greeks") if isinstance(row.get("greeks"), dict) else {}
    quote = row.get("last_quote") if isinstance(row.get("last_quote"), dict) else {}
    trade = row.get("last_trade") if isinstance(row.get("last_trade"), dict) else {}
    day = row.get("day") if isinstance(row.get("day"), dict) else {}
    bid, ask = _num(quote.get("bid")), _num(quote.get("ask"))
    return ContractRow(
        cid=cid,
        ticker=ticker,
        spec=spec,
        multiplier=int(multiplier),
        settle_ms=_settlement_ms(spec.root, spec.expiry, am_settled_roots),
        open_interest=_int(row.get("open_interest")) or 0,
        iv=_num(row.get("implied_volatility"), positive=True),
        gamma=_greek(greeks.get("gamma")),
        delta=_greek(greeks.get("delta")),
        vega=_greek(greeks.get("vega")),
        theta=_greek(greeks.get("theta")),
        bid=bid,
        ask=ask,
        bid_size=_int(quote.get("bid_size")),
        ask_size=_int(quote.get("ask_size")),
        quote_ts_ms=_ns_to_ms(quote.get("last_updated")),
        last_price=_num(trade.get("price"), positive=True),
        last_trade_ts_ms=_ns_to_ms(trade.get("sip_timestamp")),
        day_volume=_int(day.get("volume")) or 0,
    )


def _spot(rows: list[Any]) -> Spot | None:
    """The freshest underlying price among the rows (``price`` for stocks, ``value`` for indices)."""
    best: Spot | None = None
    best_ns = -1
    for row in rows:
        asset = row.get("underlying_asset") if type(row) is dict else None
        if type(asset) is not dict:
            continue
        ns = asset.get("last_updated")
        ns = ns if type(ns) is int and ns > 0 else 0
        if ns <= best_ns and best is not None:
            continue
        price = _num(asset.get("price", asset.get("value")), positive=True)
        if price is not None:
            best, best_ns = Spot(price, ns // NS_PER_MS), ns
    return best


def decompose(
    underlying: str,
    results: list[Any],
    *,
    bucket_width: float,
    am_settled_roots: tuple[str, ...],
    now_ms: int | None = None,
) -> Decomposition:
    """Validate and decompose the raw snapshot rows of ``underlying`` into a :class:`Decomposition`.

    Contracts already past their settlement instant at ``now_ms`` are dropped (reason ``expired``).
    """
    rejected: Counter[str] = Counter()
    by_cid: dict[str, ContractRow] = {}
    for raw in results:
        parsed = parse_row(raw, am_settled_roots)
        if isinstance(parsed, str):
            rejected[parsed] += 1
        elif now_ms is not None and parsed.settle_ms <= now_ms:
            rejected["expired"] += 1
        elif parsed.cid in by_cid:
            rejected["duplicate"] += 1
        else:
            by_cid[parsed.cid] = parsed
    rows = tuple(by_cid[cid] for cid in sorted(by_cid))
    expiries = tuple(sorted({row.spec.expiry.isoformat() for row in rows}))
    buckets = sorted({bucket_of(row.spec.strike_milli, bucket_width) for row in rows})
    bucket_axis = tuple(range(buckets[0], buckets[-1] + 1)) if buckets else ()
    return Decomposition(
        underlying=underlying.upper(),
        rows=rows,
        bucket_width=bucket_width,
        expiries=expiries,
        buckets=bucket_axis,
        epoch_id=compute_epoch_id(underlying, by_cid.keys(), bucket_width),
        spot=_spot(results),
        rejected=rejected,
    )


#: Field order of a new contract's heatmap hash. A small hash is a listpack that Redis searches from the front
#: for every field a command names, so the fields ingest reads and writes on every event come first: the
#: quote and its sequence number (a quote-only contract's whole work), then what a trade reads and writes —
#: the trade sequence, multiplier, slot, the live counters, the last trade — and the structure last. The
#: sequence numbers and the live counters (flow, buy and sell premium, volume, trades) start at "0", which
#: every reader takes as it took their absence: nothing seen, nothing counted (created here, they keep
#: their place at the front; written first by ingest, they would be appended behind the structure).
HEATMAP_FIELDS = (
    "quote_q",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "quote_ts_ms",
    "trade_q",
    "multiplier",
    "slot",
    "flow_micro",
    "buy_micro",
    "sell_micro",
    "volume",
    "trades",
    "last_price",
    "last_trade_ts_ms",
    "strike",
    "expiry",
    "cp",
    "tile",
)
#: Field order of a new contract's GEX hash (volume first: ingest adds to it on every trade).
GEX_FIELDS = (
    "volume",
    "strike",
    "expiry",
    "expiry_ts",
    "cp",
    "oi",
    "multiplier",
    "iv",
    "gamma",
    "delta",
    "vega",
    "theta",
)
#: Fields a same-topology snapshot refreshes in place (everything else is structure or live state).
GEX_STATIC_FIELDS = ("oi", "multiplier", "iv", "gamma", "delta", "vega", "theta")
HEATMAP_STATIC_FIELDS = ("multiplier",)


def number_text(value: float | int | None) -> str:
    """Exact text of a number (shortest round-trip repr for floats); None → "" (missing)."""
    if value is None:
        return ""
    return repr(value) if type(value) is float else str(value)


def heatmap_values(row: ContractRow, tile: int, slot: int) -> list[str]:
    """Values for :data:`HEATMAP_FIELDS`; "" means missing (not written)."""
    return [
        "0",
        number_text(row.bid),
        number_text(row.ask),
        number_text(row.bid_size),
        number_text(row.ask_size),
        number_text(row.quote_ts_ms),
        "0",
        str(row.multiplier),
        str(slot),
        "0",
        "0",
        "0",
        "0",
        "0",
        number_text(row.last_price),
        number_text(row.last_trade_ts_ms),
        format_strike(row.spec.strike_milli),
        row.spec.expiry.isoformat(),
        row.spec.cp,
        str(tile),
    ]


def gex_static_values(row: ContractRow) -> list[str]:
    """Values for :data:`GEX_STATIC_FIELDS`; a missing IV or greek is ""."""
    return [
        str(row.open_interest),
        str(row.multiplier),
        number_text(row.iv),
        number_text(row.gamma),
        number_text(row.delta),
        number_text(row.vega),
        number_text(row.theta),
    ]


def gex_values(row: ContractRow) -> list[str]:
    """Values for :data:`GEX_FIELDS`; "" means missing (not written)."""
    return [
        str(row.day_volume),
        format_strike(row.spec.strike_milli),
        row.spec.expiry.isoformat(),
        str(row.settle_ms),
        row.spec.cp,
        *gex_static_values(row),
    ]


def dte_score(row: ContractRow) -> int:
    """The ``by_dte`` ZSET score: the expiry as days since 1970-01-01."""
    return epoch_day(row.spec.expiry)
