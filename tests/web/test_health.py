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
