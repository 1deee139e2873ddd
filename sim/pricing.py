"""Vectorised Black-Scholes (numpy only): prices and greeks, plus the simulator's volatility smile."""

from __future__ import annotations

import numpy as np

SQRT2 = np.sqrt(2.0)
INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
YEAR_NS = 365.0 * 86400e9


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), vectorised.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return 0.5 * (1.0 + _erf(np.asarray(x, dtype=np.float64) / SQRT2))


def norm_pdf(x: np.ndarray) -> np.ndarray:
    """Standard normal density."""
    return INV_SQRT_2PI * np.exp(-0.5 * np.asarray(x, dtype=np.float64) ** 2)


def _d1d2(
    spot: np.ndarray, strike: np.ndarray, t: np.ndarray, vol: np.ndarray, r: float, q: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.maximum(t, 1e-7)
    sq = vol * np.sqrt(t)
    d1 = (np.log(spot / strike) + (r - q + 0.5 * vol * vol) * t) / sq
    return d1, d1 - sq, t


def price(
    spot: np.ndarray | float,
    strike: np.ndarray,
    t: np.ndarray,
    vol: np.ndarray,
    is_call: np.ndarray,
    r: float = 0.04,
    q: float = 0.012,
) -> np.ndarray:
    """Black-Scholes-Merton price of European options (``t`` in years, arrays broadcast)."""
    spot = np.asarray(spot, dtype=np.float64)
    d1, d2, t = _d1d2(spot, strike, t, vol, r, q)
    df_q, df_r = np.exp(-q * t), np.exp(-r * t)
    call = spot * df_q * norm_cdf(d1) - strike * df_r * norm_cdf(d2)
    put = strike * df_r * norm_cdf(-d2) - spot * df_q * norm_cdf(-d1)
    return np.maximum(np.where(is_call, call, put), 0.0)


def greeks(
    spot: np.ndarray | float,
    strike: np.ndarray,
    t: np.ndarray,
    vol: np.ndarray,
    is_call: np.ndarray,
    r: float = 0.04,
    q: float = 0.012,
) -> dict[str, np.ndarray]:
    """Delta, gamma, theta (per calendar day) and vega (per vol point) as Massive reports them."""
    spot = np.asarray(spot, dtype=np.float64)
    d1, d2, t = _d1d2(spot, strike, t, vol, r, q)
    df_q, df_r = np.exp(-q * t), np.exp(-r * t)
    pdf = norm_pdf(d1)
    sqrt_t = np.sqrt(t)
    delta = np.where(is_call, df_q * norm_cdf(d1), df_q * (norm_cdf(d1) - 1.0))
    gamma = df_q * pdf / (spot * vol * sqrt_t)
    decay = -spot * df_q * pdf * vol / (2.0 * sqrt_t)
    theta_call = decay - r * strike * df_r * norm_cdf(d2) + q * spot * df_q * norm_cdf(d1)
    theta_put = decay + r * strike * df_r * norm_cdf(-d2) - q * spot * df_q * norm_cdf(-d1)
    theta = np.where(is_call, theta_call, theta_put) / 365.0
    vega = spot * df_q * pdf * sqrt_t / 100.0
    return {"delta": delta, "gamma": gamma, "theta": theta, "vega": vega}


def smile(
    spot: float, strike: np.ndarray, t: np.ndarray, base_vol: float, r: float = 0.04, q: float = 0.012
) -> np.ndarray:
    """Implied volatility with a term structure, a put skew and a smile (equity-index shaped)."""
    t = np.maximum(t, 1e-6)
    atm = base_vol + 0.02 * (1.0 - np.exp(-4.0 * t)) + 0.04 * np.exp(-150.0 * t)
    forward = spot * np.exp((r - q) * t)
    x = np.clip(np.log(strike / forward) / (atm * np.sqrt(np.maximum(t, 2.0 / 365.0))), -6.0, 6.0)
    return np.maximum(atm * (1.0 - 0.12 * x + 0.025 * x * x), 0.04)
