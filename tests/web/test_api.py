"""``/api``, ``/healthz``, the bearer token and CORS against a real server and Redis."""

from __future__ import annotations

import time

import redis
import requests

from tests.web.conftest import SseStream, WebServer
from tests.web.views import gex_view, heatmap_view, now_ms, publish_view, set_chain_state, set_ingest_status

TOKEN = "s3cret-token-do-not-log-4f9a"


def _publish_all(r: redis.Redis, *, as_of_ms: int | None = None) -> None:
    for u, spot, width in (("SPY", 512.3, 1.0), ("SPX", 5123.0, 5.0)):
        set_chain_state(r, u, "e1", spot)
        publish_view(r, heatmap_view(u, spot=spot, width=width, as_of_ms=as_of_ms))
        publish_view(r, gex_view(u, spot=spot, step=width, as_of_ms=as_of_ms))


def test_api_returns_the_exact_stored_bytes(web: WebServer, r: redis.Redis) -> None:
    _, raw = publish_view(r, heatmap_view("SPY", spot=512.3))
    response = requests.get(f"{web.url}/api/models/heatmap/spy", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == raw


def test_api_404_when_unknown_or_not_yet_published(web: WebServer, r: redis.Redis) -> None:
    response = requests.get(f"{web.url}/api/models/gex/SPX", timeout=5)
    assert response.status_code == 404
    body = response.json()
    assert body["detail"] == "no gex view of SPX published yet"
    assert body["published"] == {"heatmap": {"SPY": None, "SPX": None}, "gex": {"SPY": None, "SPX": None}}
    response = requests.get(f"{web.url}/api/models/vol/SPX", timeout=5)
    assert response.status_code == 404 and response.json()["models"] == ["heatmap", "gex"]


def test_no_cors_headers_by_default(web: WebServer, r: redis.Redis) -> None:
    publish_view(r, gex_view("SPY", spot=500.0))
    response = requests.get(f"{web.url}/api/models/gex/SPY", headers={"Origin": "https://evil.example"}, timeout=5)
    assert response.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in response.headers)
    preflight = requests.options(
        f"{web.url}/api/models/gex/SPY",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        timeout=5,
    )
    assert not any(h.lower().startswith("access-control-") for h in preflight.headers)


def test_healthz_200_when_everything_is_fresh(web: WebServer, r: redis.Redis) -> None:
    _publish_all(r)
    set_ingest_status(r)
    response = requests.get(f"{web.url}/healthz", timeout=5)
    body = response.json()
    assert response.status_code == 200, body["problems"]
    assert body["status"] == "ok" and body["redis"]["reachable"] is True
    spy = body["underlyings"]["SPY"]
    assert spy["epoch"] == "e1" and spy["spot"] == 512.3 and spy["chain"]["latency_ms_last"] == 412.0
    assert spy["views"]["gex"]["age_s"] < 5 and spy["views"]["heatmap"]["version"] == 1
    assert body["ingest"]["events_per_s"] == 1834.5 and body["ingest"]["lag_ms_p99"] == 18.7


def test_healthz_503_when_a_view_is_stale(web: WebServer, r: redis.Redis) -> None:
    _publish_all(r)
    set_ingest_status(r)
    publish_view(r, gex_view("SPX", spot=5123.0, step=5.0, as_of_ms=now_ms() - 45_000))
    response = requests.get(f"{web.url}/healthz", timeout=5)
    assert response.status_code == 503
    assert [p.split(" (")[0] for p in response.json()["problems"]] == ["gex:SPX view stale"]


def test_healthz_503_when_ingest_status_is_missing_or_old(web: WebServer, r: redis.Redis) -> None:
    _publish_all(r)
    response = requests.get(f"{web.url}/healthz", timeout=5)
    assert response.status_code == 503 and response.json()["problems"] == ["ingest status missing"]
    set_ingest_status(r, updated_ms=now_ms() - 120_000)
    response = requests.get(f"{web.url}/healthz", timeout=5)
    assert response.status_code == 503
    assert [p.split(" (")[0] for p in response.json()["problems"]] == ["ingest status stale"]


def test_bearer_token_is_enforced_and_never_logged(redis_server: object, r: redis.Redis) -> None:
    server = WebServer(MMAKER_WEB_TOKEN=TOKEN, MMAKER_WEB_CORS_ORIGINS="https://desk.example").start()
    try:
        _, raw = publish_view(r, gex_view("SPY", spot=500.0))
        api = f"{server.url}/api/models/gex/SPY"
        assert requests.get(api, timeout=5).status_code == 401
        wrong = requests.get(api, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        ok = requests.get(api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and ok.content == raw
        assert requests.get(f"{server.url}/stream/gex/SPY", timeout=5).status_code == 401
        stream = SseStream(f"{server.url}/stream/gex/SPY", headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            event = stream.next(timeout=5)
            assert event is not None and event["data"] == raw.decode()
        finally:
            stream.close()
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code in (200, 503)  # open, like a probe
        # CORS only for the configured origin
        allowed = requests.get(
            api, headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://desk.example"}, timeout=5
        )
        assert allowed.headers["access-control-allow-origin"] == "https://desk.example"
        other = requests.get(
            api, headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"}, timeout=5
        )
        assert "access-control-allow-origin" not in other.headers
        time.sleep(0.2)
        assert "token required" in server.log()
        assert TOKEN not in server.log()
    finally:
        server.stop()
    assert TOKEN not in server.log()
