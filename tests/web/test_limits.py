"""The pure part of the web process's connection limits: sizing by the open-file limit, admission tiers and
the refusal log that writes at most one line per reason every few seconds."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fabric.settings import Settings
from tests.support.waiting import until
from web.limits import LOG_EVERY_S, Admission, ConnectionGuard, ConnectionLimits


def test_the_cap_fits_under_the_open_file_limit_with_room_for_healthz(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({})
    roomy = ConnectionLimits.for_process(settings, files=20_000)
    assert (roomy.max_connections, roomy.file_ceiling) == (8_000, 20_000 - 256)
    assert "lowered" not in caplog.text
    tight = ConnectionLimits.for_process(settings, files=1_024)
    assert (tight.max_connections, tight.file_ceiling) == (1_024 - 256 - 64, 1_024 - 256)
    assert "MMAKER_WEB_MAX_CONNECTIONS=8000 lowered to 704: the open-file limit is 1024" in caplog.text
    tiny = ConnectionLimits.for_process(settings, files=100)  # headroom shrinks to a quarter of the limit
    assert (tiny.max_connections, tiny.file_ceiling) == (11, 75)


def test_admission_by_open_connections() -> None:
    guard = ConnectionGuard(ConnectionLimits(2, 16_384, 100, 10.0, file_ceiling=4))
    assert [guard.admit() for _ in range(5)] == [
        Admission.SERVE,
        Admission.SERVE,
        Admission.HEALTH_ONLY,
        Admission.HEALTH_ONLY,
        Admission.CLOSE,
    ]
    for _ in range(4):
        guard.release()
    assert guard.open == 1 and guard.admit() is Admission.SERVE


def test_a_refusal_flood_is_logged_once_per_interval_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [1_000.0]
    guard = ConnectionGuard(ConnectionLimits(2, 16_384, 100, 10.0, file_ceiling=4), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="web.limits"):
        for _ in range(500):
            guard.refuse("header_timeout")
        guard.refuse("bad_request")
        now[0] += LOG_EVERY_S
        guard.refuse("header_timeout")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "refused 1 (header_timeout: headers not complete within 10 s: closed); 1 since start",
        "refused 1 (bad_request: a malformed HTTP request: 400); 1 since start",
        "refused 500 (header_timeout: headers not complete within 10 s: closed); 501 since start",
    ]
    assert guard.report()["refused"] == {
        "over_capacity": 0,
        "at_file_limit": 0,
        "headers_too_large": 0,
        "too_many_headers": 0,
        "header_timeout": 501,
        "bad_request": 1,
        "token_in_query": 0,
    }


def test_the_rest_of_a_burst_is_logged_when_its_interval_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("web.limits.LOG_EVERY_S", 0.2)

    async def burst() -> None:
        guard = ConnectionGuard(ConnectionLimits(2, 16_384, 100, 10.0, file_ceiling=4))
        for _ in range(50):
            guard.refuse("over_capacity")
        await until(lambda: len(caplog.records) == 2, "the burst's second line", timeout_s=10)

    with caplog.at_level(logging.WARNING, logger="web.limits"):
        asyncio.run(burst())
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == ["refused 1", "refused 49"]
