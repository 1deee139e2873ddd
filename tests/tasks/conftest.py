"""One real Celery worker for the task tests, embedded in the test process, consuming every queue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.contrib.testing.worker import start_worker

from tasks import app
from tests.support.servers import SimProcess


@pytest.fixture(scope="session")
def worker(sim: SimProcess) -> Iterator[None]:
    """The worker (solo pool, its own thread) on the test broker; tasks reach the session simulator."""
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["chain", "heatmap", "gex"],
                      loglevel="WARNING", shutdown_timeout=30):  # fmt: skip
        yield
