import json
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import bs, gex
from models.gex import GexChain, compute_gex, gex_profile, profile_spots
from tests.models.golden import matches_printed

NY = ZoneInfo("America/New_York")
DAY_MS = 86_400_000
NOW_MS = int(datetime(2030, 1, 7, 11, 0, tzinfo=NY).timestamp() * 1000)


def ny_ms(y: int, m: int, d: int, hh: int, mm: int = 0, ss: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=NY).timestamp() * 1000)


def chain(*contracts: dict) -> GexChain:
    """A chain from keyword dicts (strike, settle_ms, call, oi, iv, gamma, expiry, multiplier)."""
    nan = math.nan
    return GexChain(
        strike=[c["strike"] for c in contracts],
        settle_ms=[c["settle_ms"] for c in contracts],
        is_call=[c["call"] for c in contracts],
        oi=[c.get("oi", nan) for c in contracts],
        iv=[c.get("iv", nan) for c in contracts],
        multiplier=[c.get("multiplier", 100) for c in contracts],
        snapshot_gamma=[c.get("gamma", nan) for c in contracts],
        expiry=[c.get("expiry", "2030-12-31") for c in contracts],
    )


def four_contract_chain() -> GexChain:
    e30, e7 = NOW_MS + 30 * DAY_MS, NOW_MS + 7 * DAY_MS
    return chain(
        {"strike": 105, "settle_ms": e30, "call": True, "oi": 10_000, "iv": 0.18, "expiry": "2030-02-06"},
        {"strike": 100, "settle_ms": e7, "call": True, "oi": 5_000, "iv": 0.20, "expiry": "2030-01-14"},
        {"strike": 100, "settle_ms": e7, "call": False, "oi": 6_000, "iv": 0.21, "expiry": "2030-01-14"},
        {"strike": 95, "settle_ms": e30, "call": False, "oi": 12_000, "iv": 0.25, "expiry": "2030-02-06"},
    )


def assert_json_ready(value: object) -> None:
    """Only plain JSON types (no numpy scalars, no NaN / ∞)."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            assert_json_ready(v)
    elif isinstance(value, list):
        for v in value:
            assert_json_ready(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)
        if type(value) is float:
            assert math.isfinite(value)


VIEW_KEYS = {
    "spot", "rate", "dividend_yield", "unit", "sign_convention", "net_gex", "abs_gex", "zero_gamma",
    "zero_gamma_crossings", "call_wall", "put_wall", "by_strike", "by_expiry", "surface", "profile", "zero_dte",
    "contracts_used", "contracts_skipped",
}  # fmt: skip


# ---------------------------------------------------------------- golden vectors


def test_single_contract_dollar_gex_per_1pct_and_per_point() -> None:
    c = chain({"strike": 5000, "settle_ms": NOW_MS + 30 * DAY_MS, "call": True, "oi": 1_000, "iv": 0.15})
    view = compute_gex(c, spot=5000, now_ms=NOW_MS)
    assert matches_printed(view["net_gex"], "46,373,964.22")
    assert matches_printed(view["abs_gex"], "46,373,964.22")
    # $ per point = Γ·OI·M·S = $ per 1 % / (0.01·S)
    assert matches_printed(view["net_gex"] / (0.01 * 5000), "927,479.28")


def test_four_contract_chain_headline_and_by_strike() -> None:
    view = compute_gex(four_contract_chain(), spot=100, now_ms=NOW_MS)
    assert set(view) == VIEW_KEYS
    assert_json_ready(view)
    json.dumps(view, allow_nan=False)
    rows = {r["strike"]: r for r in view["by_strike"]}
    assert [r["strike"] for r in view["by_strike"]] == [95.0, 100.0, 105.0]
    assert matches_printed(rows[105.0]["call_gex"], "5,064,826.08")
    assert matches_printed(rows[100.0]["call_gex"], "7,201,216.07")
    assert matches_printed(rows[100.0]["put_gex"], "-8,229,880.33")
    assert matches_printed(rows[95.0]["put_gex"], "-5,036,212.95")
    assert matches_printed(rows[95.0]["net_gex"], "-5,036,212.95")
    assert matches_printed(rows[100.0]["net_gex"], "-1,028,664.26")
    assert matches_printed(rows[105.0]["net_gex"], "5,064,826.08")
    assert matches_printed(view["net_gex"], "-1,000,051.13")
    assert matches_printed(view["abs_gex"], "25,532,135.44")
    assert view["unit"] == "usd_per_1pct" and "calls +" in view["sign_convention"]
    assert view["contracts_used"] == 4
    assert view["contracts_skipped"] == {"expired": 0, "missing_iv_used_snapshot_gamma": 0, "no_gamma": 0, "no_oi": 0}


def test_four_contract_chain_profile_points_and_zero_gamma() -> None:
    c = four_contract_chain()
    values = gex_profile(c, [90, 95, 100, 105, 110], now_ms=NOW_MS)
    for value, printed in zip(values, ["-4,563,146.88", "-5,594,422.88", "-1,000,051.13", "5,099,178.79",
                                       "4,670,026.12"], strict=True):  # fmt: skip
        assert matches_printed(value, printed)
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    # The default grid (±10 % in 0.1 % steps, 201 points) holds 90, 95, 100, 105 and 110 (to float rounding).
    grid, profile = np.array(view["profile"]["spot"]), np.array(view["profile"]["net_gex"])
    assert len(grid) == 201 and grid[100] == 100.0
    for spot, value in zip([90, 95, 100, 105, 110], values, strict=True):
        i = int(np.argmin(np.abs(grid - spot)))
        assert grid[i] == pytest.approx(spot, abs=1e-9)
        assert profile[i] == pytest.approx(value, rel=1e-9)
    assert view["zero_gamma"] == pytest.approx(100.694656, abs=1e-4)
    assert view["zero_gamma_crossings"] == [view["zero_gamma"]]
    assert abs(gex_profile(c, [view["zero_gamma"]], now_ms=NOW_MS)[0]) < 1e-3  # refined, not just interpolated


def test_walls_use_inclusive_sides_and_aggregate_across_expiries() -> None:
    # Pinned rule: call wall = strike ≥ spot, put wall = strike ≤ spot. The 100 strike qualifies for both here;
    # strict inequalities would give 105 (call) and 95 (put) instead.
    view = compute_gex(four_contract_chain(), spot=100, now_ms=NOW_MS)
    assert view["call_wall"] == 100.0
    assert view["put_wall"] == 100.0
    # Just above 100 the 100 strike is no longer a call-wall candidate and is still a put-wall candidate.
    moved = compute_gex(four_contract_chain(), spot=100.01, now_ms=NOW_MS)
    assert moved["call_wall"] == 105.0 and moved["put_wall"] == 100.0


def test_walls_aggregate_across_expiries_before_ranking() -> None:
    # 110 has two modest call lines in two expiries; 120 one bigger line — the sum at 110 wins.
    e1, e2 = NOW_MS + 10 * DAY_MS, NOW_MS + 20 * DAY_MS
    c = chain(
        {"strike": 110, "settle_ms": e1, "call": True, "oi": 600, "gamma": 0.01, "expiry": "a"},
        {"strike": 110, "settle_ms": e2, "call": True, "oi": 600, "gamma": 0.01, "expiry": "b"},
        {"strike": 120, "settle_ms": e1, "call": True, "oi": 1000, "gamma": 0.01, "expiry": "a"},
    )
    assert compute_gex(c, spot=100, now_ms=NOW_MS)["call_wall"] == 110.0


def test_wall_ties_go_to_the_strike_nearest_spot() -> None:
    e = NOW_MS + 10 * DAY_MS
    c = chain(  # snapshot gammas (no IV): identical exposures at 110/120 and at 90/80
        {"strike": 120, "settle_ms": e, "call": True, "oi": 1000, "gamma": 0.01},
        {"strike": 110, "settle_ms": e, "call": True, "oi": 1000, "gamma": 0.01},
        {"strike": 80, "settle_ms": e, "call": False, "oi": 1000, "gamma": 0.01},
        {"strike": 90, "settle_ms": e, "call": False, "oi": 1000, "gamma": 0.01},
    )
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    assert view["call_wall"] == 110.0 and view["put_wall"] == 90.0


def test_no_candidate_means_no_wall() -> None:
    c = chain({"strike": 90, "settle_ms": NOW_MS + 10 * DAY_MS, "call": True, "oi": 100, "iv": 0.2})
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    assert view["call_wall"] is None and view["put_wall"] is None


# ---------------------------------------------------------------- profile and zero gamma


def test_no_crossing_gives_no_zero_gamma() -> None:
    c = chain({"strike": 100, "settle_ms": NOW_MS + 30 * DAY_MS, "call": True, "oi": 1000, "iv": 0.2})
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    assert view["zero_gamma"] is None and view["zero_gamma_crossings"] == []
    assert all(v > 0 for v in view["profile"]["net_gex"])


def test_empty_chain_is_a_valid_view() -> None:
    view = compute_gex(GexChain.from_rows([]), spot=100, now_ms=NOW_MS)
    assert set(view) == VIEW_KEYS
    assert view["net_gex"] == 0.0 and view["zero_gamma"] is None and view["by_strike"] == []
    assert view["surface"] == {"expiries": [], "strikes": [], "net_gex": []}
    assert_json_ready(view)


def test_every_crossing_is_reported_and_the_nearest_is_the_zero_gamma() -> None:
    # Puts low, calls mid, puts high: two crossings, the nearer one (above spot) is *the* zero gamma.
    e = NOW_MS + 30 * DAY_MS
    c = chain(
        {"strike": 92, "settle_ms": e, "call": False, "oi": 10_000, "iv": 0.1},
        {"strike": 101, "settle_ms": e, "call": True, "oi": 10_000, "iv": 0.1},
        {"strike": 108, "settle_ms": e, "call": False, "oi": 30_000, "iv": 0.1},
    )
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    crossings = view["zero_gamma_crossings"]
    assert len(crossings) == 2 and crossings == sorted(crossings)
    assert view["zero_gamma"] == min(crossings, key=lambda x: abs(x - 100))
    for x in crossings:
        assert abs(gex_profile(c, [x], now_ms=NOW_MS)[0]) < 1e-6 * view["abs_gex"]


def test_profile_grid_shape_and_spot_point_equals_net_gex() -> None:
    grid = profile_spots(100.0, 10.0, 0.1)
    assert grid.shape == (201,) and grid[100] == 100.0
    assert profile_spots(100.0, 5.0, 0.5).shape == (21,)
    with pytest.raises(ValueError):
        profile_spots(100.0, 0.0, 0.1)
    view = compute_gex(four_contract_chain(), spot=100, now_ms=NOW_MS, profile_half_width_pct=5, profile_step_pct=1)
    assert len(view["profile"]["spot"]) == 11
    assert view["profile"]["net_gex"][5] == pytest.approx(view["net_gex"], rel=1e-12)


def test_profile_matrix_matches_pointwise_black_scholes_on_a_large_chain() -> None:
    # More contracts than one evaluation block, including far OTM lines the profile skips as underflowing.
    rng = np.random.default_rng(3)
    n = 2_500
    strikes = np.round(100 * np.exp(rng.normal(0, 0.3, n)), 1)
    settle = NOW_MS + rng.integers(1, 400, n) * DAY_MS // 4
    calls, oi, iv = rng.random(n) < 0.5, rng.integers(1, 5000, n).astype(float), rng.uniform(0.05, 0.8, n)
    c = GexChain(strike=strikes, settle_ms=settle, is_call=calls, oi=oi, iv=iv, multiplier=np.full(n, 100.0),
                 snapshot_gamma=np.full(n, np.nan), expiry=np.full(n, "2030-06-01"))  # fmt: skip
    spots = [88.0, 97.3, 100.0, 111.0]
    t = np.maximum((settle - NOW_MS) / 1000, 1800) / gex.SECONDS_PER_YEAR
    sign = np.where(calls, 1.0, -1.0)
    expected = [float(np.sum(sign * oi * 100 * bs.gamma(s, strikes, t, iv) * s * s * 0.01)) for s in spots]
    got = gex_profile(c, spots, now_ms=NOW_MS)
    assert got == pytest.approx(expected, rel=1e-10)
    assert compute_gex(c, spot=100, now_ms=NOW_MS)["net_gex"] == pytest.approx(expected[2], rel=1e-10)


def test_rate_and_dividend_yield_reprice_the_profile() -> None:
    c = four_contract_chain()
    view = compute_gex(c, spot=100, now_ms=NOW_MS, rate=0.05, dividend_yield=0.02)
    t = np.array([30, 7, 7, 30]) / 365
    g = bs.gamma(100, np.array([105, 100, 100, 95.0]), t, np.array([0.18, 0.2, 0.21, 0.25]), 0.05, 0.02)
    expected = float(np.sum(np.array([1, 1, -1, -1]) * np.array([10_000, 5_000, 6_000, 12_000]) * 100 * g * 100))
    assert view["net_gex"] == pytest.approx(expected, rel=1e-12)
    assert view["profile"]["net_gex"][100] == pytest.approx(expected, rel=1e-12)
    assert view["rate"] == 0.05 and view["dividend_yield"] == 0.02


# ---------------------------------------------------------------- time, 0DTE, fallbacks


def test_zero_dte_uses_exact_time_to_settlement() -> None:
    today = "2030-01-18"
    settle = ny_ms(2030, 1, 18, 16)
    c = chain({"strike": 5000, "settle_ms": settle, "call": True, "oi": 1, "iv": 0.15, "expiry": today})
    for now, printed in ((ny_ms(2030, 1, 18, 10), "0.0203247"), (ny_ms(2030, 1, 18, 15), "0.0497853")):
        view = compute_gex(c, spot=5000, now_ms=now)
        gamma = view["net_gex"] / (100 * 5000**2 * 0.01)
        assert matches_printed(gamma, printed)
        zero = view["zero_dte"]
        assert zero["expiry"] == today and zero["contracts_used"] == 1
        assert zero["net_gex"] == view["net_gex"] and zero["call_wall"] == 5000.0
        assert zero["by_strike"] == view["by_strike"]


def test_zero_dte_near_the_close_is_floored_and_finite() -> None:
    settle = ny_ms(2030, 1, 18, 16)
    c = chain({"strike": 5000, "settle_ms": settle, "call": True, "oi": 1, "iv": 0.15, "expiry": "2030-01-18"})
    now = settle - 30_000  # 30 s before the close: T is floored at min_time_s = 1800 s
    view = compute_gex(c, spot=5000, now_ms=now)
    floored = float(bs.gamma(5000, 5000, 1800 / gex.SECONDS_PER_YEAR, 0.15)) * 100 * 5000**2 * 0.01
    assert view["net_gex"] == pytest.approx(floored, rel=1e-12)
    assert all(math.isfinite(v) for v in view["profile"]["net_gex"])
    assert compute_gex(c, spot=5000, now_ms=now, min_time_s=60)["net_gex"] > view["net_gex"]


def test_zero_dte_defaults_to_todays_new_york_date_and_can_be_chosen() -> None:
    e_today, e_next = ny_ms(2030, 1, 18, 16), ny_ms(2030, 1, 22, 16)
    c = chain(
        {"strike": 100, "settle_ms": e_today, "call": True, "oi": 10, "iv": 0.2, "expiry": "2030-01-18"},
        {"strike": 100, "settle_ms": e_next, "call": False, "oi": 10, "iv": 0.2, "expiry": "2030-01-22"},
    )
    # 23:30 UTC on the 18th is still the 18th in New York.
    late = ny_ms(2030, 1, 18, 15)
    assert gex.new_york_date(ny_ms(2030, 1, 18, 23, 30)) == "2030-01-18"
    view = compute_gex(c, spot=100, now_ms=late)
    assert view["zero_dte"]["expiry"] == "2030-01-18" and view["zero_dte"]["net_gex"] > 0
    chosen = compute_gex(c, spot=100, now_ms=late, zero_dte_date="2030-01-22")["zero_dte"]
    assert chosen["expiry"] == "2030-01-22" and chosen["net_gex"] < 0 and chosen["put_wall"] == 100.0
    # After today's settlement the 0DTE view is empty; it does not roll to the next expiry.
    after = compute_gex(c, spot=100, now_ms=ny_ms(2030, 1, 18, 16, 1))
    assert after["contracts_skipped"]["expired"] == 1
    assert after["zero_dte"] == {"expiry": "2030-01-18", "net_gex": None, "abs_gex": None, "zero_gamma": None,
                                 "zero_gamma_crossings": [], "call_wall": None, "put_wall": None, "by_strike": [],
                                 "contracts_used": 0}  # fmt: skip


def test_zero_dte_has_its_own_zero_gamma() -> None:
    today = ny_ms(2030, 1, 18, 16)
    c = chain(
        {"strike": 99, "settle_ms": today, "call": False, "oi": 1000, "iv": 0.2, "expiry": "2030-01-18"},
        {"strike": 101, "settle_ms": today, "call": True, "oi": 1000, "iv": 0.2, "expiry": "2030-01-18"},
        {"strike": 100, "settle_ms": today + 30 * DAY_MS, "call": True, "oi": 100_000, "iv": 0.2, "expiry": "x"},
    )
    view = compute_gex(c, spot=100, now_ms=ny_ms(2030, 1, 18, 10))
    assert view["zero_gamma"] is None
    assert view["zero_dte"]["zero_gamma"] == pytest.approx(100.0, abs=0.05)


def test_expired_contracts_are_dropped() -> None:
    c = chain(
        {"strike": 100, "settle_ms": NOW_MS - 1, "call": True, "oi": 1000, "iv": 0.2},
        {"strike": 100, "settle_ms": NOW_MS, "call": True, "oi": 1000, "iv": 0.2},  # at settlement: settled
        {"strike": 100, "settle_ms": NOW_MS + DAY_MS, "call": False, "oi": 1000, "iv": 0.2},
    )
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    assert view["contracts_skipped"]["expired"] == 2 and view["contracts_used"] == 1
    assert view["net_gex"] < 0 and view["by_strike"][0]["call_gex"] == 0.0


def test_missing_iv_uses_snapshot_gamma_held_constant_in_the_profile() -> None:
    e = NOW_MS + 7 * DAY_MS
    c = chain(
        {"strike": 100, "settle_ms": e, "call": True, "oi": 1000, "gamma": 0.05},  # no IV: fallback
        {"strike": 100, "settle_ms": e, "call": False, "oi": 1000},  # neither IV nor gamma: unusable
        {"strike": 100, "settle_ms": e, "call": False, "iv": 0.2},  # no OI
    )
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    assert view["contracts_skipped"] == {"expired": 0, "missing_iv_used_snapshot_gamma": 1, "no_gamma": 1, "no_oi": 1}
    assert view["contracts_used"] == 1
    assert view["net_gex"] == pytest.approx(0.05 * 1000 * 100 * 100**2 * 0.01, rel=1e-12)
    row = view["by_strike"][0]
    assert row["vanna"] == 0.0 and row["charm"] == 0.0
    # The profile keeps Γ_snapshot and scales it with S′².
    for s, value in zip(view["profile"]["spot"], view["profile"]["net_gex"], strict=True):
        assert value == pytest.approx(0.05 * 1000 * 100 * s * s * 0.01, rel=1e-12)


def test_vanna_and_charm_exposure_units_and_signs() -> None:
    c = four_contract_chain()
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    row = {r["strike"]: r for r in view["by_strike"]}[105.0]
    t = 30 / 365
    assert row["vanna"] == pytest.approx(float(bs.vanna(100, 105, t, 0.18)) * 10_000 * 100 * 100 * 0.01, rel=1e-12)
    assert row["charm"] == pytest.approx(float(bs.charm(100, 105, t, 0.18, True)) / 365 * 10_000 * 100 * 100,
                                         rel=1e-12)  # fmt: skip
    put = {r["strike"]: r for r in view["by_strike"]}[95.0]
    assert put["vanna"] == pytest.approx(-float(bs.vanna(100, 95, t, 0.25)) * 12_000 * 100 * 100 * 0.01, rel=1e-12)


def test_by_expiry_and_surface() -> None:
    view = compute_gex(four_contract_chain(), spot=100, now_ms=NOW_MS)
    assert [e["expiry"] for e in view["by_expiry"]] == ["2030-01-14", "2030-02-06"]
    near = view["by_expiry"][0]
    assert matches_printed(near["net_gex"], "-1,028,664.26")
    assert near["abs_gex"] == pytest.approx(7_201_216.07 + 8_229_880.33, abs=0.01)
    surface = view["surface"]
    assert surface["expiries"] == ["2030-01-14", "2030-02-06"] and surface["strikes"] == [95.0, 100.0, 105.0]
    assert surface["net_gex"][0][0] == 0.0 and matches_printed(surface["net_gex"][1][0], "-5,036,212.95")
    assert sum(map(sum, surface["net_gex"])) == pytest.approx(view["net_gex"], rel=1e-12)


def test_spot_must_be_positive() -> None:
    with pytest.raises(ValueError):
        compute_gex(four_contract_chain(), spot=0.0, now_ms=NOW_MS)


# ---------------------------------------------------------------- parsing Redis rows


def test_from_rows_parses_hash_strings_and_skips_what_it_cannot() -> None:
    settle = str(NOW_MS + 30 * DAY_MS)
    good = {"strike": "105", "expiry": "2030-02-06", "expiry_ts": settle, "cp": "C", "volume": "12", "oi": "10000",
            "multiplier": "100", "iv": "0.18", "gamma": "", "delta": "", "vega": "", "theta": ""}  # fmt: skip
    rows = [
        good,
        {**good, "strike": "95", "cp": "P", "iv": "", "gamma": "0.031"},
        {**good, "strike": "96", "iv": "nan", "oi": "-3"},  # NaN IV / negative OI → missing, row kept
        {**good, "cp": "X"},
        {**good, "expiry_ts": ""},
        {**good, "strike": "abc"},
        {**good, "multiplier": "0"},
        {k: v for k, v in good.items() if k != "expiry"},
    ]
    c = GexChain.from_rows(rows)
    assert len(c) == 3 and c.rows_skipped == 5
    assert c.strike.tolist() == [95.0, 96.0, 105.0]
    assert c.is_call.tolist() == [False, True, True]
    assert math.isnan(c.iv[0]) and c.snapshot_gamma[0] == 0.031
    assert math.isnan(c.iv[1]) and math.isnan(c.oi[1]) and math.isnan(c.snapshot_gamma[1])
    assert c.settle_ms[2] == NOW_MS + 30 * DAY_MS and c.expiry[2] == "2030-02-06"
    view = compute_gex(c, spot=100, now_ms=NOW_MS)
    assert view["contracts_skipped"] == {"expired": 0, "missing_iv_used_snapshot_gamma": 1, "no_gamma": 0, "no_oi": 1}
    assert matches_printed(view["by_strike"][-1]["call_gex"], "5,064,826.08")


field_text = st.one_of(
    st.none(), st.just(""), st.sampled_from(["0", "100", "0.18", "-3", "nan", "inf", "1e400", "abc", " 7 ", "C", "P"]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=1e4).map(repr),
)  # fmt: skip
hash_row = st.fixed_dictionaries({
    "strike": st.one_of(field_text, st.sampled_from(["95", "100", "105.5"])),
    "expiry": st.one_of(st.none(), st.just(""), st.sampled_from(["2030-02-06", "2030-03-15"])),
    "expiry_ts": st.one_of(st.none(), st.just(""), st.just("1.5"), st.integers(0, 2**40).map(str)),
    "cp": st.one_of(st.none(), st.sampled_from(["C", "P", "X", ""])),
    "oi": field_text, "iv": field_text, "multiplier": st.one_of(field_text, st.just("100")), "gamma": field_text,
})  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(hash_row, max_size=12))
def test_from_columns_is_from_rows(rows: list[dict]) -> None:
    """The GEX worker's vectorised parse gives exactly the row parser's chain, whatever the hashes hold."""
    by_rows = GexChain.from_rows([{k: v for k, v in row.items() if v is not None} for row in rows])
    by_columns = GexChain.from_columns([[row[name] for row in rows] for name in gex.ROW_FIELDS])
    assert by_columns.rows_skipped == by_rows.rows_skipped
    for name in ("strike", "settle_ms", "is_call", "oi", "iv", "multiplier", "snapshot_gamma", "expiry"):
        left, right = getattr(by_columns, name), getattr(by_rows, name)
        assert left.dtype.kind == right.dtype.kind or len(right) == 0, name
        assert left.tolist() == right.tolist() or np.array_equal(left, right, equal_nan=True), name


def test_chain_arrays_must_line_up() -> None:
    with pytest.raises(ValueError):
        GexChain(strike=[1.0, 2.0], settle_ms=[1], is_call=[True], oi=[1.0], iv=[0.2], multiplier=[100.0],
                 snapshot_gamma=[math.nan], expiry=["x"])  # fmt: skip


# ---------------------------------------------------------------- properties

row_strategy = st.fixed_dictionaries({
    "strike": st.sampled_from(["90", "95", "97.5", "100", "102.5", "105", "110"]),
    "expiry": st.sampled_from(["2030-01-07", "2030-01-14", "2030-02-06"]),
    "expiry_ts": st.sampled_from([str(NOW_MS - DAY_MS), str(ny_ms(2030, 1, 7, 16)), str(NOW_MS + 7 * DAY_MS),
                                  str(NOW_MS + 30 * DAY_MS)]),
    "cp": st.sampled_from(["C", "P"]),
    "oi": st.sampled_from(["", "0", "1", "250", "10000"]),
    "multiplier": st.sampled_from(["100", "10"]),
    "iv": st.sampled_from(["", "0.12", "0.2", "0.45"]),
    "gamma": st.sampled_from(["", "0.02", "0.1"]),
})  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(row_strategy, max_size=25), spot=st.floats(92, 108), data=st.data())
def test_totals_are_consistent_and_row_order_does_not_matter(
    rows: list[dict], spot: float, data: st.DataObject
) -> None:
    view = compute_gex(GexChain.from_rows(rows), spot=spot, now_ms=NOW_MS, profile_step_pct=0.5)
    net_by_strike = sum(r["net_gex"] for r in view["by_strike"])
    scale = max(view["abs_gex"], 1.0)
    assert view["net_gex"] == pytest.approx(net_by_strike, abs=1e-9 * scale)
    assert all(r["net_gex"] == pytest.approx(r["call_gex"] + r["put_gex"], abs=1e-9 * scale) for r in view["by_strike"])
    assert view["abs_gex"] >= abs(view["net_gex"]) - 1e-9 * scale
    assert sum(e["net_gex"] for e in view["by_expiry"]) == pytest.approx(view["net_gex"], abs=1e-9 * scale)
    assert view["contracts_used"] + sum(view["contracts_skipped"].values()) == len(rows) + view["contracts_skipped"][
        "missing_iv_used_snapshot_gamma"]  # fmt: skip
    assert view["zero_gamma"] is None or view["zero_gamma"] in view["zero_gamma_crossings"]
    assert_json_ready(view)
    shuffled = data.draw(st.permutations(rows))
    assert compute_gex(GexChain.from_rows(shuffled), spot=spot, now_ms=NOW_MS, profile_step_pct=0.5) == view


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_view_that_would_carry_a_non_finite_number_is_refused() -> None:
    """Inputs beyond any plausible bound (an OI of 1e308 written by an earlier version, a spot of 1e300) make
    products overflow: the model refuses, naming where, instead of a view with NaN/inf (JSON null)."""
    e30 = NOW_MS + 30 * DAY_MS
    huge_oi = chain({"strike": 100, "settle_ms": e30, "call": True, "oi": 1e308, "iv": 0.2})
    with pytest.raises(gex.NonFiniteView) as refused:
        compute_gex(huge_oi, spot=100, now_ms=NOW_MS)
    assert "gex" in refused.value.parts and "profile" in refused.value.parts
    bounded = {"strike": 100, "settle_ms": e30, "oi": 1e7, "multiplier": 1000}  # the chain's bounds at their edge
    sane = chain({**bounded, "call": True, "iv": 0.2}, {**bounded, "call": False, "gamma": 1e5})
    with pytest.raises(gex.NonFiniteView):
        compute_gex(sane, spot=1e300, now_ms=NOW_MS)
    # two contracts of 1e308 $ each (finite) whose sum overflows
    huge = {"strike": 100, "settle_ms": e30, "call": True, "oi": 1e303, "multiplier": 1000, "gamma": 1.0}
    overflow = chain(huge, huge)
    with pytest.raises(gex.NonFiniteView):
        compute_gex(overflow, spot=100, now_ms=NOW_MS)
    view = compute_gex(sane, spot=1e6, now_ms=NOW_MS)  # the bounds' extremes stay finite
    assert all(math.isfinite(x) for x in (view["net_gex"], view["abs_gex"], *view["profile"]["net_gex"]))
