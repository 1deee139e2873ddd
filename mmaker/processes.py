"""The processes of one mmaker host and their command lines, built from the settings — pure, no I/O.

``mmaker run`` (and ``make run``) starts this table under the supervisor; the systemd units in
``deploy/systemd`` run the same programs with the same queues and names. Every command is an argument list
(no shell), started with this interpreter (``sys.executable -m …``), so an installed package runs as
well as a checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fabric.settings import Settings

#: The Celery queues, one worker process each.
WORKER_QUEUES = ("chain", "heatmap", "gex")


def celery(python: str, *args: str) -> list[str]:
    """``celery -A tasks …`` through ``python``."""
    return [python, "-m", "celery", "-A", "tasks", *args]


def process_table(
    settings: Settings,
    *,
    python: str = sys.executable,
    state_dir: Path = Path("var"),
    redis_port: int | None = None,
    simulator: bool | None = None,
) -> dict[str, list[str]]:
    """``name → argv`` of every process of one host, in start order.

    ``redis_port``: also start a local ``redis-server`` on that port (append-only file under
    ``state_dir/redis``). ``simulator``: start the simulator (default: when no Massive API key is set).
    Celery workers and beat log at ``settings.log_level`` (``MMAKER_LOG_LEVEL``, WARNING by default).
    """
    table: dict[str, list[str]] = {}
    if redis_port is not None:
        directory = str(state_dir / "redis")
        table["redis"] = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", directory,
                          "--appendonly", "yes", "--save", "", "--loglevel", "warning"]  # fmt: skip
    if settings.uses_simulator if simulator is None else simulator:
        sim = [python, "-m", "sim", "--host", settings.sim_host, "--port", str(settings.sim_port), "--seed",
               str(settings.sim_seed), "--underlyings", ",".join(settings.underlyings)]  # fmt: skip
        if settings.sim_replay_dir:
            sim += ["--replay", settings.sim_replay_dir, "--speed", settings.sim_speed]
        table["sim"] = sim
    table["ingest"] = [python, "-m", "ingest"]
    level = settings.log_level
    for queue in WORKER_QUEUES:
        table[queue] = celery(python, "worker", "-Q", queue, "-n", f"{queue}@%h", "-c", "1", "-E", "--loglevel", level)
    table["beat"] = celery(python, "beat", "--loglevel", level, "--schedule", str(state_dir / "celerybeat-schedule"))
    table["web"] = [python, "-m", "web"]
    table["flower"] = celery(python, "flower", f"--address={settings.flower_address}", f"--port={settings.flower_port}")
    return table
