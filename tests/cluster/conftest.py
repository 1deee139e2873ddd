"""A real three-master Redis Cluster for the tests of this package (started once, emptied per test)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster as ClusterClient

from fabric.redis_client import redis_from_url
from fabric.settings import Settings
from tests.support.cluster import RedisCluster
from tests.support.servers import SimProcess


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster]:
    """Three masters on free ports, slots spread by ``redis-cli --cluster create``."""
    running = RedisCluster().start()
    yield running
    running.stop()


@pytest.fixture
def rc(cluster: RedisCluster) -> Iterator[ClusterClient]:
    """The product's own client of the cluster (``redis+cluster://`` URL, text replies), every node emptied."""
    cluster.flush()
    client = redis_from_url(cluster.url, decode_responses=True)
    assert isinstance(client, ClusterClient)
    yield client
    client.close()


@pytest.fixture
def cluster_settings(cluster: RedisCluster, sim: SimProcess) -> Settings:
    """Settings of a cluster deployment: state on the cluster, the broker elsewhere, the run's simulator."""
    env = {**os.environ, "REDIS_URL": cluster.url, "MMAKER_SIM_PORT": str(sim.port)}
    return Settings.from_env(env)
