"""The Celery broker apart from the state store: a real worker consuming ``chain`` and ``heatmap`` from the
RabbitMQ running on this machine, state on a Redis Cluster (``REDIS_URL=redis+cluster://…``) — the deployment
where the broker must be a separate service.

The test has a virtual host of its own, ``mmaker-test``
(``CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/mmaker-test``), created with ``rabbitmqctl`` when it
is missing: the queue names are the app's fixed ones, and a dev stack on the same broker (default vhost ``/``)
must keep its queued tasks. The test's two queues are purged before and after the test
(``celery -A tasks purge -f -Q chain,heatmap``, in that vhost only).
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
from tests.support.servers import ROOT, SimProcess, stop_process
from tests.support.waiting import wait_for

VHOST = "mmaker-test"
BROKER = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
DEFAULT_VHOST = "amqp://guest:guest@127.0.0.1:5672//"
#: Idempotent: an existing vhost or permission is left as it is (rabbitmqctl needs root or the rabbitmq user).
CREATE_VHOST = (
    ["rabbitmqctl", "add_vhost", VHOST],
    ["rabbitmqctl", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
)
QUEUES = "chain,heatmap"
CELERY = str(Path(sys.executable).parent / "celery")


def _connection_error(url: str) -> Exception | None:
    """Why ``url`` cannot be connected to, or None when it can."""
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # whatever the transport raises: refused, access refused, vhost not found
        return exc
    return None


@pytest.fixture(scope="module")
def broker() -> str:
    """The test's vhost on this machine's RabbitMQ, created (``rabbitmqctl``) when the guest user cannot open it."""
    if _connection_error(BROKER) is None:
        return BROKER
    if (down := _connection_error(DEFAULT_VHOST)) is not None:
        pytest.fail(
            f"RabbitMQ is not reachable at {DEFAULT_VHOST} ({down}): apt-get install rabbitmq-server and start it"
        )
    tried: list[str] = []
    for command in CREATE_VHOST:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{' '.join(command)}: {exc}")
            break
        tried.append(f"{' '.join(command)}: exit {done.returncode} {done.stdout.strip()} {done.stderr.strip()}")
        if done.returncode != 0:
            break
    if (error := _connection_error(BROKER)) is not None:
        how = " && ".join(f"sudo {' '.join(c)}" for c in CREATE_VHOST).replace(".*", "'.*'")
        pytest.fail(f"the test's RabbitMQ vhost is not usable at {BROKER} ({error}); creating it failed:\n"
                    + "\n".join(tried) + f"\ncreate it once with: {how}")  # fmt: skip
    return BROKER


def _env(redis_url: str, sim: SimProcess, broker: str) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "CELERY_BROKER_URL": broker, "MMAKER_SIM_PORT": str(sim.port)}
    return {**env, "MMAKER_EPOCH_REQUIRED": "none", "MMAKER_UNDERLYINGS": "SPY,SPX", "PYTHONUNBUFFERED": "1"}


def _purge(env: dict[str, str]) -> None:
    done = subprocess.run([CELERY, "-A", "tasks", "purge", "-f", "-Q", QUEUES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def rabbit_worker(
    rc: ClusterClient, cluster: RedisCluster, sim: SimProcess, broker: str
) -> Iterator[tuple[dict[str, str], Path]]:
    """A worker subprocess on the test's vhost (its queues purged before and after); yields its env and log."""
    env = _env(cluster.url, sim, broker)
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
        stop_process(worker, 15)
        _purge(env)
        log.unlink(missing_ok=True)


def test_a_worker_on_rabbitmq_runs_called_tasks_and_discards_expired_ones(
    rc: ClusterClient, rabbit_worker: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, log = rabbit_worker
    r = rc
    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)  # Celery lets this variable win over an app's own broker
    assert f"amqp://guest:**@127.0.0.1:5672/{VHOST}" in log.read_text(errors="replace")  # the worker's banner

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
