"""The cadence hash against a real redis-server: what one run writes, and how runs accumulate."""

from __future__ import annotations

import threading

from redis import Redis

from beat_schedule.cadence import read_cadence, record_chain_run
from beat_schedule.controller import CadenceBounds, CadenceState
from fabric import keys

BOUNDS = CadenceBounds(min_s=5.0, max_s=120.0, default_s=15.0)
NOW_MS = 1_700_000_000_000


def test_an_empty_hash_reads_as_defaults(redis_client: Redis) -> None:
    record = read_cadence(redis_client, "SPY")
    assert record["interval_s"] is None
    assert record["next_run_ms"] is None
    assert record["latency_ms_ewma"] is None
    assert (record["runs"], record["errors_total"], record["errors_consecutive"]) == (0, 0, 0)
    assert record["last_error"] == ""


def test_a_successful_run_writes_every_field(redis_client: Redis) -> None:
    state = record_chain_run(
        redis_client,
        "spy",
        latency_ms=4_000.0,
        error=None,
        rate_limited=False,
        retry_after_s=None,
        now_ms=NOW_MS,
        bounds=BOUNDS,
    )
    assert state == CadenceState(latency_ewma_ms=4_000.0, interval_s=15.0, errors_consecutive=0)  # 16 s: in band
    raw = redis_client.hgetall(keys.chain_cadence("SPY"))
    assert set(raw) == {
        "latency_ms_last",
        "latency_ms_ewma",
        "interval_s",
        "next_run_ms",
        "last_run_ms",
        "errors_consecutive",
        "last_error",
        "last_ok_ms",
        "runs",
    }
    record = read_cadence(redis_client, "SPY")
    assert record["latency_ms_last"] == 4_000.0
    assert record["interval_s"] == 15.0
    assert record["next_run_ms"] == NOW_MS + 15_000
    assert record["last_run_ms"] == record["last_ok_ms"] == NOW_MS
    assert record["last_error_ms"] is None
    assert record["runs"] == 1


def test_errors_back_off_count_and_recover(redis_client: Redis) -> None:
    def run(now_ms: int, **kwargs: object) -> CadenceState:
        options: dict = {"latency_ms": None, "error": None, "rate_limited": False, "retry_after_s": None}
        options.update(kwargs)
        return record_chain_run(redis_client, "SPX", now_ms=now_ms, bounds=BOUNDS, **options)

    run(NOW_MS, latency_ms=2_000.0)  # 8 s
    run(NOW_MS + 8_000, latency_ms=10_000.0, error="timeout")
    state = run(NOW_MS + 24_000, error="http_429", rate_limited=True, retry_after_s=60.0)
    assert state.interval_s == 60.0
    record = read_cadence(redis_client, "SPX")
    assert record["errors_consecutive"] == 2
    assert record["errors_total"] == 2
    assert record["rate_limited_total"] == 1
    assert record["last_error"] == "http_429"
    assert record["last_error_ms"] == NOW_MS + 24_000
    assert record["last_ok_ms"] == NOW_MS
    assert record["latency_ms_last"] is None
    assert record["latency_ms_ewma"] == 2_000.0
    assert record["next_run_ms"] == NOW_MS + 24_000 + 60_000

    state = run(NOW_MS + 90_000, latency_ms=2_000.0)
    assert state == CadenceState(latency_ewma_ms=2_000.0, interval_s=8.0, errors_consecutive=0)
    record = read_cadence(redis_client, "SPX")
    assert record["last_error"] == ""
    assert record["errors_consecutive"] == 0
    assert record["errors_total"] == 2
    assert record["runs"] == 4
    assert record["next_run_ms"] == NOW_MS + 98_000


def test_the_state_persists_between_runs(redis_client: Redis) -> None:
    for i in range(30):
        state = record_chain_run(
            redis_client,
            "QQQ",
            latency_ms=20_000.0,
            error=None,
            rate_limited=False,
            retry_after_s=None,
            now_ms=NOW_MS + i,
            bounds=BOUNDS,
        )
    assert state.interval_s == 80.0
    assert read_cadence(redis_client, "QQQ")["interval_s"] == 80.0


def test_concurrent_recorders_lose_no_update(redis_server_url: str, redis_client: Redis) -> None:
    """The read-modify-write runs under WATCH: every run is counted and the error streak is exact."""

    def record_errors() -> None:
        client = Redis.from_url(redis_server_url, decode_responses=True)
        for _ in range(25):
            record_chain_run(
                client,
                "SPY",
                latency_ms=None,
                error="timeout",
                rate_limited=False,
                retry_after_s=None,
                now_ms=NOW_MS,
                bounds=BOUNDS,
            )
        client.close()

    threads = [threading.Thread(target=record_errors) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = read_cadence(redis_client, "SPY")
    assert record["runs"] == record["errors_total"] == record["errors_consecutive"] == 100
