"""REST snapshot: pagination, filters, sorting, limits, auth and the result shape."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from tests.sim.simkit import ThreadedSim, fetch_all, make_sim


def test_pagination_returns_every_contract_once(sim: ThreadedSim) -> None:
    counts = sim.admin("status")["underlyings"]
    for underlying in ("SPY", "I:SPX"):
        rows = fetch_all(sim, underlying, limit=250)
        tickers = [r["details"]["ticker"] for r in rows]
        assert len(tickers) == len(set(tickers)) == counts[underlying]["contracts"]
        assert tickers == sorted(tickers)


def test_index_chain_has_both_roots_and_value(sim: ThreadedSim) -> None:
    rows = fetch_all(sim, "I:SPX", limit=250, **{"expiration_date.lte": "2026-01-16"})
    roots = {r["details"]["ticker"][2:-15] for r in rows}
    assert roots == {"SPX", "SPXW"}
    spx = [r for r in rows if r["details"]["ticker"][2:-15] == "SPX"]
    assert {r["details"]["exercise_style"] for r in rows} == {"european"}
    assert spx and all(r["underlying_asset"]["ticker"] == "I:SPX" for r in rows)
    assert "value" in rows[0]["underlying_asset"] and "price" not in rows[0]["underlying_asset"]


def test_next_url_is_absolute_without_key(sim: ThreadedSim) -> None:
    body = sim.get("SPY", key=None, apiKey="query-key", limit=5).json()
    url = urlsplit(body["next_url"])
    assert url.scheme == "http" and url.netloc == f"127.0.0.1:{sim.port}"
    assert url.path == "/v3/snapshot/options/SPY"
    assert set(parse_qs(url.query)) == {"cursor"}
    assert "query-key" not in body["next_url"]
    nxt = requests.get(body["next_url"], params={"apiKey": "query-key"}, timeout=10).json()
    assert len(nxt["results"]) == 5
    assert nxt["results"][0]["details"]["ticker"] > body["results"][-1]["details"]["ticker"]


def test_default_limit_and_limit_bounds(sim: ThreadedSim) -> None:
    assert len(sim.get("SPY").json()["results"]) == 10
    assert len(sim.get("SPY", limit=250).json()["results"]) == 250
    for bad in (251, 0, "x"):
        resp = sim.get("SPY", limit=bad)
        assert resp.status_code == 400
        assert resp.json()["status"] == "ERROR"


def test_invalid_params_rejected(sim: ThreadedSim) -> None:
    for params in (
        {"sort": "volume"},
        {"order": "up"},
        {"contract_type": "future"},
        {"expiration_date.gte": "soon"},
        {"strike_price.lt": "abc"},
        {"cursor": "garbage!"},
    ):
        assert sim.get("SPY", **params).status_code == 400, params


def test_filters(sim: ThreadedSim) -> None:
    every = fetch_all(sim, "SPY", limit=250)
    expiries = sorted({r["details"]["expiration_date"] for r in every})
    exp = expiries[3]
    cases = [
        ({"contract_type": "put"}, lambda r: r["details"]["contract_type"] == "put"),
        ({"expiration_date": exp}, lambda r: r["details"]["expiration_date"] == exp),
        ({"expiration_date.gt": exp}, lambda r: r["details"]["expiration_date"] > exp),
        (
            {"expiration_date.gte": expiries[1], "expiration_date.lt": expiries[4]},
            lambda r: expiries[1] <= r["details"]["expiration_date"] < expiries[4],
        ),
        ({"strike_price.gte": 650, "strike_price.lte": 660}, lambda r: 650 <= r["details"]["strike_price"] <= 660),
        (
            {"strike_price": 655, "contract_type": "call"},
            lambda r: r["details"]["strike_price"] == 655 and r["details"]["contract_type"] == "call",
        ),
        (
            {"strike_price.gt": 700, "expiration_date.lte": expiries[2]},
            lambda r: r["details"]["strike_price"] > 700 and r["details"]["expiration_date"] <= expiries[2],
        ),
    ]
    for params, pred in cases:
        got = fetch_all(sim, "SPY", limit=250, **params)
        want = [r["details"]["ticker"] for r in every if pred(r)]
        assert want, params
        assert [r["details"]["ticker"] for r in got] == want, params


def test_sorts_across_pages(sim: ThreadedSim) -> None:
    base = {"strike_price.gte": 640, "strike_price.lte": 670, "limit": 37}
    for sort, key in (
        ("strike_price", lambda r: r["details"]["strike_price"]),
        ("expiration_date", lambda r: r["details"]["expiration_date"]),
        ("ticker", lambda r: r["details"]["ticker"]),
    ):
        for order in ("asc", "desc"):
            rows = fetch_all(sim, "SPY", sort=sort, order=order, **base)
            keys = [key(r) for r in rows]
            assert keys == sorted(keys, reverse=order == "desc"), (sort, order)
            tickers = [r["details"]["ticker"] for r in rows]
            assert len(tickers) == len(set(tickers)) > 37 * 3


def test_auth(sim: ThreadedSim) -> None:
    assert sim.get("SPY", key="abc").status_code == 200
    assert sim.get("SPY", key=None, apiKey="abc").status_code == 200
    for resp in (sim.get("SPY", key=None), sim.get("SPY", key=None, apiKey="")):
        assert resp.status_code == 401
        assert resp.json() == {"status": "ERROR", "error": "Unknown API Key"}
        assert resp.headers["Content-Type"].startswith("application/json")


def test_api_key_enforced() -> None:
    keyed = make_sim(api_key="secret", underlyings=("QQQ",), tick_rate=100.0)
    try:
        assert keyed.get("QQQ", key="secret").status_code == 200
        assert keyed.get("QQQ", key=None, apiKey="secret").status_code == 200
        assert keyed.get("QQQ", key="other").status_code == 401
    finally:
        keyed.stop()


def test_unknown_underlying_is_empty_ok(sim: ThreadedSim) -> None:
    for name in ("AAPL", "SPX"):  # index chains answer only under I:SPX
        body = sim.get(name).json()
        assert body["status"] == "OK" and body["results"] == [] and "next_url" not in body


def test_result_shape(sim: ThreadedSim) -> None:
    rows = fetch_all(sim, "SPY", limit=250, **{"expiration_date.lte": "2025-12-31"})
    row = next(r for r in rows if "last_trade" in r and "greeks" in r)
    assert set(row) == {
        "break_even_price",
        "day",
        "details",
        "greeks",
        "implied_volatility",
        "last_quote",
        "last_trade",
        "open_interest",
        "underlying_asset",
    }
    assert row["last_quote"]["last_updated"] > 10**18 and row["last_trade"]["sip_timestamp"] > 10**18
    assert row["last_quote"]["bid"] <= row["last_quote"]["ask"]
    assert "volume" in row["day"] and "price" in row["underlying_asset"]
    assert any("greeks" not in r and "implied_volatility" not in r for r in rows)  # some deep ITM
    oi_round = [r["open_interest"] for r in rows if r["details"]["strike_price"] % 10 == 0]
    oi_other = [r["open_interest"] for r in rows if r["details"]["strike_price"] % 5 != 0]
    assert sum(oi_round) / len(oi_round) > sum(oi_other) / len(oi_other)
