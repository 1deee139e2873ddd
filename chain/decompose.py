"""Decompose a chain snapshot once into the heatmap and GEX projections — pure, no Redis.

Each result row is validated; a row that cannot be trusted (unparseable ticker, details that disagree with
the ticker, a contract type that is neither call nor put, a bad strike, multiplier or open interest, a
duplicate) is rejected and counted by reason, never guessed at. Every other number is held to the bounds
below: a value present but outside them is treated as missing and counted per field in ``implausible``
(``implausible:<field>`` in ``massive:chain:errors:{U}``), the row kept. Absent values, ``null`` and values of
the wrong JSON type are simply missing (not counted); so is a 0 where 0 means "not available" (IV, last
trade price, timestamps). Timestamps are checked only when the snapshot's clock (``now_ms``) is given.

| field | accepted | otherwise (reject reason / implausible field) |
|---|---|---|
| strike (ticker = details.strike_price) | (0, 1e6] points | row rejected: bad_strike (unequal: inconsistent_details) |
| details.shares_per_contract | an integer in [1, 1,000] (absent: 100) | row rejected: bad_multiplier |
| open_interest | an integer in [0, 10^7] (absent, no number: 0) | row rejected: bad_open_interest (< 0: 0, counted) |
| details.contract_type | call, put | Massive's ``other``: unsupported_contract_type; else bad_contract_type |
| implied_volatility | (0, 10] (1,000 %) | missing: iv |
| greeks delta / gamma / vega / theta | abs ≤ 1.05 / 1e5 / 1e5 / 1e6 (per share) | missing: delta, gamma, vega, theta |
| last_quote bid / ask | [0, 1e6] $ | missing: bid, ask |
| last_quote bid_size / ask_size | [0, 10^7] | missing: bid_size, ask_size |
| last_quote.last_updated (ns) | [now − 30 days, now + 60 s] | the whole quote missing: quote_ts |
| last_trade.price | (0, 1e6] $ | missing: last_price |
| last_trade.sip_timestamp (ns) | [now − 4 years, now + 60 s] | the last trade missing: trade_ts |
| day.volume | [0, 10^9] | 0: day_volume |
| underlying price / value | (0, 1e6] $, in [min strike / 10, max strike × 10] | no spot from it: spot |
| underlying last_updated (ns) | [now − 30 days, now + 60 s] | no spot from it: spot_ts |

Why these numbers: prices, sizes and the multiplier match what ingest accepts (``ingest/decode.py``: price
≤ 1e6, size ≤ 10^7, and premiums in integer micro-dollars stay exact below 2^53 only up to a multiplier of
1,000); the greek bounds are far beyond any Black-Scholes value for a spot ≤ 1e6 (gamma φ(d1)/(Sσ√T) stays
below 1e4 for S ≥ $1, σ ≥ 5 %, T ≥ 1 minute); an IV of a few hundred percent is real for far out-of-the-money
0DTE contracts quoted at the minimum tick, 1,000 % is not; a last trade may be as old as the contract (LEAPS
list about three years out), a quote or a spot a month old is no quote or spot. With every input inside
them no product the models form can overflow a float64 (Γ·OI·M·S²·0.01 ≤ 1e5·1e7·1e3·1e12·0.01 = 1e25).
The spot counters count snapshots (the underlying repeats on every row); the other ``implausible:`` counters
count rows. ``expired`` and ``unsupported_contract_type`` rows are dropped by policy, not for distrust:
:data:`NEUTRAL_REJECTS` (the snapshot judge does not hold them against a snapshot).
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
MS_PER_DAY = 86_400_000

# The bounds of the module docstring's table (units in the names).
MAX_STRIKE = 1_000_000.0
MAX_MULTIPLIER = 1_000
DEFAULT_MULTIPLIER = 100
MAX_OPEN_INTEREST = 10_000_000
MAX_IV = 10.0
MAX_ABS_DELTA = 1.05
MAX_ABS_GAMMA = 1e5
MAX_ABS_VEGA = 1e5
MAX_ABS_THETA = 1e6
MAX_PRICE = 1_000_000.0
MAX_SIZE = 10_000_000
MAX_DAY_VOLUME = 1_000_000_000
MAX_QUOTE_AGE_MS = 30 * MS_PER_DAY
MAX_TRADE_AGE_MS = 4 * 365 * MS_PER_DAY
MAX_SPOT_AGE_MS = 30 * MS_PER_DAY
MAX_FUTURE_MS = 60_000
#: A spot further than this factor from the chain's own strikes (below the lowest / above the highest) is absurd.
SPOT_STRIKE_FACTOR = 10.0
#: Reject reasons that are policy, not distrust of the snapshot: an expiry that settled, Massive's ``other``.
NEUTRAL_REJECTS = frozenset({"expired", "unsupported_contract_type"})
#: Integers beyond this are never a plausible value of any field (and float() of them may overflow).
_BIG_INT = 2**63


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
    """A snapshot decomposed: the contracts, the topology they declare and its epoch id.

    ``rejected`` counts the rows dropped, by reason; ``implausible`` the values treated as missing, by field.
    """

    underlying: str
    rows: tuple[ContractRow, ...]
    bucket_width: float
    expiries: tuple[str, ...]
    buckets: tuple[int, ...]
    epoch_id: str
    spot: Spot | None
    rejected: Counter[str] = field(default_factory=Counter)
    implausible: Counter[str] = field(default_factory=Counter)

    @property
    def contract_ids(self) -> list[str]:
        """Every contract id, sorted."""
        return [row.cid for row in self.rows]

    @property
    def untrusted_rows(self) -> int:
        """Rows rejected for not being trustworthy (every reject reason but :data:`NEUTRAL_REJECTS`)."""
        return sum(n for reason, n in self.rejected.items() if reason not in NEUTRAL_REJECTS)

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


def _number(value: Any) -> float | None:
    """A JSON number as a float (NaN and ±inf included), or None when ``value`` is not a number at all."""
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value) if -_BIG_INT < value < _BIG_INT else math.inf
    return None


def _bounded(value: Any, low: float, high: float, name: str, implausible: Counter[str]) -> float | None:
    """``value`` when it is a number in [low, high]; a number outside (NaN, ±inf included) is counted as
    implausible under ``name``; either way, or when it is no number, None (missing)."""
    f = _number(value)
    if f is None:
        return None
    if low <= f <= high:
        return f
    implausible[name] += 1
    return None


def _bounded_int(value: Any, high: int, name: str, implausible: Counter[str]) -> int | None:
    """:func:`_bounded` in [0, high], as an int (a fractional count is truncated, as before)."""
    f = _bounded(value, 0.0, high, name, implausible)
    return None if f is None else int(f)


def _ts_ms(value: Any, low_ms: int | None, high_ms: int | None, name: str, implausible: Counter[str]) -> int | None:
    """A nanosecond timestamp as ms; 0, absent or no number → None; negative, non-finite or outside
    [low_ms, high_ms] (when given) → counted under ``name``, None."""
    kind = type(value)
    if kind is not int and kind is not float:
        return None
    if not value or value != value:  # 0 or NaN: no time given
        return None
    outside = low_ms is not None and not low_ms * NS_PER_MS <= value <= high_ms * NS_PER_MS  # type: ignore[operator]
    if outside or not 0 < value < _BIG_INT:
        implausible[name] += 1
        return None
    return int(value) // NS_PER_MS


@lru_cache(maxsize=131_072)
def _identify(ticker: str) -> tuple[ContractSpec, str]:
    """The spec and contract id of a ticker (cached: a chain repeats its tickers every snapshot)."""
    spec = parse_ticker(ticker)
    return spec, format_contract_id(spec)


@lru_cache(maxsize=4096)
def _settlement_ms(root: str, expiry: date, am_settled_roots: tuple[str, ...]) -> int:
    return settlement_ms(root, expiry, am_settled_roots)


def _multiplier(value: Any) -> int | None:
    """``shares_per_contract`` as an int in [1, MAX_MULTIPLIER], or None (rejected)."""
    f = _number(value)
    if f is None or not 1 <= f <= MAX_MULTIPLIER or not f.is_integer():
        return None
    return int(f)


def _open_interest(value: Any, implausible: Counter[str]) -> int | None:
    """Open interest: absent or no number → 0; negative → 0 (counted); an integer up to MAX_OPEN_INTEREST;
    anything else (fractional, beyond the bound, NaN, ±inf) → None: the row is rejected."""
    f = _number(value)
    if f is None:
        return 0
    if f < 0:
        implausible["open_interest"] += 1
        return 0
    if f <= MAX_OPEN_INTEREST and f.is_integer():
        return int(f)
    return None


def parse_row(
    row: Any, am_settled_roots: tuple[str, ...], *, now_ms: int | None = None, implausible: Counter[str] | None = None
) -> ContractRow | str:
    """A validated :class:`ContractRow`, or the reason the row is rejected.

    Values outside the module's bounds become missing and are counted in ``implausible`` (by field);
    timestamps are checked against ``now_ms`` (the snapshot's clock, Unix ms) when it is given.
    """
    if implausible is None:
        implausible = Counter()
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
        return "unsupported_contract_type" if ctype == "other" else "bad_contract_type"
    if (ctype == "call") != (spec.cp == "C"):
        return "inconsistent_details"
    if not 0 < spec.strike_milli <= MAX_STRIKE * 1000:
        return "bad_strike"
    strike = _number(details.get("strike_price"))
    if strike is None or not 0 < strike <= MAX_STRIKE or round(strike * 1000) != spec.strike_milli:
        return "inconsistent_details"
    if details.get("expiration_date") != spec.expiry.isoformat():
        return "inconsistent_details"
    multiplier = _multiplier(details.get("shares_per_contract", DEFAULT_MULTIPLIER))
    if multiplier is None:
        return "bad_multiplier"
    open_interest = _open_interest(row.get("open_interest"), implausible)
    if open_interest is None:
        return "bad_open_interest"
    greeks = row.get("greeks")
    greeks = greeks if type(greeks) is dict else {}
    quote = row.get("last_quote")
    quote = quote if type(quote) is dict else {}
    trade = row.get("last_trade")
    trade = trade if type(trade) is dict else {}
    day = row.get("day")
    day = day if type(day) is dict else {}
    if now_ms is None:
        quote_low = quote_high = trade_low = trade_high = None
    else:
        quote_low, quote_high = now_ms - MAX_QUOTE_AGE_MS, now_ms + MAX_FUTURE_MS
        trade_low, trade_high = now_ms - MAX_TRADE_AGE_MS, now_ms + MAX_FUTURE_MS
    bid = ask = bid_size = ask_size = quote_ts_ms = None
    if quote:
        quote_ts_ms = _ts_ms(quote.get("last_updated"), quote_low, quote_high, "quote_ts", implausible)
        if quote_ts_ms is not None or not quote.get("last_updated"):  # a quote of an absurd time is no quote
            bid = _bounded(quote.get("bid"), 0.0, MAX_PRICE, "bid", implausible)
            ask = _bounded(quote.get("ask"), 0.0, MAX_PRICE, "ask", implausible)
            bid_size = _bounded_int(quote.get("bid_size"), MAX_SIZE, "bid_size", implausible)
            ask_size = _bounded_int(quote.get("ask_size"), MAX_SIZE, "ask_size", implausible)
    last_price = last_trade_ts_ms = None
    if trade:
        last_trade_ts_ms = _ts_ms(trade.get("sip_timestamp"), trade_low, trade_high, "trade_ts", implausible)
        if last_trade_ts_ms is not None or not trade.get("sip_timestamp"):
            last_price = _bounded(trade.get("price"), 0.0, MAX_PRICE, "last_price", implausible) or None
    iv = _bounded(row.get("implied_volatility"), 0.0, MAX_IV, "iv", implausible) or None
    return ContractRow(
        cid=cid,
        ticker=ticker,
        spec=spec,
        multiplier=multiplier,
        settle_ms=_settlement_ms(spec.root, spec.expiry, am_settled_roots),
        open_interest=open_interest,
        iv=iv,
        gamma=_bounded(greeks.get("gamma"), -MAX_ABS_GAMMA, MAX_ABS_GAMMA, "gamma", implausible),
        delta=_bounded(greeks.get("delta"), -MAX_ABS_DELTA, MAX_ABS_DELTA, "delta", implausible),
        vega=_bounded(greeks.get("vega"), -MAX_ABS_VEGA, MAX_ABS_VEGA, "vega", implausible),
        theta=_bounded(greeks.get("theta"), -MAX_ABS_THETA, MAX_ABS_THETA, "theta", implausible),
        bid=bid,
        ask=ask,
        bid_size=bid_size,
        ask_size=ask_size,
        quote_ts_ms=quote_ts_ms,
        last_price=last_price,
        last_trade_ts_ms=last_trade_ts_ms,
        day_volume=_bounded_int(day.get("volume"), MAX_DAY_VOLUME, "day_volume", implausible) or 0,
    )


def _spot(rows: list[Any], now_ms: int | None, implausible: Counter[str]) -> Spot | None:
    """The freshest plausible underlying price among the rows (``price`` for stocks, ``value`` for indices).

    A price outside (0, MAX_PRICE] or a time outside the window around ``now_ms`` is not taken; each kind is
    counted once per snapshot (``spot``, ``spot_ts``).
    """
    best: Spot | None = None
    best_ns = -1
    low_ns = high_ns = None
    if now_ms is not None:
        low_ns, high_ns = (now_ms - MAX_SPOT_AGE_MS) * NS_PER_MS, (now_ms + MAX_FUTURE_MS) * NS_PER_MS
    bad_price = bad_time = False
    for row in rows:
        asset = row.get("underlying_asset") if type(row) is dict else None
        if type(asset) is not dict:
            continue
        ns = asset.get("last_updated")
        ns = ns if type(ns) is int and ns > 0 else 0
        if ns and low_ns is not None and not low_ns <= ns <= high_ns:  # type: ignore[operator]
            bad_time = True
            continue
        if ns <= best_ns and best is not None:
            continue
        price = _number(asset.get("price", asset.get("value")))
        if price is None:
            continue
        if not 0 < price <= MAX_PRICE:  # NaN fails too
            bad_price = True
            continue
        best, best_ns = Spot(price, ns // NS_PER_MS), ns
    implausible["spot"] += bad_price
    implausible["spot_ts"] += bad_time
    return best


def _spot_fits_strikes(spot: Spot, rows: tuple[ContractRow, ...]) -> bool:
    """True when ``spot`` lies within [lowest strike / factor, highest strike × factor] (or there are no rows)."""
    if not rows:
        return True
    low = min(row.spec.strike_milli for row in rows) / 1000 / SPOT_STRIKE_FACTOR
    high = max(row.spec.strike_milli for row in rows) / 1000 * SPOT_STRIKE_FACTOR
    return low <= spot.price <= high


def decompose(
    underlying: str,
    results: list[Any],
    *,
    bucket_width: float,
    am_settled_roots: tuple[str, ...],
    now_ms: int | None = None,
) -> Decomposition:
    """Validate and decompose the raw snapshot rows of ``underlying`` into a :class:`Decomposition`.

    ``now_ms`` is the snapshot's clock (Unix ms): contracts already past their settlement instant are dropped
    (reason ``expired``) and every timestamp is held to its window around it. Without it neither is checked.
    """
    rejected: Counter[str] = Counter()
    implausible: Counter[str] = Counter()
    by_cid: dict[str, ContractRow] = {}
    for raw in results:
        parsed = parse_row(raw, am_settled_roots, now_ms=now_ms, implausible=implausible)
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
    spot = _spot(results, now_ms, implausible)
    if spot is not None and not _spot_fits_strikes(spot, rows):
        implausible["spot"] += 1
        spot = None
    return Decomposition(
        underlying=underlying.upper(),
        rows=rows,
        bucket_width=bucket_width,
        expiries=expiries,
        buckets=bucket_axis,
        epoch_id=compute_epoch_id(underlying, by_cid.keys(), bucket_width),
        spot=spot,
        rejected=rejected,
        implausible=+implausible,
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
