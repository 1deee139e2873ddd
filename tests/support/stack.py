"""The whole mmaker stack as real subprocesses — what ``make run`` starts — against a test redis-server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.servers import ROOT, RedisServer, SimProcess, free_port

VENV_BIN = Path(sys.executable).parent


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, …), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything below it (a Celery worker's pool children die with it)."""
    below = descendants(proc.pid)
    proc.kill()
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


class Stack:
    """sim, ingest, chain / heatmap / gex workers, beat and web, each its own OS process."""

    def __init__(
        self,
        redis_server: RedisServer,
        *,
        underlyings: str = "SPY,SPX",
        seed: int = 7,
        env: Mapping[str, str] | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.redis = redis_server
        self.log_level = log_level
        self.sim = SimProcess("--tick-rate", "3000", underlyings=underlyings, seed=seed)
        self.web_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mmaker-stack-"))
        self.env = {
            **os.environ,
            "REDIS_URL": redis_server.url_db(0),
            "CELERY_BROKER_URL": redis_server.url_db(1),
            "MMAKER_SIM_PORT": str(self.sim.port),
            "MMAKER_UNDERLYINGS": underlyings,
            "MMAKER_EPOCH_REQUIRED": "ingest,heatmap,gex",
            "MMAKER_WEB_PORT": str(self.web_port),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env.pop("MASSIVE_API_KEY", None)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, name: str) -> list[str]:
        """The command line of one process (the same as the Procfile's)."""
        celery = [str(VENV_BIN / "celery"), "-A", "tasks"]
        worker = ["worker", "-c", "1", "--without-mingle", "--without-gossip", "--loglevel", self.log_level]
        return {
            "ingest": [sys.executable, "-m", "ingest"],
            "chain": [*celery, *worker, "-Q", "chain", "-n", "chain@%h"],
            "heatmap": [*celery, *worker, "-Q", "heatmap", "-n", "heatmap@%h"],
            "gex": [*celery, *worker, "-Q", "gex", "-n", "gex@%h"],
            "beat": [*celery, "beat", "--loglevel", self.log_level, "--schedule", str(self.dir / "beat-schedule")],
            "web": [sys.executable, "-m", "web", "--no-access-log", "--log-level", "warning"],
        }[name]

    def start(self, *names: str) -> Stack:
        """Start the simulator (once) and the named processes (all by default)."""
        if self.sim.proc is None:
            self.sim.start()
        for name in names or ("ingest", "chain", "heatmap", "gex", "beat", "web"):
            log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until stopped
            self.procs[name] = subprocess.Popen(self.command(name), cwd=ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT)  # fmt: skip
        return self

    def kill(self, name: str, *, tree: bool = False) -> None:
        """SIGKILL one process (no cleanup of any kind); ``tree=True`` also its children (a worker's pool)."""
        proc = self.procs.pop(name)
        if tree:
            kill_tree(proc)
        else:
            proc.kill()
            proc.wait()

    def restart(self, name: str) -> None:
        """kill -9 one process with its children, then start it again with the same command."""
        self.kill(name, tree=True)
        self.start(name)

    def log(self, name: str) -> str:
        """What the process wrote so far."""
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_tail(self) -> str:
        """The end of every running process's log (what a failing wait shows)."""
        return "\n".join(f"--- {name}\n{self.log(name)[-1500:]}" for name in self.procs)

    def stop(self) -> None:
        """Stop everything (SIGTERM, then SIGKILL)."""
        for proc in self.procs.values():
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self.sim.stop()
