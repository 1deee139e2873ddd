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
    assert sorted(schedule) == ["chain-snapshot-QQQ", "chain-snapshot-SPX", "chain-snapshot-SPY"]
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
    assert result.stdout.strip() == "['chain-snapshot-SPX', 'chain-snapshot-SPY']"
