"""Per-process resources of the task shells, created lazily on first use (never at import time)."""

from __future__ import annotations

from functools import cache

from celery.signals import worker_process_shutdown
from redis import Redis

from chain.fetch import ChainFetcher
from chain.snapshot import fetcher_from_settings
from fabric.redis_client import redis_from_settings
from fabric.settings import get_settings
from recording.writer import close_all as close_recordings


@cache
def state_redis() -> Redis:
    """The state-store client of this worker process."""
    return redis_from_settings(get_settings())


@cache
def chain_fetcher() -> ChainFetcher:
    """The chain fetcher of this worker process (its HTTP connection pool is reused across runs)."""
    return fetcher_from_settings(get_settings())


def reset() -> None:
    """Forget the cached clients (tests that change the environment call this)."""
    state_redis.cache_clear()
    chain_fetcher.cache_clear()


@worker_process_shutdown.connect
def _close_recordings(**_: object) -> None:
    """A prefork child leaves through ``os._exit`` (no ``atexit``): close its chain recording here, so the
    file ends with its gzip trailer."""
    close_recordings()
