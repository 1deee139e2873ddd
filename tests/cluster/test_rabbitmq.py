"""The Celery broker apart from the state store: a real worker consuming ``chain`` and ``heatmap`` from the
RabbitMQ running on this machine (``CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//``), state on a
Redis Cluster (``REDIS_URL=redis+cluster://…``) — the deployment where the broker must be a separate service.

The queue names are the app's fixed ones, so the two queues are purged before and after the test
(``celery -A tasks purge -f -Q chain,heatmap``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection
from redis.cluster import RedisCluster as ClusterClient

from fabric import keys
from tests.support.cluster import RedisCluster
from tests.support.servers import ROOT, SimProcess
from tests.support.waiting import wait_for

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
QUEUES = "chain,heatmap"
CELERY = str(Path(sys.executable).parent / "celery")


def _env(redis_url: str, sim: SimProcess) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "CELERY_BROKER_URL": BROKER, "MMAKER_SIM_PORT": str(sim.port)}
    return {**env, "MMAKER_EPOCH_REQUIRED": "none", "MMAKER_UNDERLYINGS": "SPY,SPX", "PYTHONUNBUFFERED": "1"}


def _purge(env: dict[str, str]) -> None:
    done = subprocess.run([CELERY, "-A", "tasks", "purge", "-f", "-Q", QUEUES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def rabbit_worker(rc: ClusterClient, cluster: RedisCluster, sim: SimProcess) -> Iterator[tuple[dict[str, str], Path]]:
    """A worker subprocess on RabbitMQ (queues purged before and after); yields its env and log file."""
    try:
        with Connection(BROKER, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"RabbitMQ is not reachable at {BROKER} ({exc}): apt-get install rabbitmq-server and start it")
    env = _env(cluster.url, sim)
    _purge(env)
    log = Path(tempfile.mkstemp(prefix="mmaker-rabbit-worker-", suffix=".log")[1])
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [CELERY, "-A", "tasks", "worker", "-Q", QUEUES, "-P", "solo", "-c", "1", "-n", f"rabbit-{os.getpid()}@%h",
             "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: b"ready." in log.read_bytes() or worker.poll() is not None, 60, "worker ready", log)
        assert worker.poll() is None, log.read_text(errors="replace")
        yield env, log
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        _purge(env)
        log.unlink(missing_ok=True)


def test_a_worker_on_rabbitmq_runs_called_tasks_and_discards_expired_ones(
    rc: ClusterClient, rabbit_worker: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, log = rabbit_worker
    r = rc
    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)  # Celery lets this variable win over an app's own broker
    assert "amqp://guest:**@127.0.0.1:5672//" in log.read_text(errors="replace")  # the worker's banner

    # `celery call` through RabbitMQ: a chain snapshot (queue chain) creates and promotes SPY's epoch
    called = subprocess.run([CELERY, "-A", "tasks", "call", "tasks.chain.snapshot", "--args", '["SPY"]'], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert called.returncode == 0, called.stdout + called.stderr
    wait_for(lambda: r.get(keys.active_epoch("SPY")), 60, "SPY snapshot through RabbitMQ", log)

    # send_task from a client that knows only the broker: the heatmap (queue heatmap) publishes SPY's view
    client = Celery("rabbit-client", broker=BROKER)
    try:
        client.send_task("tasks.chain.snapshot", args=["SPX"], queue="chain")
        client.send_task("tasks.heatmap.recompute", args=["SPY"], queue="heatmap")
        wait_for(lambda: r.get(keys.model_view("heatmap", "SPY")), 60, "SPY heatmap through RabbitMQ", log)
        wait_for(lambda: r.get(keys.active_epoch("SPX")), 60, "SPX snapshot through RabbitMQ", log)

        # an expired task is discarded by the worker; the one sent after it runs
        expired = client.send_task("tasks.heatmap.recompute", args=["SPX"], queue="heatmap",
                                   expires=datetime.now(UTC) - timedelta(seconds=1))  # fmt: skip
        after = client.send_task("tasks.heatmap.recompute", args=["SPX"], queue="heatmap", expires=60)
        wait_for(lambda: f"{after.id}] succeeded" in log.read_text(errors="replace"), 60, "the task after", log)
    finally:
        client.close()
    text = log.read_text(errors="replace")
    assert f"{expired.id}] succeeded" not in text
    # Celery gives an already expired message TTL 0, so RabbitMQ drops it unless a consumer takes it at once;
    # one the worker did receive must have been discarded by the worker
    if f"{expired.id}] received" in text:
        assert f"Discarding revoked task: tasks.heatmap.recompute[{expired.id}]" in text
    assert r.get(keys.model_version("heatmap", "SPX")) == "1", "exactly one SPX recompute ran: the unexpired one"
