"""Fault injection on snapshot pages, armed through the admin endpoint and the CLI config."""

from __future__ import annotations

import time

import pytest
import requests

from sim.config import parse_fault
from tests.sim.simkit import ThreadedSim, make_sim


def test_429_with_retry_after(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="429", count=2, retry_after_s=3)
    for _ in range(2):
        resp = fresh_sim.get("SPY")
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == "3"
        assert resp.json()["status"] == "ERROR"
        assert resp.json()["error"].startswith("You've exceeded the maximum requests per minute")
    assert fresh_sim.get("SPY").status_code == 200
    assert fresh_sim.admin("status")["faults"] == []


def test_500_after_pages(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="500", count=1, after_pages=1)
    assert fresh_sim.get("SPY").status_code == 200
    assert fresh_sim.get("SPY").status_code == 500
    assert fresh_sim.get("SPY").status_code == 200


def test_slow_page(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="slow", count=1, delay_ms=400)
    start = time.monotonic()
    assert fresh_sim.get("SPY").status_code == 200
    assert time.monotonic() - start >= 0.4
    start = time.monotonic()
    fresh_sim.get("SPY")
    assert time.monotonic() - start < 0.4


def test_break_mid_pagination(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="break", count=1, after_pages=2)
    first = fresh_sim.get("SPY", limit=50).json()
    second = requests.get(first["next_url"], headers={"Authorization": "Bearer k"}, timeout=10).json()
    with pytest.raises(requests.ConnectionError):
        requests.get(second["next_url"], headers={"Authorization": "Bearer k"}, timeout=10)
    third = requests.get(second["next_url"], headers={"Authorization": "Bearer k"}, timeout=10)
    assert third.status_code == 200  # the same cursor resumes after the break


def test_invalid_json(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="invalid_json")
    resp = fresh_sim.get("SPY")
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()


def test_repeat_cursor(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="repeat_cursor", count=1)
    first = fresh_sim.get("SPY", limit=20).json()  # no cursor: unaffected
    second = requests.get(first["next_url"], headers={"Authorization": "Bearer k"}, timeout=10).json()
    assert second["next_url"] == first["next_url"]
    third = requests.get(second["next_url"], headers={"Authorization": "Bearer k"}, timeout=10).json()
    assert third["next_url"] != first["next_url"]


def test_clear_and_unknown_kind(fresh_sim: ThreadedSim) -> None:
    fresh_sim.admin("fault", kind="500", count=0)  # 0 = until cleared
    assert fresh_sim.get("SPY").status_code == 500
    assert fresh_sim.get("SPY").status_code == 500
    fresh_sim.admin("faults/clear")
    assert fresh_sim.get("SPY").status_code == 200
    assert requests.get(f"{fresh_sim.url}/admin/fault", params={"kind": "boom"}, timeout=5).status_code == 400


def test_faults_from_config_and_page_delay() -> None:
    assert parse_fault("break").after_pages == 1
    assert parse_fault("429:3").count == 3
    server = make_sim(underlyings=("QQQ",), faults=(parse_fault("500:1"),), page_delay_ms=150, tick_rate=100.0)
    try:
        start = time.monotonic()
        assert server.get("QQQ").status_code == 500
        assert server.get("QQQ").status_code == 200
        assert time.monotonic() - start >= 0.3
    finally:
        server.stop()
