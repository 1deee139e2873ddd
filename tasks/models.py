"""What the task shells share: a non-blocking Redis lock per (model, underlying) — and per chain underlying —
that is renewed while its holder lives, so a holder killed without cleanup (kill -9, the pool's hard time
limit, Redis lost before the release) blocks the next run for at most ``LOCK_TIMEOUT_S``; and
:func:`survives_state_store`, which turns the state store being away (down, out of memory, read-only) into a
result instead of a traceback per run."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis.exceptions import LockError, RedisError

from fabric import keys
from fabric.keys import Model
from fabric.logthrottle import LogThrottle
from tasks.runtime import state_redis

log = logging.getLogger(__name__)
_quiet = LogThrottle(10.0)  # per worker process: one line per task name every 10 s while Redis is away
#: TTL of a held lock (seconds); a live holder renews it every third of that.
LOCK_TIMEOUT_S = 5.0


@contextmanager
def renewed_lock(key: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """Yields True while this run holds the lock ``key`` (False when another run holds it).

    A daemon thread resets the lock's TTL to ``timeout_s`` every ``timeout_s / 3`` until the block exits;
    the lock is then released. A failed renewal or release is logged, never raised: the TTL frees the lock.
    """
    lock = state_redis().lock(key, timeout=timeout_s, blocking=False, thread_local=False)
    if not lock.acquire():
        yield False
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(timeout_s / 3):
            try:
                lock.reacquire()
            except (LockError, RedisError, OSError) as exc:
                log.warning("lock %s not renewed (%s); it expires within %.0f s", key, exc, timeout_s)

    renewer = threading.Thread(target=renew, name=f"renew {key}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        done.set()
        renewer.join()
        try:
            lock.release()
        except (LockError, RedisError, OSError) as exc:
            log.warning("lock %s not released (%s); it expires within %.0f s", key, exc, timeout_s)


@contextmanager
def model_lock(model: Model, underlying: str) -> Iterator[bool]:
    """Yields True when this run holds the lock; False when another run of the same model is in progress."""
    with renewed_lock(keys.model_lock(model, underlying)) as held:
        if not held:
            log.info("%s recompute skipped underlying=%s (another run holds the lock)", model, underlying)
        yield held


TaskShell = Callable[[str], dict[str, object]]


def survives_state_store(name: str) -> Callable[[TaskShell], TaskShell]:
    """Decorate a task shell of one underlying: a Redis error (the state store down, out of memory, read-only,
    loading …) ends the run with ``{"status": "redis_unavailable"}`` and one log line per ``name`` every 10 s,
    not a traceback per run — the next scheduled run tries again. Nothing half-done stays behind: every write
    of a run is one transaction or one script."""

    def wrap(task: TaskShell) -> TaskShell:
        @functools.wraps(task)
        def run(underlying: str) -> dict[str, object]:
            try:
                return task(underlying)
            except (RedisError, OSError) as exc:
                if (held := _quiet(name)) is not None:
                    log.warning(
                        "%s %s: the state store is unavailable (%s: %s); the next run tries again (%d more "
                        "such runs held back from the log)",
                        name,
                        underlying,
                        type(exc).__name__,
                        exc,
                        held,
                    )
                return {"underlying": str(underlying).upper(), "status": "redis_unavailable",
                        "error": type(exc).__name__}  # fmt: skip

        return run

    return wrap
