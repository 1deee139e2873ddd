"""A trickling REST answer against the real chain task: a ``celery worker`` process (prefork pool, the
production time limits), its own state and broker redis-servers, the scripted REST server.

Before: the task was held until the pool's 120 s hard kill, three times in a row, with no error recorded and
the cadence unchanged. Now each snapshot ends at its own deadline inside the task, which records
``fetch:timeout`` and backs the cadence off; the worker runs on and the next good answer is applied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

import celeryconfig
from beat_schedule.cadence import read_cadence
from fabric import keys
from fabric.epochs import active_epoch
from fabric.settings import Settings
from tests.hostile.rest_server import RestScript
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.tasks.test_faults import Worker

U = "SPY"


def test_the_snapshot_deadline_ends_well_inside_the_chain_task_time_limits() -> None:
    settings = Settings.from_env({})
    fetch_s = settings.chain_snapshot_deadline_s + 5.0  # + the threads' grace after a cut
    assert fetch_s + 30 < celeryconfig.task_soft_time_limit < celeryconfig.task_time_limit  # 30 s to apply


class Chain:
    """One chain worker process and what it talks to."""

    def __init__(self, rest: RestScript) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mmaker-hostile-"))
        self.state = RedisServer().start()
        self.broker = RedisServer().start()
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "MASSIVE_API_KEY"},
            "REDIS_URL": self.state.url_db(0),
            "CELERY_BROKER_URL": self.broker.url_db(0),
            "MASSIVE_REST_URL": rest.url,
            "MMAKER_UNDERLYINGS": U,
            "MMAKER_EPOCH_REQUIRED": "none",
            "MMAKER_CHAIN_TIMEOUT_S": "1",
            "MMAKER_CHAIN_SNAPSHOT_DEADLINE_S": "3",
            "MMAKER_CHAIN_MAX_RETRIES": "1",
            "MMAKER_CHAIN_PARALLEL_RANGES": "2",
            "PYTHONUNBUFFERED": "1",
        }
        self.r = redis.Redis.from_url(self.state.url_db(0), decode_responses=True)
        self.worker = Worker("chain", self.env, self.dir)
        self.app = Celery("hostile", broker=self.broker.url_db(0))

    def send(self) -> None:
        with self.app.connection_for_write(self.broker.url_db(0)) as connection:
            self.app.send_task("tasks.chain.snapshot", args=[U], queue="chain", connection=connection)

    def statuses(self) -> list[str]:
        """The status of every snapshot the worker finished (its log line comes after the task returned)."""
        return self.worker.statuses("tasks.chain.snapshot")

    def timeouts(self) -> int:
        return int(self.r.hget(keys.chain_errors(U), "fetch:timeout") or 0)

    def close(self) -> None:
        self.worker.stop()
        self.app.close()
        self.r.close()
        self.state.stop()
        self.broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def chain(rest: RestScript) -> Iterator[Chain]:
    running = Chain(rest)
    try:
        running.worker.start()
        running.worker.wait_ready()
        yield running
    finally:
        running.close()


def test_a_trickling_answer_is_a_timeout_the_task_records_and_the_worker_lives_on(
    chain: Chain, rest: RestScript, spy_rows: list[dict]
) -> None:
    rest.trickle_body(interval_s=0.05, total_bytes=10_000)  # 500 s for the whole body
    intervals = []
    for n in (1, 2, 3):  # three in a row, as in the report
        chain.send()
        wait_for(lambda n=n: chain.statuses() == ["failed"] * n, 60, f"snapshot {n} done", chain.worker.log)
        assert chain.timeouts() == n and read_cadence(chain.r, U)["errors_consecutive"] == n
        cadence = read_cadence(chain.r, U)
        assert cadence["last_error"].startswith("timeout")
        intervals.append(cadence["interval_s"])
    assert intervals[1] == 2 * intervals[0] and intervals[2] == 2 * intervals[1]  # the cadence backs off
    assert chain.worker.proc is not None and chain.worker.proc.poll() is None  # the worker runs on
    log = chain.worker.log()
    assert "TimeLimitExceeded" not in log and "time limit" not in log.lower()
    assert active_epoch(chain.r, U) is None and chain.r.dbsize() == 2  # only the counters and the cadence

    rest.serve(spy_rows)
    chain.send()
    wait_for(lambda: len(chain.statuses()) == 4, 60, "the next snapshot done", chain.worker.log)
    assert chain.statuses()[-1] == "created" and active_epoch(chain.r, U) is not None
    assert read_cadence(chain.r, U)["errors_consecutive"] == 0
