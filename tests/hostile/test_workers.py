"""Workers and supervision under faults: a Celery worker whose broker or state store runs out of memory, and
``make run``'s supervisor restarting a process that dies, reporting it in ``/healthz`` and stopping in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import requests

from fabric import keys
from tests.support.servers import ROOT, RedisServer, free_port, stop_process
from tests.support.stack import VENV_BIN, kill_tree
from tests.support.waiting import wait_for


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="mmaker-workers-"))
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def start_worker(state: RedisServer, broker: RedisServer, log: Path) -> subprocess.Popen[bytes]:
    """``celery -A tasks worker -Q heatmap`` as ``make run`` starts it, on ``state`` and ``broker``."""
    env = {**os.environ, "REDIS_URL": state.url_db(0), "CELERY_BROKER_URL": broker.url_db(1),
           "MMAKER_UNDERLYINGS": "SPY", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen([str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-Q", "heatmap", "-n",
                                 f"heatmap-{free_port()}@%h", "-c", "1", "-E", "--loglevel", "INFO"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def send_recompute(broker: RedisServer, state: RedisServer) -> None:
    env = {**os.environ, "REDIS_URL": state.url_db(0), "CELERY_BROKER_URL": broker.url_db(1)}
    subprocess.run([str(VENV_BIN / "celery"), "-A", "tasks", "call", "tasks.heatmap.recompute", "--args", '["SPY"]'],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)  # fmt: skip


def test_a_worker_whose_broker_runs_out_of_memory_reconnects_instead_of_exiting(workdir: Path) -> None:
    """Messages waiting when the broker's Redis runs out of memory: the worker's consumer meets OOM on its own
    bookkeeping writes. Celery calls that an unrecoverable error and exits — unless it retries channel
    errors, as our settings make it: the worker stays up and takes tasks again once memory is back."""
    server = RedisServer().start()
    log = workdir / "worker.log"
    worker = start_worker(server, server, log)
    client = redis.Redis.from_url(server.url_db(1))
    try:
        wait_for(lambda: "ready." in log.read_text(errors="replace"), 60, "the worker ready", log)
        os.kill(worker.pid, signal.SIGSTOP)  # messages queue up while it cannot take them
        for _ in range(3):
            send_recompute(server, server)
        # (a BRPOP the worker sent before it stopped may already have taken one into its socket)
        assert client.llen("heatmap") >= 2
        client.config_set("maxmemory", 1)
        os.kill(worker.pid, signal.SIGCONT)
        wait_for(lambda: "Connection to broker lost" in log.read_text(errors="replace"), 60, "the OOM met", log)
        time.sleep(2)  # the broker stays out of memory a while; the worker keeps trying
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        client.config_set("maxmemory", 0)
        done = log.read_text(errors="replace").count("succeeded in")
        send_recompute(server, server)
        wait_for(lambda: log.read_text(errors="replace").count("succeeded in") > done, 60, "a task after it", log)
        assert worker.poll() is None and "Unrecoverable error" not in log.read_text(errors="replace")
    finally:
        client.close()
        kill_tree(worker)
        server.stop()


def test_a_task_whose_state_store_runs_out_of_memory_ends_the_run_not_the_worker(workdir: Path) -> None:
    """The state store out of memory (the broker fine): each run ends with status ``redis_unavailable`` and one
    warning line every 10 s — not a traceback per run — and the worker goes on."""
    state, broker = RedisServer().start(), RedisServer().start()
    log = workdir / "worker.log"
    worker = start_worker(state, broker, log)
    client = redis.Redis.from_url(state.url_db(0))
    try:
        wait_for(lambda: "ready." in log.read_text(errors="replace"), 60, "the worker ready", log)
        client.config_set("maxmemory", 1)  # the task's lock (SET NX PX) is refused with OOM
        for _ in range(3):
            send_recompute(broker, state)
        wait_for(lambda: log.read_text(errors="replace").count("'redis_unavailable'") >= 3, 60, "three runs", log)
        text = log.read_text(errors="replace")
        assert text.count("the state store is unavailable (OutOfMemoryError") == 1  # throttled: one line
        assert "Traceback" not in text and worker.poll() is None
    finally:
        client.close()
        kill_tree(worker)
        state.stop()
        broker.stop()


def processes(url: str) -> dict[str, dict]:
    """The supervisor's process table, as ``/healthz`` reports it (``host/`` stripped)."""
    body = requests.get(url, timeout=5).json()
    return {name.split("/", 1)[1]: status for name, status in (body.get("processes") or {}).items()}


def test_the_supervisor_restarts_what_exits_reports_it_and_stops_redis_last(workdir: Path) -> None:
    """``make run``'s supervisor on a Procfile of its own: a process that keeps exiting is restarted with a
    doubling back-off, a killed web server comes back, ``/healthz`` names both, and SIGINT stops everything —
    the Redis it started last — and exits 0."""
    redis_port, web_port = free_port(), free_port()
    procfile = workdir / "Procfile"
    procfile.write_text(
        f"redis: redis-server --port {redis_port} --bind 127.0.0.1 --dir {workdir} --save '' --appendonly no\n"
        f"web: {sys.executable} -m web --port {web_port} --no-access-log --log-level warning\n"
        f"crasher: {sys.executable} -c 'import time; time.sleep(0.3); raise SystemExit(3)'\n"
    )
    log = workdir / "supervisor.log"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {**os.environ, "REDIS_URL": redis_url, "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/1",
           "MMAKER_UNDERLYINGS": "SPY", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with open(log, "ab") as out:
        supervisor = subprocess.Popen([sys.executable, "-m", "mmaker.supervise", "-f", str(procfile)], cwd=ROOT,
                                      env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    health = f"http://127.0.0.1:{web_port}/healthz"
    try:
        table = wait_for(lambda: _table(health, lambda t: t.get("crasher", {}).get("restarts", 0) >= 3), 60,
                         "the crasher restarted three times", log)  # fmt: skip
        assert table["crasher"]["last_exit"] == 3 and table["web"]["running"] and table["redis"]["running"]
        text = log.read_text()
        waits = [line.split("restarting it in ")[1].split(" s")[0] for line in text.splitlines()
                 if "crasher exited with code 3; restarting it in" in line]  # fmt: skip
        assert waits[:3] == ["1", "2", "4"]  # the back-off doubles

        web_pid = table["web"]["pid"]
        os.kill(web_pid, signal.SIGKILL)
        table = wait_for(lambda: _table(health, lambda t: t.get("web", {}).get("restarts") == 1
                                        and t["web"].get("running")), 60, "web restarted", log)  # fmt: skip
        assert table["web"]["last_exit"] == -signal.SIGKILL and table["web"]["pid"] != web_pid
        body = requests.get(health, timeout=5).json()
        assert any("process" in w and "/web restarted 1 times" in w for w in body["warnings"]), body
        status = redis.Redis.from_url(redis_url).hgetall(keys.processes())
        assert {name.decode().split("/", 1)[1] for name in status} == {"redis", "web", "crasher"}

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(60) == 0
        lines = log.read_text().splitlines()
        stopped = [line.split("stopped ")[1].split(" ")[0] for line in lines if "| stopped " in line]
        assert stopped[-1] == "redis" and "web" in stopped, stopped
        for pid in (table["web"]["pid"], table["redis"]["pid"]):
            wait_for(lambda pid=pid: not _alive(pid), 10, f"pid {pid} gone")
    finally:
        stop_process(supervisor, 30)


def _table(url: str, ready) -> dict | None:  # type: ignore[no-untyped-def]
    try:
        table = processes(url)
    except (requests.RequestException, ValueError):
        return None
    return table if table and ready(table) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def test_the_process_table_entry_decodes() -> None:
    """The supervisor's table is JSON per ``host/process`` (what ``/healthz`` reads back)."""
    from mmaker.supervise import Child

    child = Child("web", "true")
    assert orjson.loads(orjson.dumps(child.status(0.0))) == {
        "running": False, "pid": None, "restarts": 0, "last_exit": None, "last_exit_ms": None, "restart_in_s": None,
    }  # fmt: skip


def test_the_systemd_units_cover_every_process_and_restart_it() -> None:
    """Production supervision: one unit per process of ``mmaker run`` (Redis is the host's own), each restarted
    whenever it exits and never given up on, running the same program with the same queue and name; the
    target wants them all."""
    import configparser

    from fabric.settings import Settings
    from mmaker.processes import process_table

    units = ROOT / "deploy" / "systemd"
    table = process_table(Settings.from_env({}), python="python")
    target = configparser.ConfigParser(strict=False, interpolation=None)
    target.read(units / "mmaker.target")
    wanted = set(target["Unit"]["Wants"].split())
    assert wanted == {f"mmaker-{name}.service" for name in table}
    for name, argv in table.items():
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(units / f"mmaker-{name}.service")
        service = unit["Service"]
        assert service["Restart"] == "always" and unit["Unit"]["StartLimitIntervalSec"] == "0", name
        started = service["ExecStart"].split()
        assert started[0].endswith("/python"), name  # the installed interpreter: python -m …

        def fixed(words: list[str]) -> list[str]:  # the module, queue, worker name, options (no paths, no hosts)
            return [w.replace("%%", "%") for w in words if "/" not in w and not w.startswith("--address")]

        assert fixed(started[1:]) == fixed(argv[1:]), (name, started, argv)
