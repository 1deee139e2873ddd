"""Dealer gamma exposure (GEX) of an option chain — pure: numpy arrays in, a JSON-ready view out.

Conventions (``docs/reference/gex.md`` has them with the formulas and the golden vectors):

- **Unit**: $ per 1 % move of the underlying, Γ·OI·M·S²·0.01. Vanna exposure is $ per vol point
  (Vanna·OI·M·S·0.01), charm exposure $ of delta per calendar day ((Charm/365)·OI·M·S).
- **Sign**: calls +, puts − (dealers long the calls customers sold, short the puts customers bought); the
  same sign is applied to vanna and charm exposure.
- **Time**: exact seconds from ``now_ms`` to each contract's settlement instant / (365·86400), floored at
  ``min_time_s`` so 0DTE gamma stays finite; contracts at or past settlement are dropped.
- **Re-pricing** (sticky strike): gamma at the live spot and at every profile spot S′ is recomputed from the
  contract's IV and T; the profile uses S′² at each grid point.
- **Missing IV**: the contract's snapshot gamma is used as is at the live spot. It cannot be re-priced, so
  in the profile it is held constant (sticky gamma) and scaled by S′² — the profile at the live spot then
  equals ``net_gex`` exactly. It has no vanna or charm (both 0). Counted in
  ``contracts_skipped["missing_iv_used_snapshot_gamma"]`` *and* in ``contracts_used`` (it does contribute).
- **Zero gamma**: every sign change of the profile, bracketed on the grid and refined on the profile
  function itself (Illinois regula falsi to 1e-10·spot); *the* zero gamma is the crossing nearest the live
  spot (an exact tie goes to the lower one); None when the profile never changes sign.
- **Walls**: per strike, aggregated across expiries first. Call wall = strike ≥ spot with the largest
  positive call GEX; put wall = strike ≤ spot with the largest |put GEX|; ties → the strike nearest spot;
  None when there is no candidate (no strike on that side with non-zero GEX).
- **Never a non-finite number**: inputs beyond any plausible bound (an OI of 1e308, a spot of 1e300 written
  by an earlier version or by hand) can make a product overflow; :func:`compute_gex` then raises
  :class:`NonFiniteView` naming the parts, instead of returning a view with NaN / ±inf (which JSON encoders
  write as ``null``). Checked on the numpy arrays before they become lists (a few µs).
- **0DTE**: the contracts whose ``expiry`` equals ``zero_dte_date``; by default the New York calendar date
  of ``now_ms`` (the expiry that settles today; after today's settlement it is empty, it never rolls to
  the next day).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from models import bs

NEW_YORK = ZoneInfo("America/New_York")
SECONDS_PER_YEAR = 365 * 86400
UNIT = "usd_per_1pct"
SIGN_CONVENTION = (
    "Dealer positioning assumed: calls +, puts − (dealers are long the calls customers sold and short the "
    "puts customers bought); net = Σ signed, absolute = Σ |·|."
)
#: Rows of the (contracts × grid) block evaluated at once: ~2 MB of float64 per 201-point block.
_BLOCK_ROWS = 1024
#: exp(−d1²/2) is exactly 0.0 in float64 beyond this |d1|: such contracts are skipped in the profile.
_D1_UNDERFLOW = 40.0

FloatArray = NDArray[np.float64]


class NonFiniteView(ValueError):
    """The view would carry NaN or ±inf: ``parts`` names where (the caller publishes nothing)."""

    def __init__(self, parts: Sequence[str]) -> None:
        super().__init__(f"non-finite GEX in {', '.join(parts)}")
        self.parts = tuple(parts)


def _require_finite(**values: FloatArray | float | list[float]) -> None:
    """Raise :class:`NonFiniteView` naming every one of ``values`` holding NaN or ±inf."""
    bad = [name for name, value in values.items() if not np.isfinite(value).all()]
    if bad:
        raise NonFiniteView(bad)


@dataclass(frozen=True, eq=False)
class GexChain:
    """The GEX projection of a chain as parallel numpy arrays (one element per contract).

    ``strike`` points; ``settle_ms`` settlement instant (Unix ms); ``is_call`` bool; ``oi`` open interest
    (contracts, NaN = missing); ``iv`` annualised decimal (NaN = missing); ``multiplier`` shares per
    contract; ``snapshot_gamma`` per point (NaN = missing); ``expiry`` ISO dates (grouping only).
    ``rows_skipped`` counts rows :meth:`from_rows` could not parse.
    """

    strike: FloatArray
    settle_ms: NDArray[np.int64]
    is_call: NDArray[np.bool_]
    oi: FloatArray
    iv: FloatArray
    multiplier: FloatArray
    snapshot_gamma: FloatArray
    expiry: NDArray[np.str_]
    rows_skipped: int = field(default=0)

    def __post_init__(self) -> None:
        coerced = {
            "strike": np.asarray(self.strike, dtype=np.float64),
            "settle_ms": np.asarray(self.settle_ms, dtype=np.int64),
            "is_call": np.asarray(self.is_call, dtype=bool),
            "oi": np.asarray(self.oi, dtype=np.float64),
            "iv": np.asarray(self.iv, dtype=np.float64),
            "multiplier": np.asarray(self.multiplier, dtype=np.float64),
            "snapshot_gamma": np.asarray(self.snapshot_gamma, dtype=np.float64),
            "expiry": np.asarray(self.expiry, dtype=np.str_),
        }
        sizes = {a.shape for a in coerced.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"GexChain arrays must be one-dimensional and of equal length, got {sizes}")
        for name, value in coerced.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.strike.shape[0])

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]]) -> GexChain:
        """Parse GEX contract hashes (``strike expiry expiry_ts cp oi multiplier iv gamma …``, all strings).

        "" or an absent field is missing. A row without a finite positive strike, an expiry, an integer
        ``expiry_ts`` (ms), ``cp`` "C"/"P" or a finite positive multiplier is skipped and counted in
        ``rows_skipped``. A missing, negative or non-finite OI / IV / gamma becomes NaN (IV must be > 0).
        The contracts are put in a canonical order, so the result does not depend on the row order.
        """
        return _canonical(_parse_each_row(list(rows)))

    @classmethod
    def from_columns(cls, columns: Sequence[Sequence[str | None]]) -> GexChain:
        """:meth:`from_rows` for the same hashes given column-wise — ``columns[i]`` holds field
        :data:`ROW_FIELDS` ``[i]`` of every row (None or "" = missing) — the same result, vectorised: the
        GEX worker's cold read of a 20,000-contract chain. Text that is not a plain number falls back to
        the row-by-row parser, so the result never differs."""
        strike, expiry, expiry_ts, cp, oi, iv, multiplier, gamma = columns
        try:
            strike_v, oi_v, iv_v, multiplier_v, gamma_v = (
                np.array([float(x) if x else math.nan for x in column], dtype=np.float64)
                for column in (strike, oi, iv, multiplier, gamma)
            )
            settle_ms = np.array([int(x) if x else -1 for x in expiry_ts], dtype=np.int64)
        except (ValueError, OverflowError):
            rows = [dict(zip(ROW_FIELDS, values, strict=True)) for values in zip(*columns, strict=True)]
            return cls.from_rows([{k: v for k, v in row.items() if v is not None} for row in rows])
        strike_v, multiplier_v = _valid(strike_v, positive=True), _valid(multiplier_v, positive=True)
        cp_v = np.array([x or "" for x in cp], dtype=np.str_)
        expiry_v = np.array([x or "" for x in expiry], dtype=np.str_)
        settle_known = np.array([bool(x) for x in expiry_ts], dtype=bool)
        keep = (~np.isnan(strike_v) & ~np.isnan(multiplier_v) & settle_known & ((cp_v == "C") | (cp_v == "P"))
                & (expiry_v != ""))  # fmt: skip
        chain = cls(
            strike=strike_v[keep], settle_ms=settle_ms[keep], is_call=(cp_v == "C")[keep], oi=_valid(oi_v)[keep],
            iv=_valid(iv_v, positive=True)[keep], multiplier=multiplier_v[keep], snapshot_gamma=_valid(gamma_v)[keep],
            expiry=expiry_v[keep], rows_skipped=int((~keep).sum()),
        )  # fmt: skip
        return _canonical(chain)


#: The hash fields :meth:`GexChain.from_columns` takes, in its column order.
ROW_FIELDS = ("strike", "expiry", "expiry_ts", "cp", "oi", "iv", "multiplier", "gamma")


def _valid(values: FloatArray, *, positive: bool = False) -> FloatArray:
    """``values`` with every non-finite, negative (or, if ``positive``, zero) entry NaN — :func:`_number`."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & ((values > 0) if positive else (values >= 0))
    return np.where(ok, values, math.nan)


def _canonical(chain: GexChain) -> GexChain:
    """``chain`` in a canonical order (NaN sorts last, identical rows are interchangeable): the order of the
    rows it was parsed from cannot matter."""
    order = np.lexsort((chain.snapshot_gamma, chain.iv, chain.multiplier, chain.oi, chain.expiry, chain.is_call,
                        chain.settle_ms, chain.strike))  # fmt: skip
    return GexChain(
        strike=chain.strike[order], settle_ms=chain.settle_ms[order], is_call=chain.is_call[order],
        oi=chain.oi[order], iv=chain.iv[order], multiplier=chain.multiplier[order],
        snapshot_gamma=chain.snapshot_gamma[order], expiry=chain.expiry[order], rows_skipped=chain.rows_skipped,
    )  # fmt: skip


def _parse_each_row(rows: list[Mapping[str, str]]) -> GexChain:
    """The contracts of the parseable rows, in row order (``rows_skipped`` = the others)."""
    parsed = []
    for row in rows:
        contract = _parse_row(row)
        if contract is not None:
            parsed.append(contract)
    columns = list(zip(*parsed, strict=True)) if parsed else [()] * 8
    return GexChain(*columns, rows_skipped=len(rows) - len(parsed))  # type: ignore[arg-type]


def _number(text: str | None, *, positive: bool = False) -> float:
    """A finite non-negative (or positive) number from hash text, else NaN."""
    if text is None or text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        return math.nan
    return value


def _parse_row(row: Mapping[str, str]) -> tuple[float, int, bool, float, float, float, float, str] | None:
    strike, multiplier = _number(row.get("strike"), positive=True), _number(row.get("multiplier"), positive=True)
    cp, expiry = row.get("cp"), row.get("expiry") or ""
    try:
        settle_ms = int(row.get("expiry_ts") or "")
    except ValueError:
        return None
    if math.isnan(strike) or math.isnan(multiplier) or cp not in ("C", "P") or not expiry:
        return None
    return (
        strike, settle_ms, cp == "C", _number(row.get("oi")), _number(row.get("iv"), positive=True), multiplier,
        _number(row.get("gamma")), expiry,
    )  # fmt: skip


@dataclass(frozen=True)
class _Used:
    """The contracts that contribute, with everything the profile needs per contract."""

    strike: FloatArray
    expiry: NDArray[np.str_]
    is_call: NDArray[np.bool_]
    time_years: FloatArray
    iv: FloatArray  # NaN where the snapshot gamma is used
    notional: FloatArray  # sign·OI·M (shares per point of gamma, signed)
    snapshot_gamma: FloatArray

    @property
    def repriced(self) -> NDArray[np.bool_]:
        return ~np.isnan(self.iv)


def _select(chain: GexChain, now_ms: int, min_time_s: float) -> tuple[_Used, dict[str, int]]:
    """Drop expired / OI-less / gamma-less contracts; count why (in that order of precedence)."""
    expired = chain.settle_ms <= now_ms
    no_oi = ~expired & ~(chain.oi > 0)
    has_iv = ~np.isnan(chain.iv)
    alive = ~expired & ~no_oi
    fallback = alive & ~has_iv & ~np.isnan(chain.snapshot_gamma)
    no_gamma = alive & ~has_iv & np.isnan(chain.snapshot_gamma)
    used = alive & ~no_gamma
    seconds = np.maximum((chain.settle_ms[used] - now_ms) / 1000.0, float(min_time_s))
    sign = np.where(chain.is_call[used], 1.0, -1.0)
    selected = _Used(
        strike=chain.strike[used],
        expiry=chain.expiry[used],
        is_call=chain.is_call[used],
        time_years=seconds / SECONDS_PER_YEAR,
        iv=chain.iv[used],
        notional=sign * chain.oi[used] * chain.multiplier[used],
        snapshot_gamma=chain.snapshot_gamma[used],
    )
    skipped = {
        "expired": int(expired.sum()),
        "missing_iv_used_snapshot_gamma": int(fallback.sum()),
        "no_gamma": int(no_gamma.sum()),
        "no_oi": int(no_oi.sum()),
    }
    return selected, skipped


def _profile_rows(
    used: _Used, weights: FloatArray, spots: FloatArray, rate: float, dividend_yield: float
) -> FloatArray:
    """Net GEX ($ per 1 %) at every spot S′ for each row of ``weights`` (k × contracts) → (k × spots).

    Re-priced contracts: Γ(S′)·S′² = e^(−qT)·φ(d1(S′))·S′/(σ√T), evaluated as a (contracts × spots) matrix in
    blocks; snapshot-gamma contracts: Γ_snapshot·S′².
    """
    spots = np.asarray(spots, dtype=np.float64)
    out = np.zeros((weights.shape[0], spots.shape[0]))
    if spots.size == 0:
        return out
    repriced = used.repriced
    fixed = ~repriced
    if fixed.any():
        out += np.outer(weights[:, fixed] @ (used.notional[fixed] * used.snapshot_gamma[fixed]), spots * spots)
    if not repriced.any():
        return out * 0.01
    t, vol = used.time_years[repriced], used.iv[repriced]
    inv_vol_sqrt_t = 1.0 / (vol * np.sqrt(t))
    # d1(S′) = ln S′ · c + a, with c = 1/(σ√T) and a = ((r − q + σ²/2)T − ln K)/(σ√T).
    offset = ((rate - dividend_yield + 0.5 * vol * vol) * t - np.log(used.strike[repriced])) * inv_vol_sqrt_t
    scale = used.notional[repriced] * np.exp(-dividend_yield * t) * inv_vol_sqrt_t * (1.0 / math.sqrt(2 * math.pi))
    log_spots = np.log(spots)
    d1_lo, d1_hi = log_spots.min() * inv_vol_sqrt_t + offset, log_spots.max() * inv_vol_sqrt_t + offset
    live = (np.maximum(d1_lo, -d1_hi) < _D1_UNDERFLOW) & (scale != 0)  # d1 is monotone in S′: check the ends
    w = weights[:, repriced][:, live] * scale[live]
    c, a = inv_vol_sqrt_t[live], offset[live]
    acc = np.zeros((weights.shape[0], spots.shape[0]))
    for start in range(0, c.shape[0], _BLOCK_ROWS):
        stop = start + _BLOCK_ROWS
        d1 = np.multiply.outer(c[start:stop], log_spots)
        d1 += a[start:stop, None]
        np.square(d1, out=d1)
        d1 *= -0.5
        np.exp(d1, out=d1)
        acc += w[:, start:stop] @ d1
    return (out + acc * spots) * 0.01


def _profile_function(
    used: _Used, weights: FloatArray, rate: float, dividend_yield: float
) -> Callable[[FloatArray], FloatArray]:
    return lambda spots: _profile_rows(used, weights[None, :], spots, rate, dividend_yield)[0]


def _crossings(grid: FloatArray, values: FloatArray, profile: Callable[[FloatArray], FloatArray]) -> list[float]:
    """Every sign change of ``values`` on ``grid``, refined on ``profile`` (sorted)."""
    nonzero = np.flatnonzero(values != 0)
    if nonzero.size < 2:
        return []
    left, right = nonzero[:-1], nonzero[1:]
    change = np.sign(values[left]) != np.sign(values[right])
    left, right = left[change], right[change]
    adjacent = right == left + 1
    exact = [float(grid[(lo + hi) // 2]) for lo, hi in zip(left[~adjacent], right[~adjacent], strict=True)]
    refined = _refine(grid[left[adjacent]], grid[right[adjacent]], values[left[adjacent]], values[right[adjacent]],
                      profile)  # fmt: skip
    return sorted([*exact, *(float(x) for x in refined)])


def _refine(lo: FloatArray, hi: FloatArray, f_lo: FloatArray, f_hi: FloatArray,
            profile: Callable[[FloatArray], FloatArray], max_iter: int = 60) -> FloatArray:  # fmt: skip
    """Illinois regula falsi on every bracket at once (f_lo·f_hi < 0); to 1e-10 of the spot level."""
    lo, hi, f_lo, f_hi = (np.array(a, dtype=np.float64) for a in (lo, hi, f_lo, f_hi))
    if lo.size == 0:
        return lo
    tol = 1e-10 * float(np.max(np.abs(hi)))
    x = (lo + hi) / 2
    side = np.zeros(lo.shape, dtype=np.int8)
    for _ in range(max_iter):
        previous = x
        x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        fx = profile(x)
        root_right = np.sign(fx) == np.sign(f_lo)  # root in [x, hi]
        # Illinois converges in x long before the bracket closes: stop when either is within tolerance
        done = (fx == 0) | (hi - lo < tol) | (np.abs(x - previous) < tol)
        lo, f_lo = np.where(root_right, x, lo), np.where(root_right, fx, f_lo)
        hi, f_hi = np.where(root_right, hi, x), np.where(root_right, f_hi, fx)
        f_hi = np.where(root_right & (side == 1), f_hi / 2, f_hi)
        f_lo = np.where(~root_right & (side == -1), f_lo / 2, f_lo)
        side = np.where(root_right, 1, -1).astype(np.int8)
        if done.all():
            break
    return x


def _nearest(values: list[float], spot: float) -> float | None:
    """The value nearest ``spot``; an exact tie goes to the lower one."""
    return min(values, key=lambda v: (abs(v - spot), v)) if values else None


def _wall(strikes: FloatArray, exposure: FloatArray, spot: float, *, above: bool) -> float | None:
    """Strike on the given side of spot (inclusive) with the largest |exposure| > 0; ties → nearest spot."""
    side = strikes >= spot if above else strikes <= spot
    candidates = side & (np.abs(exposure) > 0)
    if not candidates.any():
        return None
    k, e = strikes[candidates], np.abs(exposure[candidates])
    best = np.lexsort((np.abs(k - spot), -e))[0]
    return float(k[best])


def _headline(
    used: _Used, mask: NDArray[np.bool_], call_gex: FloatArray, put_gex: FloatArray, vanna_usd: FloatArray,
    charm_usd: FloatArray, spot: float,
) -> dict[str, Any]:  # fmt: skip
    """net, abs, walls and by_strike of the masked contracts (zero gamma is added by the caller)."""
    strikes, index = np.unique(used.strike[mask], return_inverse=True)
    n = strikes.shape[0]
    per = {
        name: np.bincount(index, weights=values[mask], minlength=n)
        for name, values in (("call", call_gex), ("put", put_gex), ("vanna", vanna_usd), ("charm", charm_usd))
    }
    net = per["call"] + per["put"]
    net_gex, abs_gex = float((call_gex[mask] + put_gex[mask]).sum()), float((call_gex[mask] - put_gex[mask]).sum())
    _require_finite(by_strike_call=per["call"], by_strike_put=per["put"], by_strike_vanna=per["vanna"],
                    by_strike_charm=per["charm"], by_strike_net=net, net_gex=net_gex, abs_gex=abs_gex)  # fmt: skip
    by_strike = [
        {"strike": k, "call_gex": c, "put_gex": p, "net_gex": g, "vanna": v, "charm": ch}
        for k, c, p, g, v, ch in zip(strikes.tolist(), per["call"].tolist(), per["put"].tolist(), net.tolist(),
                                     per["vanna"].tolist(), per["charm"].tolist(), strict=True)
    ]  # fmt: skip
    return {
        "net_gex": net_gex,
        "abs_gex": abs_gex,
        "call_wall": _wall(strikes, per["call"], spot, above=True),
        "put_wall": _wall(strikes, per["put"], spot, above=False),
        "by_strike": by_strike,
    }


def new_york_date(now_ms: int) -> str:
    """The America/New_York calendar date (ISO) of a Unix-ms instant — the default 0DTE expiry."""
    return datetime.fromtimestamp(now_ms / 1000, tz=NEW_YORK).date().isoformat()


def profile_spots(spot: float, half_width_pct: float, step_pct: float) -> FloatArray:
    """The profile grid spot·(1 + k·step/100), k = −n … n with n = round(half_width / step); spot itself at k = 0."""
    if not (half_width_pct > 0 and step_pct > 0 and half_width_pct < 100):
        raise ValueError(f"need 0 < profile_half_width_pct < 100 and step > 0, got {half_width_pct}, {step_pct}")
    n = round(half_width_pct / step_pct)
    return spot * (1.0 + np.arange(-n, n + 1) * (step_pct / 100.0))


def gex_profile(
    chain: GexChain, spots: Iterable[float], *, now_ms: int, rate: float = 0.0, dividend_yield: float = 0.0,
    min_time_s: float = 1800,
) -> list[float]:  # fmt: skip
    """Net GEX ($ per 1 %) of the whole chain if the underlying were at each of ``spots`` (S′² per point)."""
    used, _ = _select(chain, now_ms, min_time_s)
    grid = np.asarray(list(spots), dtype=np.float64)
    return _profile_rows(used, np.ones((1, used.strike.shape[0])), grid, rate, dividend_yield)[0].tolist()


def compute_gex(
    chain: GexChain,
    *,
    spot: float,
    now_ms: int,
    rate: float = 0.0,
    dividend_yield: float = 0.0,
    profile_half_width_pct: float = 10.0,
    profile_step_pct: float = 0.1,
    min_time_s: float = 1800,
    zero_dte_date: str | None = None,
) -> dict[str, Any]:
    """The GEX view of ``chain`` at live ``spot`` and instant ``now_ms`` (Unix ms); JSON-ready.

    All exposures are $ per 1 % move (see the module docstring for every convention). Keys: spot, rate,
    dividend_yield, unit, sign_convention, net_gex, abs_gex, zero_gamma, zero_gamma_crossings, call_wall,
    put_wall, by_strike, by_expiry, surface, profile, zero_dte, contracts_used, contracts_skipped.
    """
    if not (math.isfinite(spot) and spot > 0):
        raise ValueError(f"spot must be a positive finite number, got {spot!r}")
    used, skipped = _select(chain, now_ms, min_time_s)
    n = used.strike.shape[0]
    repriced = used.repriced
    t, vol = used.time_years[repriced], used.iv[repriced]
    k = used.strike[repriced]

    gamma_now = used.snapshot_gamma.copy()
    gamma_now[repriced] = bs.gamma(spot, k, t, vol, rate, dividend_yield)
    gex = used.notional * gamma_now * spot * spot * 0.01
    call_gex, put_gex = np.where(used.is_call, gex, 0.0), np.where(used.is_call, 0.0, gex)
    vanna_usd, charm_usd = np.zeros(n), np.zeros(n)
    vanna_usd[repriced] = used.notional[repriced] * bs.vanna(spot, k, t, vol, rate, dividend_yield) * spot * 0.01
    charm_usd[repriced] = (used.notional[repriced] * spot / 365.0
                           * bs.charm(spot, k, t, vol, used.is_call[repriced], rate, dividend_yield))  # fmt: skip

    zero_dte_expiry = zero_dte_date if zero_dte_date is not None else new_york_date(now_ms)
    is_zero_dte = used.expiry == zero_dte_expiry
    grid = profile_spots(spot, profile_half_width_pct, profile_step_pct)
    weights = np.vstack([np.ones(n), is_zero_dte.astype(np.float64)])
    profiles = _profile_rows(used, weights, grid, rate, dividend_yield)
    _require_finite(gex=gex, vanna=vanna_usd, charm=charm_usd, profile=profiles, profile_spot=grid, rate=rate,
                    dividend_yield=dividend_yield)  # fmt: skip

    everything = np.ones(n, dtype=bool)
    view: dict[str, Any] = {
        "spot": float(spot), "rate": float(rate), "dividend_yield": float(dividend_yield), "unit": UNIT,
        "sign_convention": SIGN_CONVENTION,
    }  # fmt: skip
    headline = _headline(used, everything, call_gex, put_gex, vanna_usd, charm_usd, spot)
    crossings = _crossings(grid, profiles[0], _profile_function(used, weights[0], rate, dividend_yield))
    _require_finite(zero_gamma_crossings=crossings)
    view.update(
        net_gex=headline["net_gex"], abs_gex=headline["abs_gex"], zero_gamma=_nearest(crossings, spot),
        zero_gamma_crossings=crossings, call_wall=headline["call_wall"], put_wall=headline["put_wall"],
        by_strike=headline["by_strike"],
    )  # fmt: skip

    expiries, expiry_index = np.unique(used.expiry, return_inverse=True)
    strikes, strike_index = np.unique(used.strike, return_inverse=True)
    net_by_expiry = np.bincount(expiry_index, weights=gex, minlength=expiries.size)
    abs_by_expiry = np.bincount(expiry_index, weights=np.abs(gex), minlength=expiries.size)
    view["by_expiry"] = [
        {"expiry": e, "net_gex": g, "abs_gex": a}
        for e, g, a in zip(expiries.tolist(), net_by_expiry.tolist(), abs_by_expiry.tolist(), strict=True)
    ]
    cells = np.bincount(expiry_index * strikes.size + strike_index, weights=gex, minlength=expiries.size * strikes.size)
    _require_finite(by_expiry_net=net_by_expiry, by_expiry_abs=abs_by_expiry, surface=cells)
    view["surface"] = {
        "expiries": expiries.tolist(), "strikes": strikes.tolist(),
        "net_gex": cells.reshape(expiries.size, strikes.size).tolist(),
    }  # fmt: skip
    view["profile"] = {"spot": grid.tolist(), "net_gex": profiles[0].tolist()}

    if is_zero_dte.any():
        zero = _headline(used, is_zero_dte, call_gex, put_gex, vanna_usd, charm_usd, spot)
        zero_crossings = _crossings(grid, profiles[1], _profile_function(used, weights[1], rate, dividend_yield))
        _require_finite(zero_dte_crossings=zero_crossings)
        zero["zero_gamma"] = _nearest(zero_crossings, spot)
        zero["zero_gamma_crossings"] = zero_crossings
        zero["contracts_used"] = int(is_zero_dte.sum())
    else:
        zero = {"net_gex": None, "abs_gex": None, "zero_gamma": None, "zero_gamma_crossings": [], "call_wall": None,
                "put_wall": None, "by_strike": [], "contracts_used": 0}  # fmt: skip
    view["zero_dte"] = {"expiry": zero_dte_expiry, **zero}
    view["contracts_used"] = int(n)
    view["contracts_skipped"] = skipped
    return view
