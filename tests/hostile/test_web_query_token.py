"""A bearer token in a query string, against a real ``python -m web`` with its access log on: refused with
400 on ``/api`` and ``/stream`` (even next to a valid ``Authorization`` header), and never written to the log —
no query string of any route is."""

from __future__ import annotations

import secrets

import redis
import requests

from tests.hostile.web_clients import refused, running
from tests.support.waiting import wait_for
from tests.web.views import gex_view, publish_view

TOKEN = "qs-" + secrets.token_hex(16)


def test_a_token_in_a_query_string_is_refused_and_never_logged(r: redis.Redis) -> None:
    publish_view(r, gex_view("SPY", spot=500.0))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    credentials = [
        f"/api/models?token={TOKEN}",
        f"/api/models/gex/SPY?access_token={TOKEN}",
        f"/stream/gex/SPY?apiKey={TOKEN}",
        f"/api/models?u=SPY&PASSWORD={TOKEN}",
        f"/stream/heatmap/SPY?key={TOKEN}",
    ]
    with running(MMAKER_WEB_TOKEN=TOKEN) as server:
        before = refused(server)["token_in_query"]
        for path in credentials:
            response = requests.get(server.url + path, headers=auth, timeout=5)
            assert response.status_code == 400, path
            body = response.json()
            assert body["error"] == "credential in query string" and "Authorization: Bearer" in body["detail"]
            assert TOKEN not in response.text
        without_header = requests.get(f"{server.url}/api/models?token={TOKEN}", timeout=5)
        assert without_header.status_code == 400
        assert refused(server)["token_in_query"] == before + len(credentials) + 1

        # a query that names no credential is served, and no query string reaches the log on any route
        served = requests.get(f"{server.url}/api/models/gex/SPY?v={TOKEN}", headers=auth, timeout=5)
        assert served.status_code == 200
        assert requests.get(f"{server.url}/?u=SPY&token={TOKEN}", timeout=5).status_code == 200
        wait_for(
            lambda: (
                '"GET /api/models/gex/SPY HTTP/1.1" 200' in server.log()
                and '"GET / HTTP/1.1" 200' in server.log()
                and server.log().count('"GET /api/models HTTP/1.1" 400') == 3
            ),
            10,
            "the access log lines of the requests",
            server.log,
        )
    assert TOKEN not in server.log()
