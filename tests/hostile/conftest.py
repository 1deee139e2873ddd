"""Fixtures of the hostile-input suite: the scripted REST server, a realistic chain, settings pointing at both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fabric.settings import Settings
from sim.market import Market
from tests.hostile.rest_server import RestScript
from tests.support.servers import RedisServer


@pytest.fixture(scope="session")
def rest_script() -> Iterator[RestScript]:
    """One scripted REST server for the suite (its behaviour is set by each test)."""
    script = RestScript().start()
    yield script
    script.stop()


@pytest.fixture
def rest(rest_script: RestScript) -> RestScript:
    """The scripted server, its counts reset."""
    rest_script.reset_stats()
    return rest_script


@pytest.fixture(scope="session")
def spy_rows() -> list[dict[str, Any]]:
    """SPY's chain from the simulator's market model at the wall clock, its first eight expiries (realistic
    quotes, greeks, IVs and OI; timestamps of now)."""
    rows = Market(7, time.time_ns(), ("SPY",)).snapshot_rows("SPY")
    expiries = sorted({row["details"]["expiration_date"] for row in rows})[:8]
    return [row for row in rows if row["details"]["expiration_date"] in expiries]


@pytest.fixture
def settings(redis_server: RedisServer, rest: RestScript) -> Settings:
    """SPY against the scripted server: 1 s per request, 4 s per snapshot, 1 MB per page, promotion at once."""
    return dataclasses.replace(
        Settings.from_env({}),
        redis_url=redis_server.url_db(0),
        massive_rest_url=rest.url,
        underlyings=("SPY",),
        epoch_required_components=(),
        chain_timeout_s=1.0,
        chain_snapshot_deadline_s=4.0,
        chain_max_retries=1,
        chain_max_page_mb=1.0,
        chain_parallel_ranges=2,
    )
