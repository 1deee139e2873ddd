"""WebSocket feeds: handshake, auth, subscriptions, quote cap, sequencing, spot feeds, drops."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.sim.simkit import ThreadedSim


@contextmanager
def _open(sim: ThreadedSim, feed: str = "options", key: str = "k") -> Iterator[ClientConnection]:
    with connect(f"{sim.ws_url}/{feed}", max_size=None) as ws:
        connected = orjson.loads(ws.recv(5))
        assert connected == [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
        ws.send(orjson.dumps({"action": "auth", "params": key}).decode())
        assert orjson.loads(ws.recv(5))[0]["status"] == "auth_success"
        yield ws


def _send(ws: ClientConnection, action: str, params: str) -> list[dict]:
    ws.send(orjson.dumps({"action": action, "params": params}).decode())
    while True:  # skip data frames until the reply
        msgs = orjson.loads(ws.recv(5))
        if msgs and msgs[0]["ev"] == "status":
            return msgs


def _collect(ws: ClientConnection, seconds: float) -> list[dict]:
    out: list[dict] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.extend(orjson.loads(ws.recv(max(end - time.monotonic(), 0.01))))
        except TimeoutError:
            break
    return out


def _collect_until(ws: ClientConnection, enough: Callable[[list[dict]], bool], timeout_s: float = 60.0) -> list[dict]:
    """Events until ``enough(events)`` holds (failing after ``timeout_s``: a loaded machine may be slow)."""
    out: list[dict] = []
    end = time.monotonic() + timeout_s
    while not enough(out):
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not within {timeout_s} s: {len(out)} events")
        try:
            out.extend(orjson.loads(ws.recv(min(left, 1.0))))
        except TimeoutError:
            continue
    return out


def _near_money(sim: ThreadedSim, n: int) -> list[str]:
    rows = sim.get(
        "SPY",
        limit=250,
        sort="strike_price",
        **{"strike_price.gte": 640, "strike_price.lte": 670, "expiration_date.lte": "2025-11-28"},
    ).json()["results"]
    return [r["details"]["ticker"] for r in rows][:n]


def test_handshake_and_auth_failed() -> None:
    from tests.sim.simkit import make_sim

    keyed = make_sim(api_key="secret", underlyings=("QQQ",), tick_rate=100.0)
    try:
        with connect(f"{keyed.ws_url}/options") as ws:
            ws.recv(5)
            ws.send('{"action":"subscribe","params":"T.*"}')
            assert orjson.loads(ws.recv(5))[0]["status"] == "error"  # before auth
            ws.send('{"action":"auth","params":"wrong"}')
            assert orjson.loads(ws.recv(5)) == [
                {"ev": "status", "status": "auth_failed", "message": "authentication failed"}
            ]
            with pytest.raises(ConnectionClosed):
                ws.recv(5)
        with _open(keyed, key="secret"):
            pass
    finally:
        keyed.stop()


def test_trade_wildcard_and_sequences(sim: ThreadedSim) -> None:
    with _open(sim) as ws:
        reply = _send(ws, "subscribe", "T.*")
        assert reply == [{"ev": "status", "status": "success", "message": "subscribed to: T.*"}]
        events = _collect_until(ws, lambda got: len(got) > 50 and any(e["sym"].startswith("O:SPXW") for e in got)
                                and any(e["sym"].startswith("O:SPY") for e in got))  # fmt: skip
        assert len(events) > 50
        assert {e["ev"] for e in events} == {"T"}
        last: dict[str, int] = {}
        for e in events:
            assert set(e) == {"ev", "sym", "x", "p", "s", "c", "t", "q"}
            assert e["sym"].startswith("O:") and e["t"] > 10**12 and e["t"] < 10**13
            assert e["q"] > last.get(e["sym"], -1)
            last[e["sym"]] = e["q"]
        assert any(e["sym"].startswith("O:SPXW") for e in events) and any(e["sym"].startswith("O:SPY") for e in events)


def test_quotes_only_for_subscribed(sim: ThreadedSim) -> None:
    tickers = _near_money(sim, 40)
    with _open(sim) as ws:
        reply = _send(ws, "subscribe", ",".join(f"Q.{t}" for t in tickers) + f",T.{tickers[0]}")
        assert len(reply) == 41 and all(m["status"] == "success" for m in reply)
        events = _collect_until(ws, lambda got: sum(e["ev"] == "Q" for e in got) >= 5)
        assert {e["sym"] for e in events} <= set(tickers)
        quotes = [e for e in events if e["ev"] == "Q"]
        assert quotes and all(e["bp"] <= e["ap"] for e in quotes)
        assert set(quotes[0]) == {"ev", "sym", "bx", "ax", "bp", "ap", "bs", "as", "t", "q"}
        assert all(e["sym"] == tickers[0] for e in events if e["ev"] == "T")
        last: dict[str, int] = {}
        for e in events:
            assert e["q"] > last.get(e["sym"], -1)
            last[e["sym"]] = e["q"]
        reply = _send(ws, "unsubscribe", ",".join(f"Q.{t}" for t in tickers[1:]))
        assert reply[0] == {"ev": "status", "status": "success", "message": f"unsubscribed to: Q.{tickers[1]}"}
        later = _collect(ws, 1.0)
        assert {e["sym"] for e in later} <= {tickers[0]}


def test_quote_cap(sim: ThreadedSim) -> None:
    with _open(sim) as ws:
        first = [f"Q.O:SPY260116C{k * 1000:08d}" for k in range(1, 991)]
        assert all(m["status"] == "success" for m in _send(ws, "subscribe", ",".join(first)))
        extra = [f"Q.O:SPY260116P{k * 1000:08d}" for k in range(1, 21)]
        reply = _send(ws, "subscribe", ",".join(extra))
        assert [m["status"] for m in reply].count("success") == 10
        errors = [m for m in reply if m["status"] == "error"]
        assert len(errors) == 1 and "1000" in errors[0]["message"] and extra[10] in errors[0]["message"]
        assert "wildcard" in _send(ws, "subscribe", "Q.*")[0]["message"]
        assert _send(ws, "subscribe", "X.foo")[0]["status"] == "error"


def test_stocks_and_indices(sim: ThreadedSim) -> None:
    with _open(sim, "stocks") as stocks:
        _send(stocks, "subscribe", "T.SPY")
        trades = _collect_until(stocks, bool)
        assert trades and {e["sym"] for e in trades} == {"SPY"} and all(e["ev"] == "T" for e in trades)
    with _open(sim, "indices") as indices:
        _send(indices, "subscribe", "V.I:SPX")
        values = _collect_until(indices, bool)
        assert values and all(e["ev"] == "V" and e["T"] == "I:SPX" and 1000 < e["val"] < 20000 for e in values)
        assert set(values[0]) == {"ev", "val", "T", "t"}


def test_drop_connections(sim: ThreadedSim) -> None:
    with _open(sim) as ws:
        _send(ws, "subscribe", "T.*")
        assert sim.admin("status")["connections"] >= 1
        assert sim.admin("drop_connections")["dropped"] >= 1
        with pytest.raises(ConnectionClosed):
            _collect(ws, 2.0)
        with _open(sim):
            pass


def test_bad_messages(sim: ThreadedSim) -> None:
    with _open(sim) as ws:
        ws.send("not json")
        assert orjson.loads(ws.recv(5))[0]["status"] == "error"
        ws.send('{"action":"dance"}')
        assert orjson.loads(ws.recv(5))[0]["status"] == "error"
