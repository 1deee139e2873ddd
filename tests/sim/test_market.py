"""The market model without a server: determinism, counts, calendar, settlement, topology, pricing."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np

from sim import pricing, tickers
from sim.calendar import settlement_ns, third_friday
from sim.market import Market
from tests.sim.simkit import CLOCK, ThreadedSim


def _market(seed: int = 7, underlyings: tuple[str, ...] = ("SPY", "SPX")) -> Market:
    return Market(seed, CLOCK, underlyings, tick_rate=20_000)


def test_determinism_same_seed_and_clock() -> None:
    a, b = _market(), _market()
    for _ in range(10):
        ea, eb = a.step(0.05), b.step(0.05)
        assert [len(x) for x in ea.options] == [len(x) for x in eb.options]
        for x, y in zip(ea.options, eb.options, strict=True):
            assert np.array_equal(x.idx, y.idx) and np.array_equal(x.price, y.price) and np.array_equal(x.q, y.q)
        assert ea.stock_trades == eb.stock_trades and ea.index_values == eb.index_values
    assert a.snapshot_rows("I:SPX") == b.snapshot_rows("I:SPX")
    assert a.snapshot_rows("SPY") == b.snapshot_rows("SPY")
    assert _market(seed=8).snapshot_rows("SPY")[:50] != a.snapshot_rows("SPY")[:50]


def test_contract_counts_and_roots() -> None:
    m = _market(underlyings=("SPY", "SPX", "QQQ"))
    counts = m.contract_counts()
    assert 8000 <= counts["SPY"] <= 10500 and 8000 <= counts["QQQ"] <= 11000
    assert 15000 <= counts["I:SPX"] <= 21000
    spx = m.chain("I:SPX")
    assert spx is not None and m.chain("SPX") is None
    roots = set(spx.cols["root"].tolist())
    assert roots == {"SPX", "SPXW"}
    monthly = spx.cols["root"] == "SPX"
    assert spx.cols["am"][monthly].all() and not spx.cols["am"][~monthly].any()
    days = {date.fromisoformat(str(d)) for d in spx.cols["expiry"][monthly]}
    assert all(d == third_friday(d.year, d.month) for d in days)
    spy = m.chain("SPY")
    assert spy is not None
    near = spy.cols["strike"][(np.abs(spy.cols["strike"] - spy.spot) < 10)]
    assert set(np.diff(np.unique(near)).tolist()) == {1.0}
    expiries = sorted({str(d) for d in spy.cols["expiry"]})
    assert expiries[0] == "2025-11-24" and expiries[-1] >= "2026-11-01"


def test_settlement_removes_expiries_at_the_real_instant() -> None:
    # 2025-11-21 is a third Friday: SPX AM settles 09:30 New York (14:30 UTC), SPXW/SPY at 16:00 (21:00 UTC)
    m = Market(7, datetime(2025, 11, 21, 14, 29, 59, tzinfo=UTC), ("SPY", "SPX"), tick_rate=0)
    spx, spy = m.chain("I:SPX"), m.chain("SPY")
    assert spx is not None and spy is not None
    friday = np.datetime64("2025-11-21")
    assert ((spx.cols["root"] == "SPX") & (spx.cols["expiry"] == friday)).any()
    m.step(2.0)
    assert not ((spx.cols["root"] == "SPX") & (spx.cols["expiry"] == friday)).any()
    assert ((spx.cols["root"] == "SPXW") & (spx.cols["expiry"] == friday)).any()
    assert (spy.cols["expiry"] == friday).any()
    m.now_ns = settlement_ns(date(2025, 11, 21), False) - 1_000_000_000
    m.step(2.0)
    assert not (spx.cols["expiry"] == friday).any() and not (spy.cols["expiry"] == friday).any()


def test_weekend_trades_on() -> None:
    m = Market(3, datetime(2025, 11, 23, 3, 0, tzinfo=UTC), ("SPY",), tick_rate=10_000)
    assert m.step(0.1).n_events > 100
    assert min(str(d) for d in m.chains["SPY"].cols["expiry"]) == "2025-11-24"


def test_topology_actions_in_process() -> None:
    m = _market(underlyings=("SPY",))
    n0 = m.contract_counts()["SPY"]
    n1 = m.topology("SPY", "list_expiry")
    assert n1 > n0
    n2 = m.topology("SPY", "add_strikes")
    assert n2 > n1
    n3 = m.topology("SPY", "expire_0dte")
    assert n3 < n2
    assert "2025-11-24" not in {str(d) for d in m.chains["SPY"].cols["expiry"]}


def test_topology_admin(fresh_sim: ThreadedSim) -> None:
    before = fresh_sim.admin("status")["underlyings"]["SPY"]
    r = fresh_sim.admin("topology", underlying="SPY", action="list_expiry")
    assert r["contracts"] > before["contracts"]
    assert fresh_sim.admin("topology", underlying="SPY", action="add_strikes")["contracts"] > r["contracts"]
    after = fresh_sim.admin("topology", underlying="SPY", action="expire_0dte")["contracts"]
    status = fresh_sim.admin("status")["underlyings"]["SPY"]
    assert status["contracts"] == after and status["topology_version"] > before["topology_version"]
    body = fresh_sim.get("SPY", limit=1).json()
    assert body["results"][0]["details"]["expiration_date"] > "2025-11-24"


def test_topology_schedule() -> None:
    m = Market(7, CLOCK, ("SPY",), tick_rate=0, topology_every_s=0.1)
    changed = [m.step(0.05).topology_changed for _ in range(6)]
    assert sum(bool(c) for c in changed) >= 2


def test_tick_rate_and_trade_mix() -> None:
    m = _market()
    n = sum(m.step(0.05).n_events for _ in range(20))
    assert 15_000 < n < 25_000
    batch = m.step(0.05).options[0]
    share = float((batch.kind == 0).mean())
    assert 0.05 < share < 0.3


def test_tickers_roundtrip() -> None:
    assert tickers.encode("SPY", date(2025, 12, 19), True, 650) == "O:SPY251219C00650000"
    assert tickers.encode("SPXW", date(2023, 7, 12), True, 4500) == "O:SPXW230712C04500000"
    assert tickers.encode("X", date(2023, 7, 12), False, 4.5) == "O:X230712P00004500"
    assert tickers.decode("O:SPXW230712C04500000") == ("SPXW", date(2023, 7, 12), True, 4500.0)


def test_black_scholes_sanity() -> None:
    s, k, t, v = 100.0, np.array([100.0]), np.array([1.0]), np.array([0.2])
    call = pricing.price(s, k, t, v, np.array([True]), r=0.0, q=0.0)
    put = pricing.price(s, k, t, v, np.array([False]), r=0.0, q=0.0)
    assert abs(call[0] - 7.9656) < 1e-3 and abs(call[0] - put[0]) < 1e-9
    g = pricing.greeks(s, k, t, v, np.array([True]), r=0.0, q=0.0)
    assert abs(g["delta"][0] - 0.5398) < 1e-3
    iv = pricing.smile(100.0, np.array([80.0, 100.0, 120.0]), np.array([0.25] * 3), 0.15)
    assert iv[0] > iv[1] and iv[2] > iv[1] * 0.8  # put skew
