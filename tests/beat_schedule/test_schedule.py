"""ChainSchedule against a real redis-server: follows the cadence hash, survives Redis down and pickling."""

from __future__ import annotations

import logging
import pickle
import statistics
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from celery import Celery
from celery.beat import PersistentScheduler, ScheduleEntry
from redis import Redis

from beat_schedule.schedule import FIRST_RUN_RETRY_S, ChainSchedule
from fabric import keys
from tests.beat_schedule.conftest import free_port

NOW = datetime(2025, 1, 2, 15, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def schedule_at(url: str, now: datetime = NOW) -> ChainSchedule:
    return ChainSchedule("SPY", 15.0, redis_url=url, nowfun=lambda: now)


def test_a_never_snapshotted_underlying_is_due_soon_then_resent_every_few_seconds(
    redis_server_url: str, redis_client: Redis
) -> None:
    schedule = schedule_at(redis_server_url)
    # beat just started (last_run_at = now): due within FIRST_RUN_RETRY_S, not after the 15 s default
    assert schedule.remaining_estimate(NOW) == timedelta(seconds=FIRST_RUN_RETRY_S)
    assert not schedule.is_due(NOW - timedelta(seconds=FIRST_RUN_RETRY_S / 2)).is_due
    assert schedule.is_due(NOW - timedelta(seconds=FIRST_RUN_RETRY_S)).is_due


def test_a_hash_with_only_a_next_run_uses_the_default_interval(redis_server_url: str, redis_client: Redis) -> None:
    redis_client.hset(keys.chain_cadence("SPY"), "next_run_ms", NOW_MS - 60_000)
    schedule = schedule_at(redis_server_url)
    assert schedule.remaining_estimate(NOW - timedelta(seconds=10)) == timedelta(seconds=5)
    assert schedule.is_due(NOW - timedelta(seconds=10)) == (False, 1.0)  # next check capped at 1 s
    assert schedule.is_due(NOW - timedelta(seconds=15)).is_due


def test_follows_an_interval_changed_in_redis(redis_server_url: str, redis_client: Redis) -> None:
    schedule = schedule_at(redis_server_url)
    last_run_at = NOW - timedelta(seconds=10)
    key = keys.chain_cadence("SPY")

    redis_client.hset(key, mapping={"interval_s": 8.0, "next_run_ms": NOW_MS - 2_000})
    assert schedule.is_due(last_run_at).is_due
    assert schedule.remaining_estimate(last_run_at) == timedelta(seconds=-2)

    redis_client.hset(key, mapping={"interval_s": 40.0})
    assert not schedule.is_due(last_run_at).is_due
    assert schedule.remaining_estimate(last_run_at) == timedelta(seconds=30)

    redis_client.hset(key, mapping={"interval_s": 10.0})
    assert schedule.is_due(last_run_at) == (True, 1.0)


def test_next_run_ms_holds_beat_back(redis_server_url: str, redis_client: Redis) -> None:
    """A backed-off (or restarted-beat) underlying waits for next_run_ms even when the interval passed."""
    schedule = schedule_at(redis_server_url)
    redis_client.hset(keys.chain_cadence("SPY"), mapping={"interval_s": 5.0, "next_run_ms": NOW_MS + 45_000})
    last_run_at = NOW - timedelta(minutes=10)
    assert schedule.remaining_estimate(last_run_at) == timedelta(seconds=45)
    assert schedule.is_due(last_run_at) == (False, 1.0)
    assert schedule_at(redis_server_url, NOW + timedelta(seconds=45)).is_due(last_run_at).is_due


def test_does_not_resend_while_the_last_run_is_queued(redis_server_url: str, redis_client: Redis) -> None:
    """next_run_ms is stale (the queued run has not recorded yet): last_run_at + interval_s decides."""
    redis_client.hset(keys.chain_cadence("SPY"), mapping={"interval_s": 20.0, "next_run_ms": NOW_MS - 60_000})
    schedule = schedule_at(redis_server_url)
    assert schedule.remaining_estimate(NOW - timedelta(seconds=1)) == timedelta(seconds=19)


def test_the_next_check_is_the_remaining_time_when_shorter(redis_server_url: str, redis_client: Redis) -> None:
    redis_client.hset(keys.chain_cadence("SPY"), "interval_s", 15.0)
    schedule = ChainSchedule("SPY", 15.0, redis_url=redis_server_url, recheck_max_s=30.0, nowfun=lambda: NOW)
    assert schedule.is_due(NOW - timedelta(seconds=10)) == (False, 5.0)
    assert schedule.is_due(NOW - timedelta(seconds=20)) == (True, 15.0)


def test_garbage_in_the_hash_falls_back_to_the_default(redis_server_url: str, redis_client: Redis) -> None:
    redis_client.hset(keys.chain_cadence("SPY"), mapping={"interval_s": "fast", "next_run_ms": "soon"})
    assert schedule_at(redis_server_url).remaining_estimate(NOW) == timedelta(seconds=15)


def test_redis_down_falls_back_to_the_default_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    schedule = schedule_at(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="beat_schedule.schedule"):
        assert schedule.remaining_estimate(NOW - timedelta(seconds=5)) == timedelta(seconds=10)
        assert schedule.is_due(NOW - timedelta(seconds=15)).is_due
        assert not schedule.is_due(NOW).is_due
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "SPY" in warnings[0].getMessage()


def test_recovers_when_redis_comes_back(redis_server_url: str, redis_client: Redis) -> None:
    schedule = schedule_at(redis_server_url)
    redis_client.hset(keys.chain_cadence("SPY"), mapping={"interval_s": 60.0})
    assert schedule.remaining_estimate(NOW) == timedelta(seconds=60)
    schedule._client().connection_pool.disconnect()  # a dropped connection is reopened on the next call
    assert schedule.remaining_estimate(NOW) == timedelta(seconds=60)


def test_survives_pickling_without_a_connection(redis_server_url: str, redis_client: Redis) -> None:
    schedule = ChainSchedule("SPX", 12.5, redis_url=redis_server_url, recheck_max_s=2.0)
    schedule.remaining_estimate(datetime.now(UTC))  # opens the client
    copy = pickle.loads(pickle.dumps(schedule))
    assert copy == schedule
    assert copy._redis is None
    assert (copy.underlying, copy.default_s, copy.redis_url, copy.recheck_max_s) == ("SPX", 12.5, redis_server_url, 2.0)
    redis_client.hset(keys.chain_cadence("SPX"), mapping={"interval_s": 30.0})
    last_run_at = datetime.now(UTC)
    assert 29 < copy.remaining_estimate(last_run_at).total_seconds() <= 30


def test_a_pickled_beat_entry_round_trips(redis_server_url: str) -> None:
    """The persistent scheduler shelves whole entries."""
    entry = ScheduleEntry(
        name="chain-snapshot-SPY",
        task="tasks.chain.snapshot",
        schedule=ChainSchedule("SPY", 15.0, redis_url=redis_server_url),
        args=("SPY",),
        options={"queue": "chain"},
    )
    copy = pickle.loads(pickle.dumps(entry))
    assert copy == entry
    assert copy.schedule == entry.schedule


def test_repr_names_the_underlying_and_masks_the_password() -> None:
    schedule = ChainSchedule("spy", 15.0, redis_url="redis://user:secret@127.0.0.1:6390/0")
    assert repr(schedule) == "<ChainSchedule SPY from redis://user:***@127.0.0.1:6390/0, default 15 s>"
    assert "secret" not in repr(schedule)


def test_equality_is_by_configuration() -> None:
    assert ChainSchedule("SPY", 15.0) == ChainSchedule("spy", 15.0)
    assert ChainSchedule("SPY", 15.0) != ChainSchedule("SPX", 15.0)
    assert ChainSchedule("SPY", 15.0) != ChainSchedule("SPY", 20.0)


def test_the_stock_persistent_scheduler_follows_the_cadence(
    tmp_path: Path, redis_server_url: str, redis_client: Redis
) -> None:
    """Celery's own PersistentScheduler ticks a ChainSchedule, shelves it, and picks up a changed interval."""
    app = Celery("beat-test", broker="memory://", set_as_current=False)
    app.conf.beat_schedule = {
        "chain-snapshot-SPY": {
            "task": "tasks.chain.snapshot",
            "schedule": ChainSchedule("SPY", 15.0, redis_url=redis_server_url, app=app),
            "args": ("SPY",),
        }
    }
    sent_monotonic_s: list[float] = []

    class RecordingScheduler(PersistentScheduler):
        def apply_entry(self, entry: ScheduleEntry, producer: object = None) -> None:
            sent_monotonic_s.append(time.monotonic())

    def gaps_s(interval_s: float, duration_s: float) -> list[float]:
        redis_client.hset(keys.chain_cadence("SPY"), mapping={"interval_s": interval_s})
        sent_monotonic_s.clear()
        start_s = time.monotonic()
        while time.monotonic() - start_s < duration_s:
            time.sleep(min(max(scheduler.tick(), 0.0), 0.02))
        # The first send after a change still follows the old slot; compare the ones after it.
        return [b - a for a, b in pairwise(sent_monotonic_s[1:])]

    scheduler = RecordingScheduler(app=app, schedule_filename=str(tmp_path / "beat"), max_interval=1)
    try:
        fast = gaps_s(0.2, 1.0)
        slow = gaps_s(0.4, 1.5)
        assert len(fast) >= 2
        assert len(slow) >= 1
        assert statistics.median(fast) == pytest.approx(0.2, abs=0.05)
        assert statistics.median(slow) == pytest.approx(0.4, abs=0.05)
        scheduler.sync()
    finally:
        scheduler.close()
    reopened = RecordingScheduler(app=app, schedule_filename=str(tmp_path / "beat"), max_interval=1, lazy=True)
    reopened.setup_schedule()
    try:
        assert reopened.schedule["chain-snapshot-SPY"].schedule == ChainSchedule(
            "SPY", 15.0, redis_url=redis_server_url
        )
    finally:
        reopened.close()
