"""The simulated market: a clock, one :class:`~sim.chain.Chain` per underlying, and event steps.

Determinism: every random draw comes from numpy generators seeded with ``(seed, crc32(name))`` per
underlying plus one ``(seed, 0)`` market generator for the common spot shock, and time advances only
through :meth:`Market.step`. Two markets built with the same seed, underlyings and start instant, and
stepped with the same ``dt`` sequence and tick rate, hold identical state and emit identical events.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from sim.chain import Chain, EventBatch
from sim.product import product_for

TRADE_SHARE = 0.15
TRADING_YEAR_S = 252 * 6.5 * 3600
INDEX_VALUE_EVERY_NS = 250_000_000
TOPOLOGY_ACTIONS = ("add_strikes", "list_expiry", "expire_0dte")


@dataclass
class StepResult:
    """Everything one :meth:`Market.step` produced."""

    options: list[EventBatch] = field(default_factory=list)
    stock_trades: list[dict] = field(default_factory=list)
    index_values: list[dict] = field(default_factory=list)
    topology_changed: list[str] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        """Total number of events of all kinds."""
        return sum(len(b) for b in self.options) + len(self.stock_trades) + len(self.index_values)


def to_ns(start: datetime | int) -> int:
    """A Unix-nanosecond instant from an aware datetime (naive = UTC) or an int."""
    if isinstance(start, int):
        return start
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return int(start.timestamp() * 1_000_000) * 1000


class Market:
    """All simulated underlyings under one clock."""

    def __init__(
        self,
        seed: int,
        start: datetime | int,
        underlyings: Sequence[str] = ("SPY", "SPX"),
        tick_rate: float = 5000.0,
        topology_every_s: float | None = None,
    ) -> None:
        self.seed = seed
        self.now_ns = to_ns(start)
        self.tick_rate = float(tick_rate)
        self.topology_every_s = topology_every_s
        self.rng = np.random.default_rng([seed, 0])
        self.chains: dict[str, Chain] = {}
        for name in underlyings:
            product = product_for(name)
            rng = np.random.default_rng([seed, zlib.crc32(product.name.encode())])
            self.chains[product.name] = Chain(product, rng, self.now_ns)
        self._stock_seq = {n: 1_000_000 for n in self.chains}
        self._next_index_ns = self.now_ns
        self._next_topology_ns = self.now_ns + int((topology_every_s or 0) * 1e9)
        self._topology_turn = 0
        self.events_generated = 0

    # ----- lookup ---------------------------------------------------------------------------
    def chain(self, underlying_asset: str) -> Chain | None:
        """The chain for a Massive underlying symbol (``SPY``, ``I:SPX``), or None if unknown.

        Index chains are only found under their ``I:`` symbol, like on Massive.
        """
        for chain in self.chains.values():
            if chain.product.underlying == underlying_asset:
                return chain
        return None

    def snapshot_rows(self, underlying_asset: str, idx: np.ndarray | None = None) -> list[dict]:
        """Massive snapshot results for contracts ``idx`` (default: all, ticker order)."""
        from sim.snapshot import rows  # local import: snapshot depends on market types only

        chain = self.chain(underlying_asset)
        if chain is None:
            return []
        return rows(chain, self.now_ns, np.arange(len(chain)) if idx is None else idx)

    def contract_counts(self) -> dict[str, int]:
        """Listed contracts per underlying symbol."""
        return {c.product.underlying: len(c) for c in self.chains.values()}

    # ----- topology -------------------------------------------------------------------------
    def topology(self, underlying: str, action: str) -> int:
        """Apply ``list_expiry``, ``add_strikes`` or ``expire_0dte``; returns the new contract count."""
        chain = self.chains.get(underlying.upper().removeprefix("I:"))
        if chain is None:
            raise KeyError(underlying)
        if action == "list_expiry":
            return chain.list_expiry(self.now_ns)
        if action == "add_strikes":
            return chain.add_strikes(self.now_ns)
        if action == "expire_0dte":
            return chain.expire_earliest(self.now_ns)
        raise ValueError(f"unknown topology action {action!r}")

    # ----- time -----------------------------------------------------------------------------
    def step(self, dt_s: float) -> StepResult:
        """Advance the clock by ``dt_s`` seconds and return the events of that interval."""
        t0 = self.now_ns
        t1 = t0 + round(dt_s * 1e9)
        self.now_ns = t1
        out = StepResult()
        common = float(self.rng.standard_normal())
        n_total = int(self.rng.poisson(self.tick_rate * dt_s)) if self.tick_rate > 0 else 0
        sizes = np.array([max(len(c), 1) for c in self.chains.values()], dtype=np.float64)
        shares = self.rng.multinomial(n_total, sizes / sizes.sum()) if self.chains else []
        for chain, n in zip(self.chains.values(), shares, strict=True):
            self._walk(chain, dt_s, common, t1)
            if chain.roll(t1):
                out.topology_changed.append(chain.product.underlying)
            n_trades = int(self.rng.binomial(int(n), TRADE_SHARE))
            batch = chain.generate(t0, t1, int(n) - n_trades, n_trades)
            if len(batch):
                out.options.append(batch)
            self._spot_events(chain, t0, t1, out)
        if self.topology_every_s and t1 >= self._next_topology_ns:
            self._next_topology_ns = t1 + int(self.topology_every_s * 1e9)
            action = TOPOLOGY_ACTIONS[self._topology_turn % len(TOPOLOGY_ACTIONS)]
            self._topology_turn += 1
            for name, chain in self.chains.items():
                self.topology(name, action)
                out.topology_changed.append(chain.product.underlying)
        if t1 >= self._next_index_ns:
            self._next_index_ns = t1 + INDEX_VALUE_EVERY_NS
        self.events_generated += out.n_events
        return out

    def _walk(self, chain: Chain, dt_s: float, common: float, t1: int) -> None:
        z = 0.98 * common + 0.2 * float(chain.rng.standard_normal())
        sigma = chain.vol_level() * np.sqrt(dt_s / TRADING_YEAR_S)
        chain.spot = float(chain.spot * np.exp(sigma * z - 0.5 * sigma * sigma))
        chain.spot_ns = t1

    def _spot_events(self, chain: Chain, t0: int, t1: int, out: StepResult) -> None:
        p = chain.product
        if p.is_index:
            if t1 >= self._next_index_ns:
                out.index_values.append(
                    {"ev": "V", "val": round(chain.spot, 2), "T": p.underlying, "t": t1 // 1_000_000}
                )
            return
        n = int(chain.rng.poisson(40.0 * (t1 - t0) / 1e9))
        times = np.sort(chain.rng.integers(t0 + 1, t1 + 1, n)) // 1_000_000 if n else []
        for t in times:
            self._stock_seq[p.name] += 1
            seq = self._stock_seq[p.name]
            px = round(chain.spot + 0.01 * float(chain.rng.integers(-2, 3)), 2)
            out.stock_trades.append(
                {
                    "ev": "T",
                    "sym": p.name,
                    "i": str(seq * 7 + 3),
                    "x": int(chain.rng.choice((4, 10, 11, 12, 19, 21))),
                    "p": px,
                    "s": int(chain.rng.geometric(0.02)),
                    "c": [37] if chain.rng.random() < 0.5 else [],
                    "t": int(t),
                    "q": seq,
                    "z": 2 if p.name == "SPY" else 3,
                }
            )
