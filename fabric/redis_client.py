"""Redis clients built from settings (one place that knows how to connect).

``REDIS_URL`` selects the client:

- ``redis://host:port/db`` / ``rediss://…`` — one Redis (TLS with ``rediss``): redis-py's ``Redis``;
- ``redis+cluster://host:port/0`` / ``rediss+cluster://…`` — a Redis Cluster reached through any of its
  nodes (the others are discovered): redis-py's ``RedisCluster`` (sync and asyncio). A cluster has only
  database 0. Every key of one underlying carries the ``{U}`` hash tag, so every script and transaction
  goes to the one node that owns the underlying's slot.

Pub/sub: Redis Cluster broadcasts a classic ``PUBLISH`` (the Lua scripts' notifications included) to every
node, so a subscriber connected to any node receives every message; :func:`pubsub_for` opens one.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.asyncio import ConnectionPool as AsyncConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import PubSub as AsyncPubSub
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from fabric.settings import CLUSTER_SCHEMES, Settings, get_settings, is_cluster_url

AnyRedis = Redis | RedisCluster
AnyAsyncRedis = AsyncRedis | AsyncRedisCluster

_DEFAULTS: dict[str, object] = {"decode_responses": True, "socket_timeout": 10, "health_check_interval": 30}


def node_url(url: str) -> str:
    """The plain ``redis://`` / ``rediss://`` URL of a cluster URL's seed node (database 0).

    Raises ``ValueError`` for a database other than 0 (a cluster has only one).
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster:// or rediss+cluster://): {parts.scheme}://…")
    path = parts.path.strip("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, the URL asks for /{path}")
    return urlunsplit(parts._replace(scheme=scheme, path="/0"))


def _cluster_options(options: dict[str, object]) -> dict[str, object]:
    """Client options a cluster client accepts (connection health checks are per node, not settable here)."""
    return {k: v for k, v in options.items() if k != "health_check_interval"}


def redis_from_url(url: str, **options: Any) -> AnyRedis:
    """A sync client of ``url`` with exactly ``options``: ``Redis`` for ``redis(s)://``, ``RedisCluster`` for
    ``redis(s)+cluster://``."""
    if is_cluster_url(url):
        return RedisCluster.from_url(node_url(url), **_cluster_options(options))
    return Redis.from_url(url, **options)


def async_redis_from_url(url: str, **options: Any) -> AnyAsyncRedis:
    """An asyncio client of ``url`` with exactly ``options`` (``redis.asyncio.Redis`` or, for a cluster URL,
    ``redis.asyncio.cluster.RedisCluster``)."""
    if is_cluster_url(url):
        return AsyncRedisCluster.from_url(node_url(url), **_cluster_options(options))
    return AsyncRedis.from_url(url, **options)


def redis_from_settings(settings: Settings | None = None, **kwargs: Any) -> AnyRedis:
    """A Redis client for the state store at ``settings.redis_url`` (one Redis or a cluster), text replies."""
    settings = settings or get_settings()
    return redis_from_url(settings.redis_url, **{**_DEFAULTS, **kwargs})


def async_redis_from_settings(settings: Settings | None = None, **kwargs: Any) -> AnyAsyncRedis:
    """An asyncio Redis client for the state store (ingest, web), text replies."""
    settings = settings or get_settings()
    return async_redis_from_url(settings.redis_url, **{**_DEFAULTS, **kwargs})


def pubsub_for(client: AnyAsyncRedis) -> AsyncPubSub:
    """A pub/sub object of ``client``; on a cluster, a plain connection to one of its nodes.

    Redis Cluster broadcasts a classic PUBLISH to every node, so any node delivers every message. The node
    is picked at random among the known ones (the seed nodes before the slot map is loaded), so a
    subscriber that resubscribes after losing its node tries another. No I/O happens here: the connection
    is made by the first ``subscribe``, whose errors the caller already handles.
    """
    if not isinstance(client, AsyncRedisCluster):
        return client.pubsub()
    manager = client.nodes_manager
    node = random.choice(list(manager.nodes_cache.values()) or list(manager.startup_nodes.values()))
    pool = AsyncConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return AsyncRedis(connection_pool=pool).pubsub()
