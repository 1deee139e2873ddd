"""``REDIS_URL`` with a password, and with TLS (``rediss://``): clients, a real chain worker, real ingest.

Two redis-servers started here: one that requires a password, one that serves TLS only (a throwaway CA
made with ``openssl``; plain TCP off) and requires the password too. The CA reaches every client through
the URL (``?ssl_ca_certs=…&ssl_cert_reqs=required``): redis-py (sync and asyncio) and Celery's broker.
The whole stack (every worker, beat, ingest, web and Flower) runs on the TLS one in ``test_secrets.py``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import SSLConnection as AsyncSSLConnection

from celeryconfig import _broker_use_ssl
from fabric import keys
from fabric.redis_client import async_redis_from_settings, redis_from_settings
from fabric.settings import Settings
from tests.security.helpers import LoggedProcess
from tests.support.servers import ROOT, RedisServer
from tests.support.stack import VENV_BIN, Stack
from tests.support.waiting import wait_for

PASSWORD = "redis-pw-" + secrets.token_hex(8)


@pytest.fixture(scope="module", params=["password", "tls"])
def secured(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server requiring ``PASSWORD``; with ``tls`` it serves only TLS."""
    server = RedisServer(password=PASSWORD, tls=request.param == "tls").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def with_password() -> Iterator[RedisServer]:
    """A redis-server requiring ``PASSWORD`` (plain TCP)."""
    server = RedisServer(password=PASSWORD).start()
    yield server
    server.stop()


def test_sync_and_asyncio_clients_use_the_url_as_given(secured: RedisServer) -> None:
    settings = Settings.from_env({"REDIS_URL": secured.url})
    assert settings.celery_broker_url == secured.url_db(1)  # the broker keeps the password and the TLS options
    client = redis_from_settings(settings)
    try:
        client.set("security:probe", "sync")
        assert client.get("security:probe") == "sync"
        assert (client.connection_pool.connection_class is redis.SSLConnection) == bool(secured.tls)
    finally:
        client.close()

    async def use_async() -> str | None:
        aclient = async_redis_from_settings(settings)
        try:
            assert (aclient.connection_pool.connection_class is AsyncSSLConnection) == bool(secured.tls)
            await aclient.set("security:probe", "async")
            return await aclient.get("security:probe")
        finally:
            await aclient.aclose()

    assert asyncio.run(use_async()) == "async"

    # the server really enforces what the URL carries
    bare = secured.url.replace(f":{PASSWORD}@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(secured.url.replace(PASSWORD, "wrong"), socket_timeout=5).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis.from_url(bare, socket_timeout=5).ping()
    if secured.tls:
        plain = f"redis://:{PASSWORD}@127.0.0.1:{secured.port}/0"
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(plain, socket_timeout=5).ping()  # no plain TCP on a TLS port
        without_ca = secured.url.split("?")[0]
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            redis.Redis.from_url(without_ca, socket_timeout=5).ping()  # the certificate is verified


def test_a_real_chain_worker_and_ingest_write_state(with_password: RedisServer) -> None:
    stack = Stack(with_password, underlyings="SPY")
    stack.env["MMAKER_EPOCH_REQUIRED"] = "none"
    state = redis.Redis.from_url(with_password.url_db(0), decode_responses=True)
    state.flushall()
    try:
        stack.start("chain", "ingest")
        logs = lambda: "\n".join(f"--- {n}\n{stack.log(n)[-3000:]}" for n in stack.procs)  # noqa: E731
        # the chain snapshot task, sent through the (password / TLS) broker by the celery CLI
        sent = subprocess.run(
            [str(VENV_BIN / "celery"), "-A", "tasks", "call", "tasks.chain.snapshot", "--args", '["SPY"]'],
            cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: state.get(keys.active_epoch("SPY")), 90, "the chain worker promoted an SPY epoch", logs)
        epoch = state.get(keys.active_epoch("SPY"))
        assert int(state.hget(keys.epoch_meta("SPY", epoch), "contracts") or 0) > 1000
        # ingest follows the epoch and commits trades into it
        committed = lambda: int(state.hget(keys.ingest_status(), "events_committed") or 0)  # noqa: E731
        wait_for(lambda: committed() > 0, 60, "ingest committed events", logs)
        wait_for(lambda: state.scard(keys.dirty_contracts("SPY", epoch)) > 0, 30, "trades marked contracts", logs)
        for name in stack.procs:
            assert PASSWORD not in stack.log(name), f"the Redis password is in the {name} log"
    finally:
        stack.stop()
        state.close()


def test_a_wrong_password_is_a_clear_error_without_the_password(with_password: RedisServer, tmp_path: Path) -> None:
    secured = with_password
    wrong = "wrong-" + secrets.token_hex(8)
    url = secured.url.replace(PASSWORD, wrong)
    env = {**os.environ, "REDIS_URL": url, "CELERY_BROKER_URL": secured.url_db(1).replace(PASSWORD, wrong),
           "MMAKER_UNDERLYINGS": "SPY", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    ingest = subprocess.run([sys.executable, "-m", "ingest"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    out = ingest.stdout + ingest.stderr
    assert ingest.returncode == 2, out
    assert "refused the login" in out and "check the password in REDIS_URL" in out
    assert f"127.0.0.1:{secured.port}" in out and ":***@" in out
    assert "Traceback" not in out and wrong not in out and PASSWORD not in out

    worker = LoggedProcess(
        [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-Q", "chain", "-c", "1", "--loglevel", "INFO"],
        env, "chain-worker", tmp_path,
    )  # fmt: skip
    try:
        wait_for(lambda: "Cannot connect to" in worker.log(), 60, "the worker reporting the refused login",
                 worker.log)  # fmt: skip
    finally:
        worker.stop()
    log = worker.log()
    assert "invalid username-password pair" in log and f"127.0.0.1:{secured.port}/1" in log
    assert wrong not in log and PASSWORD not in log


def test_a_rediss_broker_verifies_the_certificate_unless_the_url_says_otherwise() -> None:
    assert _broker_use_ssl("redis://:pw@127.0.0.1:6379/1") is None
    assert _broker_use_ssl("rediss://:pw@redis.internal:6380/1") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    url = "rediss://h:6380/1?ssl_cert_reqs=optional&ssl_ca_certs=/ca.crt&ssl_certfile=/c.crt&ssl_keyfile=/c.key"
    assert _broker_use_ssl(url) == {
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": "/ca.crt",
        "ssl_certfile": "/c.crt",
        "ssl_keyfile": "/c.key",
    }
    with pytest.raises(ValueError, match="use required, optional or none"):
        _broker_use_ssl("rediss://h:6380/1?ssl_cert_reqs=maybe")
