"""A real, throwaway redis-server for the beat_schedule tests (never the one on 6379).

Self-contained on purpose: the lead may move these fixtures to the root conftest.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

REDIS_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The URL of a redis-server started for this test session on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: install it (apt-get install redis-server) to run these tests")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url, socket_connect_timeout=0.5)
    deadline_s = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while True:
            try:
                client.ping()
                break
            except RedisConnectionError:
                if process.poll() is not None or time.monotonic() > deadline_s:
                    pytest.fail(f"redis-server on port {port} did not answer PING")
                time.sleep(0.02)
        yield url
    finally:
        client.close()
        process.kill()
        process.wait(timeout=5)


@pytest.fixture
def redis_client(redis_server_url: str) -> Iterator[Redis]:
    """A ``decode_responses=True`` client of the test server, its database flushed after the test."""
    client = Redis.from_url(redis_server_url, decode_responses=True)
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
