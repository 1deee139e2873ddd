"""``python -m mmaker.supervise``: run processes, restart any that exits, stop them in order.

What ``mmaker run`` (``make run``) runs its process table under (:mod:`mmaker.processes`); it also runs the
processes of any Procfile (``python -m mmaker.supervise -f Procfile``). Unlike honcho, which stops every
process as soon as one exits, a process that exits on its own is started again after a back-off (1 s,
doubling to 30 s; back to 1 s once it has run for a minute), each restart counted and logged, and the whole
table written every second to ``mmaker:processes``
in Redis (``/healthz`` shows it). Ctrl-C or SIGTERM stops everything in order: every process but the
``--last`` ones (the Redis it started) first — SIGTERM, a grace period, then SIGKILL — and those last, so no
process loses its state store while it still writes.

Each process runs in a session of its own (a terminal's Ctrl-C reaches only the supervisor, which stops the
others in order), its output prefixed with its name. An argument list is started as it is; a Procfile's
command line under ``/bin/sh -c 'exec …'``, so that ``${VAR:-default}`` expands as in a Procfile and the
signal reaches the process itself.

With ``--ready-url`` the supervisor polls that URL (``/healthz``) and prints one line, ``ready: …``, the first
time it answers 200 — every view is live.

Production deployments use the units in ``deploy/`` (systemd) instead; they carry the same restart policy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0  # a process that ran this long starts its back-off again from the beginning
GRACE_S = 10.0  # between SIGTERM and SIGKILL when stopping
STATUS_TTL_S = 10


def read_procfile(path: Path) -> dict[str, str]:
    """``name → command`` of every ``name: command`` line (comments and blank lines skipped), in file order."""
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PROCFILE_LINE.match(line.strip())
        if match and not line.lstrip().startswith("#"):
            entries[match.group(1)] = match.group(2)
    return entries


def next_backoff_s(previous_s: float | None, ran_s: float) -> float:
    """The wait before the next start of a process that ran ``ran_s`` seconds: doubling from 1 s to 30 s,
    from 1 s again after a stable run."""
    if previous_s is None or ran_s >= STABLE_S:
        return BACKOFF_INITIAL_S
    return min(BACKOFF_MAX_S, previous_s * 2)


@dataclass
class Child:
    """One supervised process and its history."""

    name: str
    command: str | list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    restarts: int = 0
    backoff_s: float | None = None
    restart_at_s: float | None = None  # monotonic time of the next start while it is down
    last_exit: int | None = None
    last_exit_ms: int | None = None
    readers: list[threading.Thread] = field(default_factory=list)

    def status(self, now_s: float) -> dict[str, object]:
        """What ``mmaker:processes`` holds for this process."""
        running = self.proc is not None and self.proc.poll() is None
        return {
            "running": running,
            "pid": self.proc.pid if running and self.proc else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_ms": self.last_exit_ms,
            "restart_in_s": None if running or self.restart_at_s is None else round(self.restart_at_s - now_s, 1),
        }


class Supervisor:
    """Starts, watches, restarts and stops the processes of a Procfile."""

    def __init__(
        self,
        entries: dict[str, str] | dict[str, list[str]],
        *,
        last: tuple[str, ...] = ("redis",),
        redis_url: str | None = None,
        ready_url: str | None = None,
        out: IO[str] = sys.stdout,
    ) -> None:
        self.children = {name: Child(name, command) for name, command in entries.items()}
        self.last = tuple(name for name in last if name in self.children)
        self.redis_url = redis_url
        self.ready_url = ready_url
        self.out = out
        self.host = socket.gethostname()
        self.stopping = threading.Event()
        self._print_lock = threading.Lock()
        self._width = max((len(name) for name in self.children), default=4)
        self._redis = None

    # ----- output ------------------------------------------------------------------------------------------
    def say(self, name: str, line: str) -> None:
        """One line of output, prefixed with the time and the process name."""
        stamp = time.strftime("%H:%M:%S")
        with self._print_lock:
            self.out.write(f"{stamp} {name:<{self._width}} | {line}\n")
            self.out.flush()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    # ----- lifecycle -----------------------------------------------------------------------------------------
    def start(self, child: Child) -> None:
        """Start ``child`` (in a session of its own, its output pumped to ours)."""
        argv = child.command if isinstance(child.command, list) else ["/bin/sh", "-c", f"exec {child.command}"]
        child.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_s = time.monotonic()
        child.restart_at_s = None
        assert child.proc.stdout is not None
        reader = threading.Thread(target=self._pump, args=(child.name, child.proc.stdout), daemon=True)
        reader.start()
        child.readers = [reader]
        self.say("supervisor", f"started {child.name} (pid {child.proc.pid})")

    def check(self, now_s: float) -> None:
        """Notice exits, schedule restarts and start what is due."""
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is not None and child.restart_at_s is None:
                code = child.proc.returncode
                child.last_exit, child.last_exit_ms = code, time.time_ns() // 1_000_000
                child.backoff_s = next_backoff_s(child.backoff_s, now_s - child.started_s)
                child.restart_at_s = now_s + child.backoff_s
                self.say("supervisor", f"{child.name} exited with code {code}; restarting it in {child.backoff_s:g} s "
                                       f"(restart #{child.restarts + 1})")  # fmt: skip
            if child.restart_at_s is not None and now_s >= child.restart_at_s:
                child.restarts += 1
                self.start(child)

    def stop_all(self) -> None:
        """Stop everything: the others first, then ``last`` (each group: SIGTERM, grace, SIGKILL)."""
        first = [c for c in self.children.values() if c.name not in self.last]
        then = [self.children[name] for name in self.last]
        for group in (first, then):
            running = [c for c in group if c.proc is not None and c.proc.poll() is None]
            for child in running:
                self.say("supervisor", f"stopping {child.name}")
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + GRACE_S
            for child in running:
                assert child.proc is not None
                try:
                    child.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say("supervisor", f"{child.name} did not stop within {GRACE_S:g} s: killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.proc.pid, signal.SIGKILL)
                    child.proc.wait()
                with contextlib.suppress(ProcessLookupError):  # what it left behind (a worker's pool children)
                    os.killpg(child.proc.pid, signal.SIGKILL)
                self.say("supervisor", f"stopped {child.name} (exit {child.proc.returncode})")
        for child in self.children.values():
            for reader in child.readers:
                reader.join(2)

    # ----- status --------------------------------------------------------------------------------------------
    def publish_status(self, now_s: float) -> None:
        """Write every process's status to ``mmaker:processes`` (best effort: Redis may be down or starting)."""
        if not self.redis_url:
            return
        from fabric import keys
        from fabric.redis_client import redis_from_url

        try:
            if self._redis is None:
                self._redis = redis_from_url(self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            mapping = {f"{self.host}/{c.name}": orjson.dumps(c.status(now_s)) for c in self.children.values()}
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(keys.processes(), mapping=mapping)
            pipe.expire(keys.processes(), STATUS_TTL_S)
            pipe.execute()
        except Exception:  # a status write must never stop the supervisor
            self._redis = None

    def _watch_ready(self) -> None:
        assert self.ready_url is not None
        while not self.stopping.wait(1.0):
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                    if response.status == 200:
                        self.say("supervisor", f"ready: every view is live — {self.ready_url.rsplit('/', 1)[0]}/")
                        return
            except (OSError, ValueError):
                continue

    def run(self) -> int:
        """Run until SIGINT / SIGTERM; returns 0 after an orderly stop."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stopping.set())
        for name in self.last:  # what the others need (Redis) first
            self.start(self.children[name])
        for child in self.children.values():
            if child.proc is None:
                self.start(child)
        if self.ready_url:
            threading.Thread(target=self._watch_ready, name="ready", daemon=True).start()
        last_status = 0.0
        while not self.stopping.wait(0.2):
            now_s = time.monotonic()
            self.check(now_s)
            if now_s - last_status >= 1.0:
                self.publish_status(now_s)
                last_status = now_s
        self.say("supervisor", "stopping every process (the state store last)")
        self.stop_all()
        return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and supervise."""
    parser = argparse.ArgumentParser(prog="python -m mmaker.supervise", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="the processes to run (default: every one of the Procfile)")
    parser.add_argument("-f", "--procfile", default="Procfile", type=Path, help="the Procfile (default: ./Procfile)")
    parser.add_argument("--last", default="redis", help="comma list of processes stopped last (default: redis)")
    parser.add_argument("--ready-url", help="print 'ready: …' when this URL (e.g. /healthz) first answers 200")
    parser.add_argument("--status-redis", default=os.environ.get("REDIS_URL"),
                        help="where to write the process table (default: $REDIS_URL; '' for nowhere)")  # fmt: skip
    args = parser.parse_args(argv)
    entries = read_procfile(args.procfile)
    unknown = [name for name in args.names if name not in entries]
    if unknown:
        parser.error(f"not in {args.procfile}: {', '.join(unknown)}")
    chosen = {name: entries[name] for name in (args.names or entries)}
    supervisor = Supervisor(chosen, last=tuple(filter(None, args.last.split(","))), redis_url=args.status_redis or None,
                            ready_url=args.ready_url)  # fmt: skip
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
