"""Underlying presets: spot level, volatility, option roots, strike grid and tick sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPTION_EXCHANGES = (300, 301, 302, 303, 304, 307, 308, 309, 312, 313, 315, 316, 319, 320, 322, 323, 325)


@dataclass(frozen=True)
class Band:
    """Strikes at ``increment`` within ``max(min_pct, n_sigma * vol * sqrt(T))`` of spot."""

    min_pct: float
    n_sigma: float
    increment: float


@dataclass(frozen=True)
class Product:
    """An optionable underlying and the shape of its chain."""

    name: str
    is_index: bool
    spot0: float
    base_vol: float
    short_root: str
    monthly_root: str | None
    bands: tuple[Band, ...]
    tick_small: float
    tick_large: float
    exchanges: tuple[int, ...] = OPTION_EXCHANGES
    round_strike: float = 10.0

    @property
    def underlying(self) -> str:
        """The Massive symbol of the underlying (``I:SPX`` or ``SPY``)."""
        return f"I:{self.name}" if self.is_index else self.name

    @property
    def exercise_style(self) -> str:
        """``european`` for cash-settled indices, ``american`` otherwise."""
        return "european" if self.is_index else "american"

    def strikes(self, spot: float, vol: float, t_years: float) -> np.ndarray:
        """The strike grid of one expiry for a given spot, as a sorted float array."""
        out: set[float] = set()
        sd = vol * np.sqrt(max(t_years, 1.0 / 365.0))
        for band in self.bands:
            half = max(band.min_pct, band.n_sigma * sd) * spot
            lo = np.ceil(max(spot - half, band.increment) / band.increment)
            hi = np.floor((spot + half) / band.increment)
            out.update((np.arange(lo, hi + 1) * band.increment).round(3).tolist())
        return np.array(sorted(out), dtype=np.float64)

    def ticks(self, px: np.ndarray) -> np.ndarray:
        """Minimum price increment for each price (penny under $3, nickel/dime above)."""
        return np.where(px < 3.0, self.tick_small, self.tick_large)


# fmt: off
PRESETS: dict[str, Product] = {
    "SPY": Product(
        "SPY", False, 655.0, 0.15, "SPY", None,
        (Band(0.03, 1.25, 1.0), Band(0.15, 3.0, 5.0)), 0.01, 0.01, round_strike=10.0,
    ),
    "QQQ": Product(
        "QQQ", False, 590.0, 0.19, "QQQ", None,
        (Band(0.03, 1.25, 1.0), Band(0.15, 3.0, 5.0)), 0.01, 0.01, round_strike=10.0,
    ),
    "SPX": Product(
        "SPX", True, 6560.0, 0.15, "SPXW", "SPX",
        (Band(0.015, 0.75, 5.0), Band(0.06, 2.0, 25.0), Band(0.3, 3.0, 100.0)), 0.05, 0.10, (302,), 100.0,
    ),
    "NDX": Product(
        "NDX", True, 24000.0, 0.19, "NDXP", "NDX",
        (Band(0.015, 0.75, 10.0), Band(0.06, 2.0, 50.0), Band(0.3, 3.0, 250.0)), 0.05, 0.10, (302,), 500.0,
    ),
}
# fmt: on


def product_for(name: str) -> Product:
    """The preset for ``name`` (``I:`` prefix allowed); unknown names get a generic $100 stock."""
    key = name.upper().removeprefix("I:")
    if key in PRESETS:
        return PRESETS[key]
    return Product(key, False, 100.0, 0.30, key, None, (Band(0.10, 2.0, 1.0), Band(0.5, 4.0, 5.0)), 0.01, 0.05)
