"""The "hydrating" GEX baseline public tools use, for the models benchmark to run beside ``models.gex``.

What a typical script does: load the whole chain blob (a list of dicts), then loop over it row by row in
Python — parse each field, price gamma with ``math``, accumulate by strike in a dict — and re-loop the whole
chain once per profile point (200 points). Same conventions as ``models.gex`` (exact T floored at 30 min,
expired rows dropped, $ per 1 %, calls + / puts −, S′² in the profile), so the numbers are comparable; unlike
it, the zero gamma is the first crossing, linearly interpolated, as most public tools report it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SECONDS_PER_YEAR = 365 * 86400
MIN_TIME_S = 1800
PROFILE_POINTS = 200


def _gamma(spot: float, strike: float, time_years: float, vol: float) -> float:
    vol_sqrt_t = vol * math.sqrt(time_years)
    d1 = (math.log(spot / strike) + 0.5 * vol * vol * time_years) / vol_sqrt_t
    return math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) / (spot * vol_sqrt_t)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def baseline_gex(rows: list[Mapping[str, str]], spot: float, now_ms: int) -> dict[str, Any]:
    """Net / absolute GEX, by strike and a 200-point profile (±10 %) with per-row Python loops."""
    by_strike: dict[float, float] = {}
    net = absolute = 0.0
    grid = [spot * (0.9 + 0.2 * i / (PROFILE_POINTS - 1)) for i in range(PROFILE_POINTS)]
    profile = [0.0] * PROFILE_POINTS
    for i, level in enumerate(grid):
        for row in rows:  # the whole chain re-walked (and re-parsed) for every profile point
            strike, oi, iv = _float(row.get("strike")), _float(row.get("oi")), _float(row.get("iv"))
            settle_ms, multiplier = _float(row.get("expiry_ts")), _float(row.get("multiplier"))
            if None in (strike, oi, iv, settle_ms, multiplier) or settle_ms <= now_ms or not oi or not iv:
                continue
            time_years = max((settle_ms - now_ms) / 1000, MIN_TIME_S) / SECONDS_PER_YEAR
            sign = 1.0 if row.get("cp") == "C" else -1.0
            profile[i] += sign * _gamma(level, strike, time_years, iv) * oi * multiplier * level * level * 0.01
            if i == 0:
                exposure = sign * _gamma(spot, strike, time_years, iv) * oi * multiplier * spot * spot * 0.01
                net += exposure
                absolute += abs(exposure)
                by_strike[strike] = by_strike.get(strike, 0.0) + exposure
    zero_gamma = None
    for i in range(1, PROFILE_POINTS):
        if profile[i - 1] * profile[i] < 0:
            x0, x1, y0, y1 = grid[i - 1], grid[i], profile[i - 1], profile[i]
            zero_gamma = x0 - y0 * (x1 - x0) / (y1 - y0)
            break
    return {
        "net_gex": net,
        "abs_gex": absolute,
        "zero_gamma": zero_gamma,
        "by_strike": [{"strike": k, "net_gex": by_strike[k]} for k in sorted(by_strike)],
        "profile": {"spot": grid, "net_gex": profile},
    }
