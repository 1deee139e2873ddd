"""A Celery beat schedule whose interval lives in Redis (the chain cadence hash of one underlying).

The chain task records every run with :func:`beat_schedule.cadence.record_chain_run`, which writes
``interval_s`` and ``next_run_ms``. Beat asks :meth:`ChainSchedule.is_due` and sends the snapshot when

    now >= max(next_run_ms, last_run_at + interval_s)

``next_run_ms`` keeps the stored cadence across a beat restart (and holds back a backed-off underlying);
``last_run_at + interval_s`` keeps beat from sending again while the last run is still queued or running.

Beat is one thread and must never die of Redis: the client is created lazily (nothing connects at import
or unpickling), with short socket timeouts and no retries, and any Redis error falls back to the default
interval with a warning logged at most once per ``WARNING_EVERY_S``. The next check is at most
``recheck_max_s`` away, so a cadence changed in Redis applies within about that long — one HMGET per check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import schedstate, schedule
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from fabric import keys
from fabric.redis_client import redis_from_settings, redis_from_url
from fabric.settings import mask_url

logger = logging.getLogger(__name__)

#: Socket timeouts of beat's Redis client (seconds): a stalled Redis must not stall beat.
SOCKET_TIMEOUT_S = 0.5
#: The least time between two "Redis unreachable" warnings of one schedule (seconds).
WARNING_EVERY_S = 60.0
#: ``next_run_ms`` sentinel: Redis answered, but no snapshot of the underlying has ever been recorded.
NEVER_RUN = -1
#: A never-snapshotted underlying is due this soon after beat starts (and re-sent at most this often).
FIRST_RUN_RETRY_S = 2.0


class ChainSchedule(schedule):
    """The chain-snapshot schedule of ``underlying``: interval and next run read from its cadence hash.

    ``default_s`` is the interval when the hash is empty or Redis is unreachable. ``redis_url`` defaults to
    the settings' state store (leave it None in production: the URL may hold a password, and beat pickles
    schedules to its schedule file).
    """

    def __init__(
        self,
        underlying: str,
        default_s: float,
        redis_url: str | None = None,
        recheck_max_s: float = 1.0,
        nowfun: Callable[[], datetime] | None = None,
        app: Celery | None = None,
    ) -> None:
        super().__init__(run_every=default_s, nowfun=nowfun, app=app)
        self.underlying = underlying.upper()
        self.default_s = float(default_s)
        self.redis_url = redis_url
        self.recheck_max_s = float(recheck_max_s)
        self._redis: Redis | None = None
        self._warned_at_monotonic_s: float | None = None

    def _client(self) -> Redis:
        if self._redis is None:
            options: dict[str, Any] = {
                "decode_responses": True,
                "socket_timeout": SOCKET_TIMEOUT_S,
                "socket_connect_timeout": SOCKET_TIMEOUT_S,
                "retry": Retry(NoBackoff(), 0),
                "health_check_interval": 0,
            }
            if self.redis_url is None:
                self._redis = redis_from_settings(**options)
            else:
                self._redis = redis_from_url(self.redis_url, **options)
        return self._redis

    def _warn_fallback(self, exc: Exception) -> None:
        now_s = time.monotonic()
        if self._warned_at_monotonic_s is None or now_s - self._warned_at_monotonic_s >= WARNING_EVERY_S:
            self._warned_at_monotonic_s = now_s
            logger.warning(
                "chain cadence of %s unreadable (%s); using the default interval %.3g s",
                self.underlying,
                exc,
                self.default_s,
            )

    def cadence(self) -> tuple[float, int | None]:
        """``(interval_s, next_run_ms)`` from Redis; ``(default_s, None)`` when unreachable or unreadable,
        ``(default_s, NEVER_RUN)`` when Redis answers but no snapshot of the underlying ever ran."""
        try:
            interval_raw, next_run_raw = self._client().hmget(
                keys.chain_cadence(self.underlying), ["interval_s", "next_run_ms"]
            )
        except (RedisError, OSError) as exc:
            self._warn_fallback(exc)
            return self.default_s, None
        if not interval_raw and not next_run_raw:
            return self.default_s, NEVER_RUN
        try:
            interval_s = float(interval_raw) if interval_raw else self.default_s
            next_run_ms = int(float(next_run_raw)) if next_run_raw else None
        except ValueError as exc:
            self._warn_fallback(exc)
            return self.default_s, None
        if interval_s <= 0:
            interval_s = self.default_s
        return interval_s, next_run_ms

    def _remaining(self, last_run_at: datetime) -> tuple[timedelta, float]:
        interval_s, next_run_ms = self.cadence()
        now = self.maybe_make_aware(self.now())
        if next_run_ms == NEVER_RUN:
            # A fresh underlying: snapshot soon after beat starts, and re-send only every few seconds until
            # the first run records its cadence (the lock and ``expires`` absorb a duplicate).
            interval_s = min(interval_s, FIRST_RUN_RETRY_S)
            return self.maybe_make_aware(last_run_at) + timedelta(seconds=interval_s) - now, interval_s
        due_at = self.maybe_make_aware(last_run_at) + timedelta(seconds=interval_s)
        if next_run_ms is not None:
            due_at = max(due_at, datetime.fromtimestamp(next_run_ms / 1000.0, tz=now.tzinfo))
        return due_at - now, interval_s

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the next snapshot is due (negative when overdue)."""
        return self._remaining(last_run_at)[0]

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(is_due, seconds until the next check)``; the next check is at most ``recheck_max_s`` away."""
        remaining, interval_s = self._remaining(last_run_at)
        remaining_s = remaining.total_seconds()
        if remaining_s <= 0:
            return schedstate(is_due=True, next=min(interval_s, self.recheck_max_s))
        return schedstate(is_due=False, next=min(remaining_s, self.recheck_max_s))

    def __reduce__(self) -> tuple[Any, ...]:
        # The client is not pickled: the unpickled schedule connects lazily, like a new one.
        return self.__class__, (self.underlying, self.default_s, self.redis_url, self.recheck_max_s, self.nowfun)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChainSchedule):
            return (self.underlying, self.default_s, self.redis_url, self.recheck_max_s) == (
                other.underlying,
                other.default_s,
                other.redis_url,
                other.recheck_max_s,
            )
        return NotImplemented

    def __repr__(self) -> str:
        source = "settings" if self.redis_url is None else mask_url(self.redis_url)
        return f"<ChainSchedule {self.underlying} from {source}, default {self.default_s:g} s>"
