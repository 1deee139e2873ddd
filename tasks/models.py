"""What the heatmap and GEX task shells share: a non-blocking Redis lock per (model, underlying)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fabric import keys
from fabric.keys import Model
from tasks.runtime import state_redis

log = logging.getLogger(__name__)
LOCK_TIMEOUT_S = 30  # longer than the recompute tasks' hard time limit


@contextmanager
def model_lock(model: Model, underlying: str) -> Iterator[bool]:
    """Yields True when this run holds the lock; False when another run of the same model is in progress."""
    lock = state_redis().lock(keys.model_lock(model, underlying), timeout=LOCK_TIMEOUT_S, blocking=False)
    if not lock.acquire():
        log.info("%s recompute skipped underlying=%s (another run holds the lock)", model, underlying)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
