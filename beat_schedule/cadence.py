"""The cadence hash of each underlying's chain snapshots: read it, and record one run into it.

``keys.chain_cadence(U)`` is a HASH written only by :func:`record_chain_run` (the chain task calls it after
every snapshot, successful or not) and read by beat's :class:`~beat_schedule.schedule.ChainSchedule`:

| field | meaning |
|---|---|
| ``latency_ms_last`` | latency of the last run, ms ("" when the run did not report one) |
| ``latency_ms_ewma`` | EWMA of successful runs' latency, ms ("" before the first success) |
| ``interval_s`` | the wait before the next snapshot, s |
| ``next_run_ms`` | ``last_run_ms + interval_s``, epoch ms: beat does not send before it |
| ``last_run_ms`` | when the last run was recorded, epoch ms |
| ``errors_consecutive`` | errors since the last success |
| ``last_error`` | the last run's error ("" when it succeeded) |
| ``last_error_ms`` / ``last_ok_ms`` | when the last failed / successful run was recorded, epoch ms |
| ``runs`` / ``errors_total`` / ``rate_limited_total`` | counters (HINCRBY) |

The read-modify-write runs under WATCH in a MULTI/EXEC transaction, so two recorders never lose an update
(the chain lock already keeps snapshots of one underlying from overlapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from redis import Redis
from redis.client import Pipeline

from beat_schedule.controller import CadenceBounds, CadenceState, next_chain_interval_s
from fabric import keys

#: Longest error text stored in ``last_error`` (characters).
ERROR_TEXT_MAX_CHARS = 200


class CadenceRecord(TypedDict):
    """The parsed cadence hash; None where a field was never written."""

    latency_ms_last: float | None
    latency_ms_ewma: float | None
    interval_s: float | None
    next_run_ms: int | None
    last_run_ms: int | None
    errors_consecutive: int
    last_error: str
    last_error_ms: int | None
    last_ok_ms: int | None
    runs: int
    errors_total: int
    rate_limited_total: int


def _float_or_none(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _int_or_none(value: str | None) -> int | None:
    number = _float_or_none(value)
    return None if number is None else int(number)


def parse_cadence(fields: Mapping[str, str]) -> CadenceRecord:
    """The typed cadence record of a raw hash (empty or unparsable fields become None or 0)."""
    return CadenceRecord(
        latency_ms_last=_float_or_none(fields.get("latency_ms_last")),
        latency_ms_ewma=_float_or_none(fields.get("latency_ms_ewma")),
        interval_s=_float_or_none(fields.get("interval_s")),
        next_run_ms=_int_or_none(fields.get("next_run_ms")),
        last_run_ms=_int_or_none(fields.get("last_run_ms")),
        errors_consecutive=_int_or_none(fields.get("errors_consecutive")) or 0,
        last_error=fields.get("last_error") or "",
        last_error_ms=_int_or_none(fields.get("last_error_ms")),
        last_ok_ms=_int_or_none(fields.get("last_ok_ms")),
        runs=_int_or_none(fields.get("runs")) or 0,
        errors_total=_int_or_none(fields.get("errors_total")) or 0,
        rate_limited_total=_int_or_none(fields.get("rate_limited_total")) or 0,
    )


def cadence_state(record: CadenceRecord, bounds: CadenceBounds) -> CadenceState:
    """The controller state stored in ``record`` (the initial state for an empty hash)."""
    if record["interval_s"] is None or record["interval_s"] <= 0:
        return CadenceState.initial(bounds)
    return CadenceState(
        latency_ewma_ms=record["latency_ms_ewma"],
        interval_s=record["interval_s"],
        errors_consecutive=max(record["errors_consecutive"], 0),
    )


def read_cadence(r: Redis, underlying: str) -> CadenceRecord:
    """The cadence record of ``underlying`` (all None / 0 when no run was recorded yet)."""
    return parse_cadence(r.hgetall(keys.chain_cadence(underlying)))


def record_chain_run(
    r: Redis,
    underlying: str,
    *,
    latency_ms: float | None,
    error: str | None,
    rate_limited: bool = False,
    retry_after_s: float | None = None,
    now_ms: int,
    bounds: CadenceBounds,
) -> CadenceState:
    """Record one chain snapshot of ``underlying`` that ended at ``now_ms`` (epoch ms); return the new state.

    ``error`` is None for a successful run, else a short reason (stored truncated). ``rate_limited`` and
    ``retry_after_s`` report a 429 and its Retry-After (seconds). The next run is due at
    ``now_ms + interval_s``.
    """
    key = keys.chain_cadence(underlying)

    def update(pipe: Pipeline) -> CadenceState:
        previous = cadence_state(parse_cadence(pipe.hgetall(key)), bounds)
        state = next_chain_interval_s(
            previous,
            latency_ms=latency_ms,
            error=error,
            rate_limited=rate_limited,
            retry_after_s=retry_after_s,
            bounds=bounds,
        )
        fields: dict[str, str | int | float] = {
            "latency_ms_last": "" if latency_ms is None else float(latency_ms),
            "latency_ms_ewma": "" if state.latency_ewma_ms is None else state.latency_ewma_ms,
            "interval_s": state.interval_s,
            "next_run_ms": now_ms + round(state.interval_s * 1000),
            "last_run_ms": now_ms,
            "errors_consecutive": state.errors_consecutive,
            "last_error": "" if error is None else error[:ERROR_TEXT_MAX_CHARS],
        }
        fields["last_error_ms" if error is not None else "last_ok_ms"] = now_ms
        pipe.multi()
        pipe.hset(key, mapping=fields)
        pipe.hincrby(key, "runs", 1)
        if error is not None:
            pipe.hincrby(key, "errors_total", 1)
        if rate_limited:
            pipe.hincrby(key, "rate_limited_total", 1)
        return state

    return r.transaction(update, key, value_from_callable=True)
