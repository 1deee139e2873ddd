"""A real ``python -m ingest`` for fault tests: its own redis-server, a feed, a promoted SPY epoch, its status."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import redis

from chain.snapshot import run_snapshot
from fabric import keys
from fabric.settings import Settings
from tests.support.servers import ROOT, RedisServer, SimProcess
from tests.support.stack import kill_tree
from tests.support.waiting import wait_for

U = "SPY"


def status(r: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """The ingest process's (counters, rejects) from its status hash."""
    counters, rejects = r.hmget(keys.ingest_status(), "counters", "rejects")
    return orjson.loads(counters or "{}"), orjson.loads(rejects or "{}")


def trades_in_redis(r: redis.Redis, epoch: str) -> int:
    """Every trade the contract hashes hold (their ``trades`` counters start absent = 0)."""
    pipe = r.pipeline(transaction=False)
    for cid in r.smembers(keys.epoch_universe(U, epoch)):
        pipe.hget(keys.contract(U, epoch, "heatmap", cid), "trades")
    return sum(int(n or 0) for n in pipe.execute())


@dataclasses.dataclass
class Running:
    """A test redis-server, the simulator, a promoted SPY epoch and ``python -m ingest`` committing into it."""

    server: RedisServer
    sim: SimProcess
    r: redis.Redis
    epoch: str
    proc: subprocess.Popen[bytes]
    log: Path


def log_text(run: Running) -> str:
    """What the ingest process has logged so far."""
    return run.log.read_text(errors="replace")


@contextmanager
def ingest_running(
    *, seed: int, aof: bool = False, ws_url: str | None = None, env: dict[str, str] | None = None,
    tick_rate: int = 3000,
) -> Iterator[Running]:  # fmt: skip
    """Start a redis-server, the simulator (the chain snapshot's REST server, and the feed unless ``ws_url``
    names another), a promoted SPY epoch and ``python -m ingest`` (``env`` added to its environment); wait
    until ingest commits trades (with the simulator as its feed) or is connected (another feed); yield; stop
    everything whatever happened."""
    server = RedisServer(aof=aof).start()
    sim = SimProcess("--tick-rate", str(tick_rate), underlyings=U, seed=seed).start()
    directory = Path(tempfile.mkdtemp(prefix="mmaker-ingest-faults-"))
    log = directory / "ingest.log"
    proc: subprocess.Popen[bytes] | None = None
    r = redis.Redis.from_url(server.url_db(0), decode_responses=True, socket_timeout=5)
    try:
        settings = dataclasses.replace(Settings.from_env({}), redis_url=server.url_db(0), underlyings=(U,),
                                       massive_rest_url=sim.rest_url, epoch_required_components=())  # fmt: skip
        outcome = run_snapshot(r, settings, U)
        assert outcome.status == "created" and outcome.promotion == "promoted", outcome
        environ = {**{k: v for k, v in os.environ.items() if k != "MASSIVE_API_KEY"}, "REDIS_URL": server.url_db(0),
                   "MMAKER_SIM_PORT": str(sim.port), "MMAKER_UNDERLYINGS": U, "PYTHONUNBUFFERED": "1",
                   **({"MASSIVE_WS_URL": ws_url} if ws_url else {}), **(env or {})}  # fmt: skip
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=environ, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        if ws_url is None:
            wait_for(lambda: status(r)[0].get("trades_applied", 0) > 50, 60, "ingest committing trades", log)
        else:
            wait_for(lambda: r.hget(keys.ingest_status(), "connected") == "1", 60, "ingest connected", log)
        yield Running(server, sim, r, outcome.epoch or "", proc, log)
    finally:
        if proc is not None:
            kill_tree(proc)
        r.close()
        sim.stop()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
