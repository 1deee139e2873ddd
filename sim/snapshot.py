"""Massive ``/v3/snapshot/options`` result objects built from a chain's columns (vectorised)."""

from __future__ import annotations

import math

import numpy as np

from sim import pricing
from sim.chain import Chain

DEEP_ITM_DELTA = 0.985


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def rows(chain: Chain, now_ns: int, idx: np.ndarray) -> list[dict]:
    """One snapshot result per contract in ``idx`` (order preserved).

    Greeks and IV come from the smile at the current spot. Some deep-ITM contracts (|delta| above
    0.985 on even strikes) omit ``greeks`` and ``implied_volatility``, as the real service does.
    """
    c, p = chain.cols, chain.product
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return []
    spot = chain.spot
    t = chain.time_to_expiry(now_ns, idx)
    iv = chain.ivs(now_ns, idx)
    strike, is_call = c["strike"][idx], c["is_call"][idx]
    g = pricing.greeks(spot, strike, t, iv, is_call)
    hide = (np.abs(g["delta"]) > DEEP_ITM_DELTA) & (np.mod(np.round(strike), 2) == 0)
    bid, ask = c["bid"][idx], c["ask"][idx]
    mid = np.round((bid + ask) / 2, 4)
    be = np.round(np.where(is_call, strike + mid, strike - mid), 4)
    vol = c["volume"][idx]
    vwap = np.where(vol > 0, c["notional"][idx] / np.maximum(vol, 1), np.nan)
    last = c["last_price"][idx]
    prev = c["prev_close"][idx]
    close = np.where(np.isnan(last), prev, last)
    change = np.round(close - prev, 4)
    change_pct = np.round(np.where(prev > 0, 100 * change / np.where(prev > 0, prev, 1), 0.0), 4)
    cols = {
        "ticker": c["ticker"][idx].tolist(),
        "expiry": c["expiry"][idx].astype(str).tolist(),
        "strike": strike.tolist(),
        "call": is_call.tolist(),
        "oi": c["oi"][idx].tolist(),
        "bid": bid.tolist(),
        "ask": ask.tolist(),
        "bs": c["bid_size"][idx].tolist(),
        "as": c["ask_size"][idx].tolist(),
        "mid": mid.tolist(),
        "qns": c["quote_ns"][idx].tolist(),
        "last": last.tolist(),
        "lsize": c["last_size"][idx].tolist(),
        "lx": c["last_exch"][idx].tolist(),
        "lc": c["last_cond"][idx].tolist(),
        "lns": c["last_ns"][idx].tolist(),
        "be": be.tolist(),
        "open": c["open"][idx].tolist(),
        "high": c["high"][idx].tolist(),
        "low": c["low"][idx].tolist(),
        "vol": vol.tolist(),
        "vwap": np.round(vwap, 4).tolist(),
        "prev": prev.tolist(),
        "close": close.tolist(),
        "chg": change.tolist(),
        "chgp": change_pct.tolist(),
        "hide": hide.tolist(),
        "iv": np.round(iv, 5).tolist(),
        "delta": np.round(g["delta"], 5).tolist(),
        "gamma": np.round(g["gamma"], 6).tolist(),
        "theta": np.round(g["theta"], 5).tolist(),
        "vega": np.round(g["vega"], 5).tolist(),
    }
    spot_key = "value" if p.is_index else "price"
    spot_r = round(spot, 2)
    out: list[dict] = []
    for i in range(len(idx)):
        day: dict = {"change": cols["chg"][i], "change_percent": cols["chgp"][i], "close": cols["close"][i]}
        if cols["vol"][i] > 0:
            day.update(high=cols["high"][i], low=cols["low"][i], open=cols["open"][i])
        day.update(previous_close=cols["prev"][i], volume=cols["vol"][i], last_updated=now_ns)
        if cols["vol"][i] > 0:
            day["vwap"] = cols["vwap"][i]
        row: dict = {
            "break_even_price": cols["be"][i],
            "day": day,
            "details": {
                "contract_type": "call" if cols["call"][i] else "put",
                "exercise_style": p.exercise_style,
                "expiration_date": cols["expiry"][i],
                "shares_per_contract": 100,
                "strike_price": cols["strike"][i],
                "ticker": cols["ticker"][i],
            },
        }
        if not cols["hide"][i]:
            row["greeks"] = {
                "delta": cols["delta"][i],
                "gamma": cols["gamma"][i],
                "theta": cols["theta"][i],
                "vega": cols["vega"][i],
            }
            row["implied_volatility"] = cols["iv"][i]
        row["last_quote"] = {
            "ask": cols["ask"][i],
            "ask_size": cols["as"][i],
            "bid": cols["bid"][i],
            "bid_size": cols["bs"][i],
            "midpoint": cols["mid"][i],
            "last_updated": cols["qns"][i],
            "timeframe": "REAL-TIME",
        }
        if cols["lns"][i] > 0:
            row["last_trade"] = {
                "price": cols["last"][i],
                "size": cols["lsize"][i],
                "conditions": [cols["lc"][i]],
                "exchange": cols["lx"][i],
                "sip_timestamp": cols["lns"][i],
                "timeframe": "REAL-TIME",
            }
        row["open_interest"] = cols["oi"][i]
        row["underlying_asset"] = {
            "ticker": p.underlying,
            spot_key: spot_r,
            "change_to_break_even": round(cols["be"][i] - spot, 4),
            "last_updated": chain.spot_ns,
            "timeframe": "REAL-TIME",
        }
        out.append(row)
    return out
