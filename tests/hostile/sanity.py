"""What every hostile case checks of the state store and the published views: nothing absurd, nothing lost."""

from __future__ import annotations

import math
from typing import Any

import orjson
import redis

from fabric import keys

#: Bounds of the stored static fields of a contract (chain/decompose.py's table).
CONTRACT_BOUNDS = {"multiplier": (1, 1000), "oi": (0, 10**7), "iv": (0, 10), "gamma": (-1e5, 1e5),
                   "delta": (-1.05, 1.05), "vega": (-1e5, 1e5), "theta": (-1e6, 1e6), "bid": (0, 1e6),
                   "ask": (0, 1e6), "last_price": (0, 1e6), "bid_size": (0, 10**7), "ask_size": (0, 10**7)}  # fmt: skip
#: No number in a view of a sane chain comes near this ($ of GEX of a whole chain are ~1e10).
VIEW_NUMBER_MAX = 1e20


def numbers_in(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, leaf) of a JSON value whose leaf is a number or null."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in numbers_in(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in numbers_in(v, f"{path}[{i}]")]
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return [(path, value)]
    return []


#: Leaves of a GEX view that are null by design when there is nothing to report.
NULLABLE = ("zero_gamma", "call_wall", "put_wall", "zero_dte.")


def assert_view_sane(r: redis.Redis, model: str, u: str) -> dict[str, Any]:
    """The published view of ``model``: every number finite and plausible, no null where a number belongs
    (orjson writes NaN / ±inf as null). Returns the view."""
    raw = r.get(keys.model_view(model, u))  # type: ignore[arg-type]
    assert raw is not None, f"no {model} view"
    view = orjson.loads(raw)
    for path, leaf in numbers_in(view):
        if leaf is None:
            assert any(mark in path for mark in NULLABLE), f"{model} view: null at {path}"
        else:
            assert math.isfinite(leaf) and abs(leaf) < VIEW_NUMBER_MAX, f"{model} view: {path} = {leaf}"
    assert view["spot"] is None or 0 < view["spot"] <= 1e6
    return view


def assert_redis_sane(r: redis.Redis, u: str) -> int:
    """Every contract hash of every epoch of ``u`` within the field bounds, every number in any hash finite;
    returns how many contract hashes were checked."""
    checked = 0
    for key in r.scan_iter(count=10_000):
        if r.type(key) != "hash":
            continue
        fields = r.hgetall(key)
        for name, text in fields.items():
            try:
                number = float(text)
            except ValueError:
                continue
            assert math.isfinite(number), f"{key} {name} = {text}"
            if ":contract:" in key and name in CONTRACT_BOUNDS:
                low, high = CONTRACT_BOUNDS[name]
                assert low <= number <= high, f"{key} {name} = {text}"
        checked += ":contract:" in key
    spot = r.hget(keys.spot(u), "price")
    assert spot is None or 0 < float(spot) <= 1e6
    return checked


def market_state(r: redis.Redis) -> dict[bytes, Any]:
    """Every key except the chain's bookkeeping (cadence, counters, hold) with its value: what a snapshot that
    writes nothing must leave exactly as it was."""
    where = r.connection_pool.connection_kwargs
    raw = redis.Redis(host=where["host"], port=where["port"], db=where.get("db", 0))  # binary strings too
    out: dict[bytes, Any] = {}
    for key in raw.scan_iter(count=10_000):
        if key.startswith((b"massive:chain:", b"mmaker:")):
            continue
        kind = raw.type(key)
        if kind == b"hash":
            out[key] = raw.hgetall(key)
        elif kind == b"string":
            out[key] = raw.get(key)
        elif kind == b"set":
            out[key] = raw.smembers(key)
        elif kind == b"zset":
            out[key] = raw.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = kind
    raw.close()
    return out
