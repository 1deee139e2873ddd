"""Beat's schedule: latency-driven chain snapshots, fixed-cadence heatmap and GEX recomputes.

``celeryconfig`` calls :func:`build_beat_schedule`. Nothing here connects to Redis: each
:class:`~beat_schedule.schedule.ChainSchedule` creates its client on its first ``is_due``.
"""

from __future__ import annotations

from typing import Any

from beat_schedule.cadence import CadenceRecord, read_cadence, record_chain_run
from beat_schedule.controller import CadenceBounds, CadenceState, next_chain_interval_s
from beat_schedule.schedule import ChainSchedule
from fabric.settings import Settings

CHAIN_TASK = "tasks.chain.snapshot"
CHAIN_QUEUE = "chain"


def chain_expires_s(settings: Settings) -> float:
    """How long a queued chain snapshot stays valid (seconds): a bit more than the shortest interval.

    A message that waited longer is discarded by the worker instead of running a stale backlog; beat sends
    a fresh one when the interval has passed.
    """
    min_s = settings.chain_interval_min_s
    return max(min_s * 1.2, min_s + 1.0)


def chain_snapshot_entries(settings: Settings) -> dict[str, dict[str, Any]]:
    """One beat entry ``chain-snapshot-<U>`` per underlying, on its Redis-driven :class:`ChainSchedule`."""
    entries: dict[str, dict[str, Any]] = {}
    for underlying in settings.underlyings:
        u = underlying.upper()
        entries[f"chain-snapshot-{u}"] = {
            "task": CHAIN_TASK,
            "schedule": ChainSchedule(u, settings.chain_interval_default_s),
            "args": (u,),
            "options": {"queue": CHAIN_QUEUE, "expires": chain_expires_s(settings)},
        }
    return entries


def model_entries(settings: Settings) -> dict[str, dict[str, Any]]:
    """Fixed-cadence entries per underlying: heatmap and GEX recomputes on their own queues, and the epoch
    promotion check on ``chain``. Each message expires after one interval: a worker that was down finds
    a backlog of stale recomputes and discards them instead of running them all.
    """
    entries: dict[str, dict[str, Any]] = {}
    periodic = (
        ("heatmap", "tasks.heatmap.recompute", "heatmap", settings.heatmap_interval_ms / 1000),
        ("gex", "tasks.gex.recompute", "gex", settings.gex_interval_ms / 1000),
        ("epochs-promote", "tasks.epochs.promote", CHAIN_QUEUE, 1.0),
    )
    for underlying in settings.underlyings:
        u = underlying.upper()
        for name, task, queue, interval_s in periodic:
            entries[f"{name}-{u}"] = {
                "task": task,
                "schedule": interval_s,
                "args": (u,),
                "options": {"queue": queue, "expires": interval_s},
            }
    return entries


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule``: every periodic entry of mmaker, built from ``settings``."""
    schedule: dict[str, dict[str, Any]] = {}
    schedule.update(chain_snapshot_entries(settings))
    schedule.update(model_entries(settings))
    return schedule


__all__ = [
    "CHAIN_QUEUE",
    "CHAIN_TASK",
    "CadenceBounds",
    "CadenceRecord",
    "CadenceState",
    "ChainSchedule",
    "build_beat_schedule",
    "chain_expires_s",
    "chain_snapshot_entries",
    "model_entries",
    "next_chain_interval_s",
    "read_cadence",
    "record_chain_run",
]
