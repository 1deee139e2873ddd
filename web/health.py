"""``/healthz``: read everything in one pipeline, then judge freshness with a pure function.

Fresh means: Redis answers, the ingest status exists, says connected and was updated within
``stale_view_s``, no ingest connection is silent while another one talks, every (model, underlying) view
exists with ``now − as_of_ms`` within ``stale_view_s``, and every process a supervisor (``make run``) keeps
is running. Chain latency and cadence are reported but never make the service unhealthy on their own (the
views' age already shows a stalled pipeline). ``warnings`` names what is worth a look but is not a fault on
its own: every ingest connection quiet at once (a closed market looks the same as a dead feed), processes
that were restarted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from fabric import keys

INGEST_NUMBERS = ("events_per_s", "lag_ms_p50", "lag_ms_p99")
INGEST_INTS = ("updated_ms", "last_frame_ms", "subscriptions_trades", "subscriptions_quotes")
CADENCE_NUMBERS = ("latency_ms_last", "latency_ms_ewma", "interval_s")
CADENCE_INTS = ("next_run_ms", "last_ok_ms", "errors_consecutive")


@dataclass
class HealthInputs:
    """Everything ``/healthz`` judges, as read from Redis (hashes decoded to str)."""

    ingest: dict[str, str] | None
    epochs: dict[str, str | None]
    spots: dict[str, dict[str, str]]
    cadences: dict[str, dict[str, str]]
    #: (model, underlying) → {version, as_of_ms, epoch} of the stored view, None when not published
    views: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    #: ``host/process`` → the supervisor's status of it (empty when no supervisor runs)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)


def _text(mapping: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in mapping.items()}


def _view_meta(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        view = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"version": None, "as_of_ms": None, "epoch": None}
    return {"version": view.get("version"), "as_of_ms": view.get("as_of_ms"), "epoch": view.get("epoch")}


async def read_health_inputs(r: aioredis.Redis, models: tuple[str, ...], underlyings: tuple[str, ...]) -> HealthInputs:
    """Read ingest status, epochs, spots, cadences and every view in one pipeline (raises on Redis errors)."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.ingest_status())
    for u in underlyings:
        pipe.get(keys.active_epoch(u))
        pipe.hgetall(keys.spot(u))
        pipe.hgetall(keys.chain_cadence(u))
    pairs = [(m, u) for m in models for u in underlyings]
    for m, u in pairs:
        pipe.get(keys.model_view(m, u))  # type: ignore[arg-type]
    pipe.hgetall(keys.processes())
    replies = await pipe.execute()
    ingest = _text(replies[0]) if replies[0] else None
    epochs: dict[str, str | None] = {}
    spots: dict[str, dict[str, str]] = {}
    cadences: dict[str, dict[str, str]] = {}
    for i, u in enumerate(underlyings):
        epoch, spot, cadence = replies[1 + 3 * i : 4 + 3 * i]
        epochs[u] = epoch.decode() if epoch else None
        spots[u] = _text(spot or {})
        cadences[u] = _text(cadence or {})
    offset = 1 + 3 * len(underlyings)
    views = {pair: _view_meta(replies[offset + i]) for i, pair in enumerate(pairs)}
    processes: dict[str, dict[str, Any]] = {}
    for name, raw in (replies[-1] or {}).items():
        try:
            processes[name.decode()] = orjson.loads(raw)
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            continue
    return HealthInputs(ingest=ingest, epochs=epochs, spots=spots, cadences=cadences, views=views,
                        processes=processes)  # fmt: skip


def _num(value: str | None, kind: type = float) -> float | int | None:
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        return None


def assess_health(inputs: HealthInputs, *, now_ms: int, stale_view_s: float) -> tuple[bool, dict[str, Any]]:
    """Judge freshness. Returns (healthy, body); ``body["problems"]`` names everything stale or missing."""
    problems: list[str] = []
    warnings: list[str] = []
    ingest: dict[str, Any] | None = None
    if inputs.ingest is None:
        problems.append("ingest status missing")
    else:
        raw = inputs.ingest
        ingest = {"connected": raw.get("connected") == "1"}
        ingest.update({name: _num(raw.get(name)) for name in INGEST_NUMBERS})
        ingest.update({name: _num(raw.get(name), int) for name in INGEST_INTS})
        try:
            ingest["rejects"] = orjson.loads(raw.get("rejects", "{}"))
        except orjson.JSONDecodeError:
            ingest["rejects"] = None
        updated = ingest["updated_ms"]
        ingest["age_s"] = None if updated is None else round((now_ms - updated) / 1000, 3)
        if not ingest["connected"]:
            problems.append("ingest disconnected")
        if ingest["age_s"] is None or ingest["age_s"] > stale_view_s:
            problems.append(f"ingest status stale (age {ingest['age_s']} s > {stale_view_s:g} s)")
        try:
            silent = orjson.loads(raw.get("silent") or "{}")
        except orjson.JSONDecodeError:
            silent = {}
        quiet = silent.get("connections") or []
        ingest["silent_connections"] = quiet
        after = raw.get("silent_after_s", "?")
        if quiet and silent.get("talking"):
            problems.append(f"ingest connection(s) {', '.join(quiet)} silent for {after} s or more while others talk")
        elif quiet:
            warnings.append(f"every ingest connection silent for {after} s or more (a closed market, or no feed)")
    underlyings: dict[str, Any] = {}
    for u, epoch in inputs.epochs.items():
        cadence = inputs.cadences.get(u, {})
        chain: dict[str, Any] = {name: _num(cadence.get(name)) for name in CADENCE_NUMBERS}
        chain.update({name: _num(cadence.get(name), int) for name in CADENCE_INTS})
        chain["last_error"] = cadence.get("last_error") or None
        spot = inputs.spots.get(u, {})
        underlyings[u] = {
            "epoch": epoch,
            "spot": _num(spot.get("price")),
            "spot_ts_ms": _num(spot.get("ts_ms"), int),
            "chain": chain,
            "views": {},
        }
    for (model, u), meta in inputs.views.items():
        entry: dict[str, Any] | None = None
        if meta is None:
            problems.append(f"{model}:{u} view not published")
        else:
            as_of = meta.get("as_of_ms")
            age_s = round((now_ms - as_of) / 1000, 3) if isinstance(as_of, int) else None
            entry = {**meta, "age_s": age_s}
            if age_s is None or age_s > stale_view_s:
                problems.append(f"{model}:{u} view stale (age {age_s} s > {stale_view_s:g} s)")
        underlyings.setdefault(u, {"views": {}})["views"][model] = entry
    for name, process in sorted(inputs.processes.items()):
        if not process.get("running"):
            exit_code, restart_in = process.get("last_exit"), process.get("restart_in_s")
            restarts = process.get("restarts", 0)
            problems.append(f"process {name} down (exit {exit_code}, restart in {restart_in} s, {restarts} restarts)")
        elif process.get("restarts"):
            warnings.append(
                f"process {name} restarted {process['restarts']} times (last exit {process.get('last_exit')})"
            )
    healthy = not problems
    body = {
        "status": "ok" if healthy else "stale",
        "problems": problems,
        "warnings": warnings,
        "now_ms": now_ms,
        "stale_view_s": stale_view_s,
        "redis": {"reachable": True},
        "ingest": ingest,
        "underlyings": underlyings,
        "processes": inputs.processes,
    }
    return healthy, body
