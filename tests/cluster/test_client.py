"""Cluster mode selection (``REDIS_URL=redis+cluster://…``) and pub/sub across the nodes of a real cluster."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncClusterClient
from redis.cluster import RedisCluster as ClusterClient

from fabric import keys
from fabric.redis_client import async_redis_from_url, node_url, pubsub_for, redis_from_settings
from fabric.settings import Settings, is_cluster_url
from tests.cluster.test_scripts import underlyings_on_every_node, write_chain
from tests.support.cluster import RedisCluster


def test_the_url_scheme_selects_the_cluster_client(cluster: RedisCluster) -> None:
    assert is_cluster_url("redis+cluster://h:7000/0") and is_cluster_url("rediss+cluster://h:7000")
    assert not is_cluster_url("redis://h:6379/0") and not is_cluster_url("rediss://h:6379/0")
    assert node_url("rediss+cluster://u:secret@h:7000") == "rediss://u:secret@h:7000/0"
    with pytest.raises(ValueError, match="only database 0"):
        node_url("redis+cluster://h:7000/3")
    settings = Settings.from_env({"REDIS_URL": cluster.url, "CELERY_BROKER_URL": "amqp://guest:guest@h:5672//"})
    client = redis_from_settings(settings)
    try:
        assert isinstance(client, ClusterClient)
        assert len(client.get_primaries()) == 3
    finally:
        client.close()
    plain = redis_from_settings(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert type(plain) is Redis
    plain.close()


def test_a_cluster_state_store_needs_a_broker_of_its_own() -> None:
    with pytest.raises(ValueError, match="CELERY_BROKER_URL"):
        Settings.from_env({"REDIS_URL": "redis+cluster://127.0.0.1:7000/0"})
    settings = Settings.from_env({"REDIS_URL": "redis+cluster://:pw@127.0.0.1:7000/0", "CELERY_BROKER_URL": "amqp://x"})
    assert settings.celery_broker_url == "amqp://x"
    assert "pw" not in repr(settings)


def test_a_subscriber_on_one_node_hears_publications_made_on_every_node(
    rc: ClusterClient, cluster: RedisCluster
) -> None:
    """The chain's epoch transaction PUBLISHes on the node of each underlying; one subscription hears all."""
    underlyings = underlyings_on_every_node(rc)

    async def main() -> list[dict]:
        client = async_redis_from_url(cluster.url, decode_responses=True)
        assert isinstance(client, AsyncClusterClient)
        pubsub = pubsub_for(client)
        assert int(pubsub.connection_pool.connection_kwargs["port"]) in cluster.ports  # a plain node connection
        heard: list[dict] = []
        try:
            await pubsub.subscribe(keys.EPOCHS_CHANNEL)
            assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
            for u in underlyings:
                await asyncio.to_thread(write_chain, rc, u)
            deadline = asyncio.get_running_loop().time() + 20
            while len(heard) < len(underlyings) and asyncio.get_running_loop().time() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    heard.append(orjson.loads(message["data"]))
        finally:
            await pubsub.aclose()
            await client.aclose()
        return heard

    heard = asyncio.run(main())
    assert sorted(note["underlying"] for note in heard) == sorted(underlyings)
    assert {note["state"] for note in heard} == {"warming"}


def test_pubsub_of_a_single_redis_is_its_own(redis_server: object) -> None:
    client = AsyncRedis.from_url("redis://127.0.0.1:1/0")
    assert pubsub_for(client).connection_pool is client.connection_pool
