"""Worker faults with real ``celery worker`` processes: a worker killed mid-task, the same task twice at once.

Two workers (every queue, ``-c 1`` each, as on two hosts) against their own state Redis and broker Redis
(a separate server, so pausing the state store's writes never stalls the broker) and a private simulator.
``CLIENT PAUSE … WRITE`` on the state store makes the interleavings exact instead of timed: both workers are
held at the lock's ``SET NX`` before either proceeds; a heatmap run is held after it took the dirty set (the
attempt made again if the run wrote its tiles before the pause landed); a chain snapshot is held inside its
MULTI, before EXEC — and then killed with SIGKILL (the pool child with it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from celery import Celery

from chain.snapshot import run_snapshot
from fabric import keys
from fabric.settings import Settings
from fabric.tiles import project_counters, read_tiles
from models.heatmap import aggregate_tiles
from tasks.models import LOCK_TIMEOUT_S
from tests.support.servers import ROOT, RedisServer, SimProcess
from tests.support.stack import VENV_BIN, kill_tree
from tests.support.waiting import wait_for

U = "SPY"
CELERY = [str(VENV_BIN / "celery"), "-A", "tasks"]
QUEUES = {"tasks.chain.snapshot": "chain", "tasks.heatmap.recompute": "heatmap", "tasks.gex.recompute": "gex"}
STATUS = re.compile(r"Task (tasks\.[\w.]+)\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: .*'status': '(\w+)'")


class Worker:
    """``celery -A tasks worker`` on every queue as a subprocess, logging at INFO (task results included)."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0

    def start(self) -> Worker:
        self.offset = len(self.log())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*CELERY, "worker", "-Q", "chain,heatmap,gex", "-c", "1", "-n", f"{self.name}@%h",
                 "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def wait_ready(self) -> None:
        wait_for(lambda: " ready." in self.log()[self.offset :], 60, f"worker {self.name} ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def statuses(self, task: str) -> list[str]:
        """The status of every finished run of ``task`` in this worker's log."""
        return [m.group(2) for m in STATUS.finditer(self.log()) if m.group(1) == task]

    def kill(self) -> None:
        """SIGKILL the worker and its pool child: no cleanup of any kind runs."""
        assert self.proc is not None
        kill_tree(self.proc)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc)


class Setup:
    """The servers, the environment of every process, the two workers."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mmaker-workers-"))
        self.state = RedisServer().start()
        self.broker = RedisServer().start()
        self.sim = SimProcess("--tick-rate", "0", underlyings=U).start()
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "MASSIVE_API_KEY"},
            "REDIS_URL": self.state.url_db(0),
            "CELERY_BROKER_URL": self.broker.url_db(0),
            "MMAKER_SIM_PORT": str(self.sim.port),
            "MMAKER_UNDERLYINGS": U,
            "MMAKER_EPOCH_REQUIRED": "none",
            "PYTHONUNBUFFERED": "1",
        }
        self.r = redis.Redis.from_url(self.state.url_db(0), decode_responses=True)
        self.workers = [Worker(name, self.env, self.dir) for name in ("one", "two")]
        self.app = Celery("faults", broker=self.broker.url_db(0))

    def logs_tail(self) -> str:
        """The end of both workers' logs (what a failing wait shows)."""
        return "\n".join(f"--- {w.name}\n{w.log()[-2000:]}" for w in self.workers)

    def start_workers(self) -> None:
        for worker in self.workers:
            worker.start()

    def wait_workers(self) -> None:
        for worker in self.workers:
            worker.wait_ready()

    def send(self, task: str) -> None:
        """The message ``celery call`` sends, from this process (no CLI start-up)."""
        # explicitly this broker: CELERY_BROKER_URL (the session's broker here) would win over the app's own
        with self.app.connection_for_write(self.broker.url_db(0)) as connection:
            self.app.send_task(task, args=[U], queue=QUEUES[task], connection=connection)

    def kill_workers(self) -> None:
        """SIGKILL both workers while writes are paused, and drop their connections before Redis reads on: a
        command the dead run had already sent (held by the pause) dies with it instead of running later."""
        for worker in self.workers:
            worker.kill()
        self.r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    def call(self, task: str, times: int = 1) -> Callable[[], None]:
        """``celery -A tasks call <task> --args '["SPY"]'``, ``times`` CLI processes at once (the task may run
        before the CLI has exited); returns the function that waits for them and checks they succeeded."""
        procs = [subprocess.Popen([*CELERY, "call", task, "--args", f'["{U}"]'], cwd=ROOT, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(times)]  # fmt: skip

        def done() -> None:
            for proc in procs:
                out, _ = proc.communicate(timeout=60)
                assert proc.returncode == 0, out

        return done

    def statuses(self, task: str) -> list[str]:
        return sorted(s for worker in self.workers for s in worker.statuses(task))

    def pause_writes(self) -> None:
        self.r.execute_command("CLIENT", "PAUSE", "30000", "WRITE")

    def unpause(self) -> None:
        self.r.execute_command("CLIENT", "UNPAUSE")

    def clients(self) -> list[dict[str, str]]:
        me = str(self.r.client_id())
        return [c for c in self.r.client_list() if c["id"] != me]

    def active(self) -> str:
        return self.r.get(keys.active_epoch(U))

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()
        self.r.close()
        self.sim.stop()
        self.state.stop()
        self.broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    running = Setup()
    try:
        running.start_workers()
        outcome = run_snapshot(running.r, Settings.from_env(running.env), U)  # the first epoch, in-process
        assert outcome.status == "created" and outcome.promotion == "promoted", outcome
        running.wait_workers()
        yield running
    finally:
        running.close()


def trade_everywhere(r: redis.Redis, epoch: str, step: int, every: int = 1) -> int:
    """What ingest does for a trade, for every ``every``-th heatmap contract: counters up, their counter records
    written, contracts dirty (in that order, as the ingest script does them)."""
    cids = r.zrange(keys.model_index(U, epoch, "heatmap", "plane"), 0, -1)[::every]
    pipe = r.pipeline(transaction=False)
    for i, cid in enumerate(cids):
        key = keys.contract(U, epoch, "heatmap", cid)
        premium = (i % 7 + 1) * 10_000 * step
        side = "buy_micro" if i % 2 else "sell_micro"
        pipe.hincrby(key, "flow_micro", premium if i % 2 else -premium)
        pipe.hincrby(key, side, premium)
        pipe.hincrby(key, "volume", i % 5 + 1)
        pipe.hincrby(key, "trades", 1)
    pipe.execute()
    project_counters(r, U, epoch, cids)
    r.sadd(keys.dirty_contracts(U, epoch), *cids)
    return len(cids)


def tiles_stored(r: redis.Redis, epoch: str) -> dict[int, tuple[int, ...]]:
    _, tiles = read_tiles(r, U, epoch)
    return {t: tile.counters() for t, tile in tiles.items() if not tile.is_empty}


def tiles_from_scratch(r: redis.Redis, epoch: str) -> dict[int, tuple[int, ...]]:
    pipe = r.pipeline(transaction=False)
    for cid in r.zrange(keys.model_index(U, epoch, "heatmap", "plane"), 0, -1):
        pipe.hgetall(keys.contract(U, epoch, "heatmap", cid))
    return {t: tile.counters() for t, tile in aggregate_tiles(pipe.execute()).items() if not tile.is_empty}


def version(r: redis.Redis, model: str) -> int:
    return int(r.get(keys.model_version(model, U)) or 0)


def held_at_lock(setup: Setup) -> int:
    """Clients blocked by the write pause on their ``SET`` (the lock's SET NX)."""
    return sum(1 for c in setup.clients() if "b" in c["flags"] and c["cmd"] == "set")


@pytest.mark.parametrize("task", ["tasks.heatmap.recompute", "tasks.gex.recompute", "tasks.chain.snapshot"])
def test_the_same_task_twice_at_once_runs_once(setup: Setup, task: str) -> None:
    r = setup.r
    epoch = setup.active()
    trade_everywhere(r, epoch, step=1, every=13)
    before = {"heatmap": version(r, "heatmap"), "gex": version(r, "gex"),
              "runs": int(r.hget(keys.chain_cadence(U), "runs") or 0), "statuses": setup.statuses(task)}  # fmt: skip
    setup.pause_writes()
    try:
        setup.call(task, times=2)()  # two CLI processes at once; one message reaches each worker
        wait_for(lambda: held_at_lock(setup) == 2, 60, "both workers at the lock", setup)
    finally:
        setup.unpause()
    wait_for(lambda: len(setup.statuses(task)) == len(before["statuses"]) + 2, 60, "both runs finished", setup)
    new = list(setup.statuses(task))
    for status in before["statuses"]:
        new.remove(status)
    assert sorted(new) == sorted(["skipped", "refreshed" if task == "tasks.chain.snapshot" else "ok"])
    assert not r.exists(keys.model_lock("heatmap", U), keys.model_lock("gex", U), keys.chain_lock(U))
    if task == "tasks.heatmap.recompute":  # one publication, every trade counted once
        assert version(r, "heatmap") == before["heatmap"] + 1
        assert tiles_stored(r, epoch) == tiles_from_scratch(r, epoch)
        assert not r.exists(keys.dirty_contracts(U, epoch), keys.dirty_processing(U, epoch))
    elif task == "tasks.gex.recompute":
        assert version(r, "gex") == before["gex"] + 1
    else:  # one snapshot recorded, the same epoch refreshed in place
        assert int(r.hget(keys.chain_cadence(U), "runs")) == before["runs"] + 1
        assert setup.active() == epoch and r.zrange(keys.live_epochs(U), 0, -1) == [epoch]


#: Attempts at pausing a heatmap run between taking the dirty set and writing the tiles (see below).
HOLD_ATTEMPTS = 5


def held_after_take(setup: Setup, epoch: str) -> tuple[int, dict[int, tuple[int, ...]], str | None]:
    """Dirty every contract, send a heatmap run and pause the state store's writes the moment the run took the
    dirty set (``take_dirty.lua``), before its ``write_tiles.lua`` writes the tiles; returns with writes
    paused: (contracts dirtied, tiles before, tiles version before).

    A keyspace notification of the processing set (sent by Redis while it runs ``take_dirty.lua``) triggers
    the pause: no polling, so the pause usually lands while the worker is still reading the dirty contracts.
    Both scripts are writes, so nothing can let the first through and hold the second: on a loaded machine the
    run may still write first. Then that run is left to finish and the whole attempt is made again.
    """
    r = setup.r
    processing = keys.dirty_processing(U, epoch)
    r.config_set("notify-keyspace-events", "Kgs")  # RENAME (g) or SUNIONSTORE (s) into the processing set
    pubsub = r.pubsub()
    try:
        pubsub.subscribe(f"__keyspace@0__:{processing}")
        wait_for(lambda: (pubsub.get_message(timeout=0.1) or {}).get("type") == "subscribe", 10, "subscribed")
        for attempt in range(1, HOLD_ATTEMPTS + 1):
            tiles_before = tiles_stored(r, epoch)
            version_before = r.get(keys.heatmap_tiles_version(U, epoch))
            runs_before = len(setup.statuses("tasks.heatmap.recompute"))
            traded = trade_everywhere(r, epoch, step=3)  # every contract dirty: a long run
            assert not r.exists(processing)
            while pubsub.get_message(timeout=0) is not None:  # the last attempt's events (its run's DEL)
                pass
            setup.send("tasks.heatmap.recompute")
            deadline = time.monotonic() + 60
            while True:  # blocks in the read of the notification: no busy loop
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["data"] in ("rename_to", "sunionstore"):
                    break
                assert time.monotonic() < deadline, f"the heatmap run never took the dirty set\n{setup.logs_tail()}"
            setup.pause_writes()
            if r.exists(processing):  # held: the tiles and the processing set go in one script call
                return traded, tiles_before, version_before
            setup.unpause()  # the run wrote first: let it finish, then try again
            wait_for(lambda n=runs_before: len(setup.statuses("tasks.heatmap.recompute")) > n, 60,
                     f"the heatmap run of attempt {attempt} finished", setup)  # fmt: skip
            assert not r.exists(keys.dirty_contracts(U, epoch), processing)
        raise AssertionError(f"every one of {HOLD_ATTEMPTS} heatmap runs wrote its tiles before the pause")
    finally:
        pubsub.close()
        r.config_set("notify-keyspace-events", "")


def test_a_heatmap_worker_killed_mid_run_loses_and_double_counts_nothing(setup: Setup) -> None:
    r = setup.r
    epoch = setup.active()
    run(setup, "tasks.heatmap.recompute")  # start from drained dirty sets and a warm worker
    processing = keys.dirty_processing(U, epoch)
    traded, tiles_before, version_before = held_after_take(setup, epoch)  # writes paused from here
    try:
        assert r.exists(processing)
        setup.kill_workers()
    finally:
        setup.unpause()
    setup.start_workers()  # they start while the checks run and the lock expires
    # nothing of the run's result was written; what it took waits in the processing set; the lock expires
    assert r.scard(processing) == traded and not r.exists(keys.dirty_contracts(U, epoch))
    assert tiles_stored(r, epoch) == tiles_before
    assert r.get(keys.heatmap_tiles_version(U, epoch)) == version_before
    assert 0 < r.pttl(keys.model_lock("heatmap", U)) <= LOCK_TIMEOUT_S * 1000
    wait_for(lambda: not r.exists(keys.model_lock("heatmap", U)), LOCK_TIMEOUT_S + 5, "the dead run's lock expiring")
    setup.wait_workers()
    trade_everywhere(r, epoch, step=5, every=3)  # more trades meanwhile: both sets are merged
    published = version(r, "heatmap")
    run(setup, "tasks.heatmap.recompute")
    assert version(r, "heatmap") == published + 1
    assert not r.exists(processing, keys.dirty_contracts(U, epoch))
    assert tiles_stored(r, epoch) == tiles_from_scratch(r, epoch)
    view = orjson.loads(r.get(keys.model_view("heatmap", U)))
    assert sum(t["trades"] for t in view["tiles"]) == sum(t[4] for t in tiles_from_scratch(r, epoch).values())


def test_a_chain_worker_killed_mid_snapshot_leaves_no_partial_epoch(setup: Setup) -> None:
    r = setup.r
    old = setup.active()
    setup.sim.admin(f"/admin/topology?underlying={U}&action=list_expiry")  # the next snapshot is a new epoch
    keys_before = set(r.scan_iter(count=10_000))
    setup.send("tasks.chain.snapshot")
    deadline = time.monotonic() + 60
    while not any(c["multi"] != "-1" for c in setup.clients()):  # inside its MULTI: hold it before EXEC
        assert time.monotonic() < deadline, "the snapshot never started its transaction"
    setup.pause_writes()
    try:
        queued = [int(c["multi"]) for c in setup.clients() if c["multi"] != "-1"]
        assert queued and queued[0] > 0, "the transaction ended before the pause"
        setup.kill_workers()
    finally:
        setup.unpause()
    setup.start_workers()  # they start while the checks run and the lock expires
    wait_for(lambda: all(c["multi"] == "-1" for c in setup.clients()), 10, "the dead connection closed")
    # the transaction was discarded: not one key of a new epoch; the old epoch untouched and still active
    new_keys = set(r.scan_iter(count=10_000)) - keys_before
    assert new_keys <= {keys.spot(U), keys.chain_lock(U)}, sorted(new_keys)[:10]
    assert setup.active() == old and r.zrange(keys.live_epochs(U), 0, -1) == [old]
    assert 0 < r.pttl(keys.chain_lock(U)) <= LOCK_TIMEOUT_S * 1000
    wait_for(lambda: not r.exists(keys.chain_lock(U)), LOCK_TIMEOUT_S + 5, "the dead snapshot's lock expiring")
    setup.wait_workers()
    run(setup, "tasks.chain.snapshot")  # the next run succeeds: the new epoch, complete, promoted
    new = setup.active()
    assert new != old and r.hget(keys.epoch_meta(U, old), "state") == "retired"
    meta = r.hgetall(keys.epoch_meta(U, new))
    assert meta["complete"] == "1" and r.scard(keys.epoch_universe(U, new)) == int(meta["contracts"])


def run(setup: Setup, task: str) -> None:
    """Send ``task`` once and wait until a worker logged its result (it must not be skipped)."""
    before = setup.statuses(task)
    setup.send(task)
    wait_for(lambda: len(setup.statuses(task)) > len(before), 60, f"{task} finished", setup)
    new = list(setup.statuses(task))
    for status in before:
        new.remove(status)
    assert new != ["skipped"], new
