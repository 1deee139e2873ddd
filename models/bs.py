"""Vectorised Black-Scholes-Merton greeks (numpy arrays broadcast against each other).

Units: spot and strike in points, ``time_years`` in years (seconds / (365·86400)), ``vol`` annualised as a
decimal (0.20 = 20 %), ``rate`` and ``dividend_yield`` continuously compounded per year.

``norm_cdf`` is exact to double precision (``math.erfc`` applied element-wise): it is only ever used on
the live per-contract arrays (≤ ~20k elements). Gamma, and therefore the GEX profile grid, needs only
``norm_pdf``, which is a plain numpy expression.

Charm is the change of delta as calendar time passes (−∂Δ/∂T), per year; vanna is ∂Δ/∂σ per 1.00 of vol.
Both are checked against finite differences of :func:`delta` in the tests — published libraries have shipped
sign and √T bugs here.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)

FloatArray = NDArray[np.float64]


def norm_pdf(x: ArrayLike) -> FloatArray:
    """Standard normal density φ(x), element-wise."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def norm_cdf(x: ArrayLike) -> FloatArray:
    """Standard normal distribution N(x) = erfc(−x/√2)/2, exact to double precision (also in the tails)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * np.asarray(_erfc(-x / math.sqrt(2.0)), dtype=np.float64)


def d1_d2(
    spot: ArrayLike, strike: ArrayLike, time_years: ArrayLike, vol: ArrayLike,
    rate: ArrayLike = 0.0, dividend_yield: ArrayLike = 0.0,
) -> tuple[FloatArray, FloatArray]:  # fmt: skip
    """d1 = (ln(S/K) + (r − q + σ²/2)·T) / (σ√T) and d2 = d1 − σ√T."""
    s, k, t, v = (np.asarray(a, dtype=np.float64) for a in (spot, strike, time_years, vol))
    vol_sqrt_t = v * np.sqrt(t)
    d1 = (np.log(s / k) + (np.asarray(rate) - np.asarray(dividend_yield) + 0.5 * v * v) * t) / vol_sqrt_t
    return d1, d1 - vol_sqrt_t


def delta(
    spot: ArrayLike, strike: ArrayLike, time_years: ArrayLike, vol: ArrayLike, is_call: ArrayLike,
    rate: ArrayLike = 0.0, dividend_yield: ArrayLike = 0.0,
) -> FloatArray:  # fmt: skip
    """Delta per 1 point of spot: e^(−qT)·N(d1) for calls, −e^(−qT)·N(−d1) for puts."""
    d1, _ = d1_d2(spot, strike, time_years, vol, rate, dividend_yield)
    carry = np.exp(-np.asarray(dividend_yield, dtype=np.float64) * np.asarray(time_years, dtype=np.float64))
    return np.where(np.asarray(is_call, dtype=bool), carry * norm_cdf(d1), -carry * norm_cdf(-d1))


def gamma(
    spot: ArrayLike, strike: ArrayLike, time_years: ArrayLike, vol: ArrayLike,
    rate: ArrayLike = 0.0, dividend_yield: ArrayLike = 0.0,
) -> FloatArray:  # fmt: skip
    """Gamma per 1 point of spot, calls and puts alike: e^(−qT)·φ(d1) / (S·σ·√T)."""
    s, t, v = (np.asarray(a, dtype=np.float64) for a in (spot, time_years, vol))
    d1, _ = d1_d2(s, strike, t, v, rate, dividend_yield)
    return np.exp(-np.asarray(dividend_yield, dtype=np.float64) * t) * norm_pdf(d1) / (s * v * np.sqrt(t))


def vanna(
    spot: ArrayLike, strike: ArrayLike, time_years: ArrayLike, vol: ArrayLike,
    rate: ArrayLike = 0.0, dividend_yield: ArrayLike = 0.0,
) -> FloatArray:  # fmt: skip
    """Vanna ∂Δ/∂σ per 1.00 of vol, calls and puts alike: −e^(−qT)·φ(d1)·d2/σ."""
    t, v = np.asarray(time_years, dtype=np.float64), np.asarray(vol, dtype=np.float64)
    d1, d2 = d1_d2(spot, strike, t, v, rate, dividend_yield)
    return -np.exp(-np.asarray(dividend_yield, dtype=np.float64) * t) * norm_pdf(d1) * d2 / v


def charm(
    spot: ArrayLike, strike: ArrayLike, time_years: ArrayLike, vol: ArrayLike, is_call: ArrayLike,
    rate: ArrayLike = 0.0, dividend_yield: ArrayLike = 0.0,
) -> FloatArray:  # fmt: skip
    """Charm −∂Δ/∂T: the change of delta per year of calendar time passing.

    Call: q·e^(−qT)·N(d1) − e^(−qT)·φ(d1)·(2(r−q)T − d2·σ√T) / (2Tσ√T);
    put:  −q·e^(−qT)·N(−d1) − the same second term.
    """
    t, v = np.asarray(time_years, dtype=np.float64), np.asarray(vol, dtype=np.float64)
    r, q = np.asarray(rate, dtype=np.float64), np.asarray(dividend_yield, dtype=np.float64)
    d1, d2 = d1_d2(spot, strike, t, v, r, q)
    carry = np.exp(-q * t)
    vol_sqrt_t = v * np.sqrt(t)
    common = carry * norm_pdf(d1) * (2.0 * (r - q) * t - d2 * vol_sqrt_t) / (2.0 * t * vol_sqrt_t)
    if not np.any(q):  # the N(±d1) term vanishes without a dividend yield: skip the element-wise erfc
        return -common + np.zeros(np.shape(is_call))
    return np.where(np.asarray(is_call, dtype=bool), q * carry * norm_cdf(d1), -q * carry * norm_cdf(-d1)) - common
