"""Redis clients built from settings (one place that knows how to connect)."""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from fabric.settings import Settings, get_settings


def redis_from_settings(settings: Settings | None = None, **kwargs: object) -> Redis:
    """A Redis client for the state store at ``settings.redis_url`` (``redis://`` or ``rediss://``)."""
    settings = settings or get_settings()
    options: dict[str, object] = {"decode_responses": True, "socket_timeout": 10, "health_check_interval": 30}
    options.update(kwargs)
    return Redis.from_url(settings.redis_url, **options)


def async_redis_from_settings(settings: Settings | None = None, **kwargs: object) -> AsyncRedis:
    """An asyncio Redis client for the state store (ingest, web)."""
    settings = settings or get_settings()
    options: dict[str, object] = {"decode_responses": True, "socket_timeout": 10, "health_check_interval": 30}
    options.update(kwargs)
    return AsyncRedis.from_url(settings.redis_url, **options)
