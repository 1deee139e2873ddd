"""``pip install .`` (a built wheel, not editable) into a fresh venv outside the checkout is a working mmaker.

The wheel is built from the checkout, installed with its dependencies into a new virtual environment in a
temporary directory, and everything then runs from there, with that directory as the working directory (so
nothing can be imported from the checkout): the simulator (``mmaker sim``), one chain snapshot, ingest for a
few seconds (``mmaker ingest``), a GEX recompute through the task code, and ``mmaker doctor``. It proves the
wheel carries every package, the Lua scripts, the dashboard's files and ``celeryconfig``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fabric import keys
from tests.support.servers import ROOT, RedisServer, free_port, stop_process
from tests.support.waiting import wait_for

PIP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A fresh venv with the wheel of the checkout installed; yields its directory (the working directory)."""
    directory = Path(tempfile.mkdtemp(prefix="mmaker-install-"))
    source = directory / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "var", "build", "site", "*.egg-info",
                                                                "__pycache__", ".*_cache", ".hypothesis"))  # fmt: skip
    wheels = directory / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
                    str(source)], check=True, timeout=PIP_TIMEOUT_S, cwd=directory)  # fmt: skip
    (wheel,) = wheels.glob("mmaker-*.whl")
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], check=True,
                   timeout=PIP_TIMEOUT_S, cwd=directory)  # fmt: skip
    yield directory
    subprocess.run(["rm", "-rf", str(directory)], check=False)


def _env(directory: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MASSIVE_API_KEY")}
    env.update(PYTHONUNBUFFERED="1", PATH=f"{directory / 'venv' / 'bin'}:{env.get('PATH', '')}", **extra)
    return env


def _python(directory: Path, code: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(directory / "venv" / "bin" / "python"), "-c", code], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_wheel_alone_runs_the_simulator_a_snapshot_ingest_and_a_recompute(installed: Path) -> None:
    server = RedisServer().start()
    sim_port = free_port()
    env = _env(installed, REDIS_URL=server.url_db(0), CELERY_BROKER_URL=server.url_db(1), MMAKER_UNDERLYINGS="SPY",
               MMAKER_SIM_PORT=str(sim_port), MMAKER_EPOCH_REQUIRED="none")  # fmt: skip
    mmaker = str(installed / "venv" / "bin" / "mmaker")
    logs = {name: open(installed / f"{name}.log", "wb") for name in ("sim", "ingest")}  # noqa: SIM115
    sim = ingest = None
    r = redis.Redis.from_url(server.url_db(0), decode_responses=True)
    try:
        # nothing of the checkout is importable from here: every module comes from the venv
        where = json.loads(_python(installed, "import json, fabric, lua, web, celeryconfig, tasks, chain, mmaker; "
                                   "print(json.dumps([m.__file__ for m in (fabric, lua, web, celeryconfig, tasks, "
                                   "chain, mmaker)]))", env))  # fmt: skip
        assert all(str(installed / "venv") in path for path in where), where
        sim = subprocess.Popen([mmaker, "sim", "--port", str(sim_port), "--underlyings", "SPY", "--tick-rate", "2000"],
                               cwd=installed, env=env, stdout=logs["sim"], stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(lambda: "sim listening on" in (installed / "sim.log").read_text(), 60, "the simulator", installed /
                 "sim.log")  # fmt: skip
        outcome = _python(installed, "from tasks.chain import snapshot; print(snapshot('SPY')['status'])", env)
        assert outcome.strip() == "created", outcome
        ingest = subprocess.Popen([mmaker, "ingest"], cwd=installed, env=env, stdout=logs["ingest"],
                                  stderr=subprocess.STDOUT)  # fmt: skip

        def trades() -> int:
            counters = json.loads(r.hget(keys.ingest_status(), "counters") or "{}")
            return int(counters.get("trades_applied", 0))

        wait_for(lambda: trades() > 20, 60, "ingest committing trades", installed / "ingest.log")
        result = json.loads(_python(installed, "import json; from tasks.gex import recompute; "
                                    "print(json.dumps(recompute('SPY')))", env))  # fmt: skip
        assert result["status"] == "ok" and result["epochs"][0]["publication"] == "published", result
        view = json.loads(r.get(keys.model_view("gex", "SPY")) or "{}")
        assert view["model"] == "gex" and view["contracts_used"] > 0
        doctor = subprocess.run([mmaker, "doctor"], cwd=installed, env=env, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "lua scripts: 1" in doctor.stdout and str(installed / "venv") in doctor.stdout
        listing = "from web.app import STATIC_DIR; print(sorted(p.name for p in STATIC_DIR.iterdir()))"
        static = _python(installed, listing, env)
        assert "index.html" in static and "app.js" in static
    finally:
        r.close()
        for proc in (ingest, sim):
            stop_process(proc)
        for log in logs.values():
            log.close()
        server.stop()
