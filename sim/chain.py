"""One underlying's listed contracts as numpy columns, with their quote, trade and day state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from sim import pricing, tickers
from sim.calendar import Expiry, ny_date, schedule
from sim.product import Product

TRADE_CONDITIONS = np.array([209, 209, 209, 209, 209, 219, 227, 232, 233], dtype=np.int64)

# name -> (dtype, fill value) of every per-contract column.
COLUMNS: dict[str, tuple[object, object]] = {
    "ticker": (object, ""),
    "root": (object, ""),
    "expiry": ("datetime64[D]", np.datetime64("NaT")),
    "settle_ns": (np.int64, 0),
    "am": (bool, False),
    "is_call": (bool, False),
    "strike": (np.float64, 0.0),
    "oi": (np.int64, 0),
    "bid": (np.float64, 0.0),
    "ask": (np.float64, 0.0),
    "bid_size": (np.int64, 0),
    "ask_size": (np.int64, 0),
    "bx": (np.int64, 0),
    "ax": (np.int64, 0),
    "quote_ns": (np.int64, 0),
    "last_price": (np.float64, np.nan),
    "last_size": (np.int64, 0),
    "last_exch": (np.int64, 0),
    "last_cond": (np.int64, 0),
    "last_ns": (np.int64, 0),
    "open": (np.float64, np.nan),
    "high": (np.float64, np.nan),
    "low": (np.float64, np.nan),
    "volume": (np.int64, 0),
    "notional": (np.float64, 0.0),
    "prev_close": (np.float64, np.nan),
}


@dataclass
class EventBatch:
    """Option events of one underlying for one step, as aligned arrays sorted by time.

    ``kind`` is 0 for a trade (T) and 1 for a quote (Q); ``idx`` indexes ``tickers``.
    """

    underlying: str
    version: int
    tickers: np.ndarray
    kind: np.ndarray
    idx: np.ndarray
    t_ms: np.ndarray
    q: np.ndarray
    price: np.ndarray
    size: np.ndarray
    exch: np.ndarray
    cond: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    bx: np.ndarray
    ax: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)


class Chain:
    """State of one underlying: spot and all listed contracts (kept sorted by ticker)."""

    def __init__(self, product: Product, rng: np.random.Generator, now_ns: int) -> None:
        self.product = product
        self.rng = rng
        self.spot = float(product.spot0 * np.exp(rng.normal(0.0, 0.01)))
        self.prev_close_spot = float(self.spot * np.exp(rng.normal(0.0, 0.008)))
        self.spot_ns = now_ns
        self.version = 0
        self.seq = int(rng.integers(10_000_000, 50_000_000))
        self.removed: set[Expiry] = set()
        self.cols: dict[str, np.ndarray] = {k: np.empty(0, dtype=d) for k, (d, _) in COLUMNS.items()}
        self._listed_day: date | None = None
        self.roll(now_ns)

    # ----- topology -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cols["ticker"])

    @property
    def tickers(self) -> np.ndarray:
        """Object array of contract tickers, sorted ascending."""
        return self.cols["ticker"]

    def expiries(self) -> list[Expiry]:
        """The distinct listed expiries."""
        seen = {
            (r, d, a)
            for r, d, a in zip(self.cols["root"], self.cols["expiry"].tolist(), self.cols["am"].tolist(), strict=True)
        }
        return sorted(Expiry(d, r, a) for r, d, a in seen)

    def vol_level(self) -> float:
        """Base volatility, rising when spot falls (spot-vol correlation)."""
        return float(np.clip(self.product.base_vol * (self.spot / self.product.spot0) ** -3.0, 0.06, 0.9))

    def roll(self, now_ns: int) -> bool:
        """Drop settled expiries and list the schedule's new ones; True if the topology changed."""
        changed = False
        settled = self.cols["settle_ns"] <= now_ns
        if settled.any():
            self._keep(~settled)
            changed = True
        today = ny_date(now_ns)
        if today != self._listed_day:
            self._listed_day = today
            listed = set(self.expiries())
            fresh = [
                e
                for e in schedule(today, self.product.short_root, self.product.monthly_root)
                if e not in listed and e not in self.removed and e.settle_ns > now_ns
            ]
            for expiry in fresh:
                self._add(expiry, self.product.strikes(self.spot, self.vol_level(), self._t(expiry, now_ns)), now_ns)
            changed = changed or bool(fresh)
        if changed:
            self._finish()
        return changed

    def list_expiry(self, now_ns: int) -> int:
        """List the next weekday expiry not yet listed on the short root; returns the contract count."""
        listed = {e.day for e in self.expiries() if e.root == self.product.short_root}
        day = ny_date(now_ns)
        while day in listed or day.weekday() >= 5 or Expiry(day, self.product.short_root).settle_ns <= now_ns:
            day += timedelta(1)
        expiry = Expiry(day, self.product.short_root, False)
        self.removed.discard(expiry)
        self._add(expiry, self.product.strikes(self.spot, self.vol_level(), self._t(expiry, now_ns)), now_ns)
        self._finish()
        return len(self)

    def add_strikes(self, now_ns: int) -> int:
        """Fill each expiry's grid around the current spot, or widen it by one step each side."""
        for expiry in self.expiries():
            mask = (self.cols["root"] == expiry.root) & (self.cols["expiry"] == np.datetime64(expiry.day))
            have = set(self.cols["strike"][mask].tolist())
            grid = self.product.strikes(self.spot, self.vol_level(), self._t(expiry, now_ns))
            new = [k for k in grid.tolist() if k not in have]
            if not new:
                step = self.product.bands[-1].increment
                lo, hi = min(have), max(have)
                new = [k for k in (lo - step, hi + step) if k > 0]
            self._add(expiry, np.array(new, dtype=np.float64), now_ns)
        self._finish()
        return len(self)

    def expire_earliest(self, now_ns: int) -> int:
        """Settle the earliest listed expiry now (the 0DTE on a trading day); returns the count."""
        expiries = self.expiries()
        if expiries:
            first = expiries[0].day
            gone = [e for e in expiries if e.day == first]
            self.removed.update(gone)
            self._keep(self.cols["expiry"] != np.datetime64(first))
            self._finish()
        return len(self)

    # ----- internals ------------------------------------------------------------------------
    @staticmethod
    def _t(expiry: Expiry, now_ns: int) -> float:
        return max(expiry.settle_ns - now_ns, 0) / pricing.YEAR_NS

    def _keep(self, mask: np.ndarray) -> None:
        self.cols = {k: v[mask] for k, v in self.cols.items()}

    def _finish(self) -> None:
        order = np.argsort(self.cols["ticker"], kind="stable")
        self.cols = {k: v[order] for k, v in self.cols.items()}
        self.version += 1

    def _add(self, expiry: Expiry, strikes: np.ndarray, now_ns: int) -> None:
        if len(strikes) == 0:
            return
        p, rng = self.product, self.rng
        n = 2 * len(strikes)
        strike = np.concatenate([strikes, strikes])
        is_call = np.repeat([True, False], len(strikes))
        new: dict[str, np.ndarray] = {k: np.full(n, fill, dtype=d) for k, (d, fill) in COLUMNS.items()}
        new["ticker"] = np.array(
            [
                tickers.encode(expiry.root, expiry.day, c, k)
                for c, k in zip(is_call.tolist(), strike.tolist(), strict=True)
            ],
            dtype=object,
        )
        new["root"][:] = expiry.root
        new["expiry"][:] = np.datetime64(expiry.day)
        new["settle_ns"][:] = expiry.settle_ns
        new["am"][:] = expiry.am_settled
        new["is_call"], new["strike"] = is_call, strike
        t = np.full(n, self._t(expiry, now_ns))
        iv = pricing.smile(self.spot, strike, t, self.vol_level())
        theo = pricing.price(self.spot, strike, t, iv, is_call)
        z = np.log(strike / self.spot) / (iv * np.sqrt(np.maximum(t, 1 / 365)))
        near = np.exp(-0.5 * z * z)
        roundness = 1.0 + 2.0 * (np.mod(strike, p.round_strike) == 0) + 1.0 * (np.mod(strike, p.round_strike / 2) == 0)
        horizon = 3.0 if expiry.am_settled or expiry.day.weekday() == 4 else 1.0
        oi = near * roundness * horizon * 4000.0 * rng.lognormal(0.0, 0.6, n) * (1.0 + 2.0 * np.sqrt(t))
        new["oi"] = np.floor(oi + 5 * rng.random(n) * (near > 0.01)).astype(np.int64)
        bid, ask = self._quote(theo, rng)
        new["bid"], new["ask"] = bid, ask
        new["bid_size"], new["ask_size"] = rng.integers(1, 400, n), rng.integers(1, 400, n)
        new["bx"], new["ax"] = rng.choice(p.exchanges, n), rng.choice(p.exchanges, n)
        new["quote_ns"] = now_ns - rng.integers(0, 5_000_000_000, n)
        traded = rng.random(n) < (0.15 + 0.85 * near)
        vol = np.where(traded, rng.poisson(near * roundness * 600.0 + 1.0), 0)
        mid = 0.5 * (bid + ask)
        new["prev_close"] = np.round(np.maximum(mid * np.exp(rng.normal(0, 0.1, n)), 0.01), 2)
        new["open"] = np.where(traded, np.round(np.maximum(mid * np.exp(rng.normal(0, 0.05, n)), 0.01), 2), np.nan)
        new["last_price"] = np.where(traded, np.round(np.maximum(mid, 0.01), 2), np.nan)
        new["high"] = np.fmax(new["open"], new["last_price"]) * np.where(traded, 1.02, np.nan)
        new["low"] = np.fmin(new["open"], new["last_price"]) * np.where(traded, 0.98, np.nan)
        new["high"], new["low"] = np.round(new["high"], 2), np.round(new["low"], 2)
        new["volume"] = vol
        new["notional"] = vol * np.nan_to_num(new["last_price"])
        new["last_size"] = np.where(traded, rng.integers(1, 20, n), 0)
        new["last_exch"] = rng.choice(p.exchanges, n)
        new["last_cond"] = rng.choice(TRADE_CONDITIONS, n)
        new["last_ns"] = np.where(traded, now_ns - rng.integers(1_000_000_000, 6 * 3600 * 1_000_000_000, n), 0)
        self.cols = {k: np.concatenate([self.cols[k], new[k]]) for k in COLUMNS}

    def _quote(self, theo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        tick = self.product.ticks(theo)
        theo = theo * (1.0 + 0.003 * rng.standard_normal(len(theo)))
        width = np.maximum(tick, np.minimum(0.03 * theo + tick, 40 * tick))
        bid = np.maximum(np.floor((theo - width / 2) / tick + 1e-9) * tick, 0.0)
        ask = np.maximum(np.ceil((theo + width / 2) / tick - 1e-9) * tick, bid + tick)
        return np.round(bid, 2), np.round(ask, 2)

    # ----- market activity ------------------------------------------------------------------
    def time_to_expiry(self, now_ns: int, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Years to settlement for the selected contracts."""
        return np.maximum(self.cols["settle_ns"][idx] - now_ns, 0) / pricing.YEAR_NS

    def ivs(self, now_ns: int, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Smile implied volatility of the selected contracts at the current spot."""
        return pricing.smile(self.spot, self.cols["strike"][idx], self.time_to_expiry(now_ns, idx), self.vol_level())

    def generate(self, t0_ns: int, t1_ns: int, n_quotes: int, n_trades: int) -> EventBatch:
        """Quote and trade events in ``(t0, t1]``, applied to the state and returned as a batch."""
        c, rng, n_all = self.cols, self.rng, len(self)
        if n_all == 0:
            n_quotes = n_trades = 0
        tau = self.time_to_expiry(t1_ns) if n_all else np.empty(0)
        if n_all:
            sd = self.vol_level() * np.sqrt(np.maximum(tau, 1.0 / (365 * 24)))
            z = np.log(c["strike"] / self.spot) / sd
            near = np.exp(-0.5 * z * z)
            w_q = near + 0.03
            w_t = near * (1.0 / np.sqrt(tau * 365.0 + 0.25)) + 0.001
        q_idx = self._sample(w_q, n_quotes) if n_quotes else np.empty(0, np.int64)
        t_idx = self._sample(w_t, n_trades) if n_trades else np.empty(0, np.int64)
        # quotes
        t_q = tau[q_idx]
        iv = pricing.smile(self.spot, c["strike"][q_idx], t_q, self.vol_level())
        bid, ask = self._quote(pricing.price(self.spot, c["strike"][q_idx], t_q, iv, c["is_call"][q_idx]), rng)
        bs, as_ = rng.integers(1, 500, n_quotes), rng.integers(1, 500, n_quotes)
        bx, ax = rng.choice(self.product.exchanges, n_quotes), rng.choice(self.product.exchanges, n_quotes)
        span = max(t1_ns - t0_ns, 1)
        tq_ns = t0_ns + np.sort(rng.integers(1, span + 1, n_quotes))
        c["bid"][q_idx], c["ask"][q_idx], c["bid_size"][q_idx], c["ask_size"][q_idx] = bid, ask, bs, as_
        c["bx"][q_idx], c["ax"][q_idx], c["quote_ns"][q_idx] = bx, ax, tq_ns
        # trades, against the (updated) book: at bid/ask, inside, or through the spread
        tb, ta = c["bid"][t_idx], c["ask"][t_idx]
        tick = self.product.ticks(ta)
        u = rng.random(n_trades)
        inside = tb + tick * np.floor(rng.random(n_trades) * np.maximum(np.round((ta - tb) / tick), 1.0))
        px = np.select([u < 0.35, u < 0.70, u < 0.92], [tb, ta, inside], np.where(u < 0.96, tb - tick, ta + tick))
        px = np.round(np.maximum(px, self.product.tick_small), 2)
        size = rng.geometric(0.35, n_trades) * np.where(rng.random(n_trades) < 0.02, rng.integers(10, 100, n_trades), 1)
        exch, cond = rng.choice(self.product.exchanges, n_trades), rng.choice(TRADE_CONDITIONS, n_trades)
        tt_ns = t0_ns + np.sort(rng.integers(1, span + 1, n_trades))
        c["last_price"][t_idx], c["last_size"][t_idx], c["last_exch"][t_idx] = px, size, exch
        c["last_cond"][t_idx], c["last_ns"][t_idx] = cond, tt_ns
        np.add.at(c["volume"], t_idx, size)
        np.add.at(c["notional"], t_idx, size * px)
        c["open"][t_idx] = np.where(np.isnan(c["open"][t_idx]), px, c["open"][t_idx])
        np.fmax.at(c["high"], t_idx, px)
        np.fmin.at(c["low"], t_idx, px)
        # merge by time, number with a per-underlying sequence (strictly increasing per symbol)
        kind = np.concatenate([np.zeros(n_trades, np.int8), np.ones(n_quotes, np.int8)])
        t_ns = np.concatenate([tt_ns, tq_ns])
        order = np.argsort(t_ns, kind="stable")
        n = n_trades + n_quotes
        q = self.seq + np.arange(1, n + 1, dtype=np.int64)
        self.seq += n + int(rng.integers(0, 3))
        zi, zf = np.zeros(n_quotes, np.int64), np.zeros(n_quotes)
        ti, tf = np.zeros(n_trades, np.int64), np.zeros(n_trades)

        def cat(trade_part: np.ndarray, quote_part: np.ndarray) -> np.ndarray:
            return np.concatenate([trade_part, quote_part])[order]

        return EventBatch(
            underlying=self.product.underlying,
            version=self.version,
            tickers=c["ticker"],
            kind=kind[order],
            idx=cat(t_idx, q_idx),
            t_ms=t_ns[order] // 1_000_000,
            q=q,
            price=cat(px, zf),
            size=cat(size, zi),
            exch=cat(exch, zi),
            cond=cat(cond, zi),
            bid=cat(tf, bid),
            ask=cat(tf, ask),
            bid_size=cat(ti, bs),
            ask_size=cat(ti, as_),
            bx=cat(ti, bx),
            ax=cat(ti, ax),
        )

    def _sample(self, weights: np.ndarray, n: int) -> np.ndarray:
        cum = np.cumsum(weights)
        return np.minimum(np.searchsorted(cum, self.rng.random(n) * cum[-1], side="right"), len(cum) - 1)
