"""build_beat_schedule: one chain-snapshot entry per underlying, and no Redis connection at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from beat_schedule import build_beat_schedule
from beat_schedule.schedule import ChainSchedule
from fabric.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_one_chain_snapshot_entry_per_underlying() -> None:
    settings = Settings(underlyings=("SPY", "SPX", "QQQ"), chain_interval_min_s=5.0, chain_interval_default_s=20.0)
    schedule = build_beat_schedule(settings)
    assert sorted(k for k in schedule if k.startswith("chain-")) == [
        "chain-snapshot-QQQ", "chain-snapshot-SPX", "chain-snapshot-SPY"]  # fmt: skip
    entry = schedule["chain-snapshot-SPX"]
    assert entry["task"] == "tasks.chain.snapshot"
    assert entry["args"] == ("SPX",)
    assert entry["options"]["queue"] == "chain"
    assert 5.0 < entry["options"]["expires"] <= 7.5
    assert isinstance(entry["schedule"], ChainSchedule)
    assert entry["schedule"].underlying == "SPX"
    assert entry["schedule"].default_s == 20.0
    assert entry["schedule"].redis_url is None  # from the settings, lazily: no password in the beat file
    assert entry["schedule"]._redis is None


def test_importing_and_building_does_not_connect_to_redis() -> None:
    """With REDIS_URL at a closed port, importing celeryconfig (which builds the schedule) still works."""
    code = (
        "import redis.connection as c\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('connected at import')\n"
        "c.AbstractConnection.connect = refuse\n"
        "import celeryconfig\n"
        "print(sorted(celeryconfig.beat_schedule))\n"
    )
    env = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "MMAKER_UNDERLYINGS": "SPY,SPX",
        "PATH": "/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        sorted(
            [f"{name}-{u}" for name in ("chain-snapshot", "epochs-promote", "gex", "heatmap") for u in ("SPX", "SPY")]
        )
    )


def test_model_entries_run_on_their_own_queues_and_expire_after_one_interval() -> None:
    settings = Settings(underlyings=("SPY",), heatmap_interval_ms=250, gex_interval_ms=4000)
    schedule = build_beat_schedule(settings)
    assert schedule["heatmap-SPY"] == {
        "task": "tasks.heatmap.recompute",
        "schedule": 0.25,
        "args": ("SPY",),
        "options": {"queue": "heatmap", "expires": 0.25},
    }
    assert schedule["gex-SPY"]["options"] == {"queue": "gex", "expires": 4.0}
    assert schedule["gex-SPY"]["schedule"] == 4.0 and schedule["gex-SPY"]["task"] == "tasks.gex.recompute"
    assert schedule["epochs-promote-SPY"]["options"]["queue"] == "chain"
