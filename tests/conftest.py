"""Root fixtures: one redis-server for the whole run, started by the tests on a free port.

``pytest_configure`` starts it and points ``REDIS_URL`` / ``CELERY_BROKER_URL`` at it before any project
module builds its settings, so nothing in a test run can reach the user's Redis on 6379.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tests.support.servers import RedisServer, SimProcess, free_port

_server: RedisServer | None = None
SIM_PORT = free_port()


def pytest_configure(config: pytest.Config) -> None:
    global _server
    _server = RedisServer().start()
    os.environ["REDIS_URL"] = _server.url_db(0)
    os.environ["CELERY_BROKER_URL"] = _server.url_db(1)
    os.environ.pop("MASSIVE_API_KEY", None)
    os.environ["MMAKER_SIM_PORT"] = str(SIM_PORT)
    os.environ.pop("MASSIVE_REST_URL", None)
    os.environ.pop("MASSIVE_WS_URL", None)
    # Tests that are not about promotion get epochs promoted at once; the ones that are set their own.
    os.environ["MMAKER_EPOCH_REQUIRED"] = "none"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The run's redis-server (state on db 0, Celery broker on db 1)."""
    assert _server is not None
    return _server


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the test redis-server's db 0, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url_db(0), decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sim() -> Iterator[SimProcess]:
    """The simulator on the port the settings point at (seed 7, SPY and SPX), shared by the run."""
    process = SimProcess(port=SIM_PORT).start()
    yield process
    process.stop()
