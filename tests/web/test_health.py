"""The pure freshness judgement behind ``/healthz``."""

from __future__ import annotations

from web.health import HealthInputs, assess_health

NOW = 1_800_000_000_000


def _inputs(**over: object) -> HealthInputs:
    base = HealthInputs(
        ingest={"connected": "1", "updated_ms": str(NOW - 1000), "events_per_s": "100", "rejects": "{}"},
        epochs={"SPY": "e1"},
        spots={"SPY": {"price": "500.5", "ts_ms": str(NOW)}},
        cadences={"SPY": {"latency_ms_last": "400", "interval_s": "5"}},
        views={
            ("heatmap", "SPY"): {"version": 3, "as_of_ms": NOW - 500, "epoch": "e1"},
            ("gex", "SPY"): {"version": 2, "as_of_ms": NOW - 2000, "epoch": "e1"},
        },
    )
    for name, value in over.items():
        setattr(base, name, value)
    return base


def test_fresh_everything_is_healthy() -> None:
    healthy, body = assess_health(_inputs(), now_ms=NOW, stale_view_s=30)
    assert healthy and body["status"] == "ok" and body["problems"] == []
    assert body["underlyings"]["SPY"]["views"]["gex"]["age_s"] == 2.0
    assert body["underlyings"]["SPY"]["chain"]["latency_ms_last"] == 400.0
    assert body["ingest"]["age_s"] == 1.0


def test_stale_view_missing_view_and_ingest_problems_are_named() -> None:
    views = {("heatmap", "SPY"): {"version": 3, "as_of_ms": NOW - 31_000, "epoch": "e1"}, ("gex", "SPY"): None}
    healthy, body = assess_health(_inputs(views=views, ingest=None), now_ms=NOW, stale_view_s=30)
    assert not healthy
    assert body["problems"] == [
        "ingest status missing",
        "heatmap:SPY view stale (age 31.0 s > 30 s)",
        "gex:SPY view not published",
    ]


def test_old_or_disconnected_ingest_is_stale() -> None:
    ingest = {"connected": "0", "updated_ms": str(NOW - 60_000)}
    healthy, body = assess_health(_inputs(ingest=ingest), now_ms=NOW, stale_view_s=30)
    assert not healthy
    assert body["problems"] == ["ingest disconnected", "ingest status stale (age 60.0 s > 30 s)"]


def test_a_connection_silent_while_others_talk_is_a_problem_all_quiet_only_a_warning() -> None:
    ingest = {"connected": "1", "updated_ms": str(NOW - 1000), "silent_after_s": "30",
              "silent": '{"connections": ["options-0"], "talking": true}'}  # fmt: skip
    healthy, body = assess_health(_inputs(ingest=ingest), now_ms=NOW, stale_view_s=30)
    assert not healthy
    assert body["problems"] == ["ingest connection(s) options-0 silent for 30 s or more while others talk"]
    assert body["ingest"]["silent_connections"] == ["options-0"]
    quiet = {**ingest, "silent": '{"connections": ["options-0", "stocks"], "talking": false}'}
    healthy, body = assess_health(_inputs(ingest=quiet), now_ms=NOW, stale_view_s=30)
    assert healthy and body["warnings"] == [
        "every ingest connection silent for 30 s or more (a closed market, or no feed)"
    ]


def test_a_supervised_process_that_is_down_is_a_problem_a_restarted_one_a_warning() -> None:
    processes = {
        "host/web": {"running": True, "restarts": 2, "last_exit": -9},
        "host/ingest": {"running": False, "restarts": 1, "last_exit": 1, "restart_in_s": 1.5},
    }
    healthy, body = assess_health(_inputs(processes=processes), now_ms=NOW, stale_view_s=30)
    assert not healthy
    assert body["problems"] == ["process host/ingest down (exit 1, restart in 1.5 s, 1 restarts)"]
    assert body["warnings"] == ["process host/web restarted 2 times (last exit -9)"]
    assert body["processes"] == processes
