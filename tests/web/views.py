"""Realistic heatmap and GEX views, published into Redis the way the publisher does it.

``publish_view`` mirrors ``lua/publish_view.lua``: INCR the version, SET the complete view with the version
as its first field, PUBLISH ``{model, underlying, version}`` on ``mmaker:models`` (SET + PUBLISH in one
MULTI so a reader never sees a notification before its view).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import orjson
import redis

from fabric import keys


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


def publish_view(r: redis.Redis, view: dict[str, Any]) -> tuple[int, bytes]:
    """Publish ``view`` (without ``version``); returns (version, the exact stored bytes)."""
    model, underlying = view["model"], view["underlying"]
    version = int(r.incr(keys.model_version(model, underlying)))
    raw = orjson.dumps({"version": version, **view})
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.model_view(model, underlying), raw)
    note = {"model": model, "underlying": underlying, "version": version}
    pipe.publish(keys.MODELS_CHANNEL, orjson.dumps(note))
    pipe.execute()
    return version, raw


def set_ingest_status(r: redis.Redis, *, updated_ms: int | None = None, connected: bool = True) -> None:
    """Write the ingest status hash as the ingest process does."""
    updated = now_ms() if updated_ms is None else updated_ms
    r.hset(
        keys.ingest_status(),
        mapping={
            "connected": "1" if connected else "0",
            "updated_ms": updated,
            "events_per_s": "1834.5",
            "lag_ms_p50": "3.1",
            "lag_ms_p99": "18.7",
            "last_frame_ms": updated - 5,
            "subscriptions_trades": "1",
            "subscriptions_quotes": "812",
            "rejects": '{"unknown_contract": 3}',
        },
    )


def set_chain_state(r: redis.Redis, underlying: str, epoch: str, spot: float) -> None:
    """Active epoch, spot and chain cadence of ``underlying``."""
    t = now_ms()
    r.set(keys.active_epoch(underlying), epoch)
    r.hset(keys.spot(underlying), mapping={"price": spot, "ts_ms": t, "source": "trade"})
    r.hset(
        keys.chain_cadence(underlying),
        mapping={
            "latency_ms_last": "412",
            "latency_ms_ewma": "398.5",
            "interval_s": "5",
            "next_run_ms": t + 4000,
            "last_ok_ms": t - 1000,
            "errors_consecutive": "0",
            "last_error": "",
        },
    )


def _expiries(n: int) -> list[str]:
    start = date(2031, 3, 3)
    return [(start + timedelta(days=d)).isoformat() for d in [0, 1, 2, 3, 4, 7, 14, 21, 28, 45, 73, 108, 136, 199][:n]]


def heatmap_view(
    underlying: str,
    *,
    spot: float,
    epoch: str = "e1",
    as_of_ms: int | None = None,
    seed: int = 1,
    width: float = 1.0,
    buckets: int = 60,
    expiries: int = 12,
    pad_bytes: int = 0,
) -> dict[str, Any]:
    """A heatmap view: strike buckets around spot × expiries, flow concentrated near the money and short dated."""
    rng = random.Random(seed)
    first = math.floor((spot - width * buckets / 2) / width) * width
    edges = [round(first + i * width, 4) for i in range(buckets)]
    exps = _expiries(expiries)
    tiles = []
    for ei, expiry in enumerate(exps):
        for b in edges:
            distance = abs(b + width / 2 - spot) / (width * buckets / 6)
            if rng.random() > math.exp(-distance) * (1.0 - ei / (expiries + 4)):
                continue
            scale = 250_000 * math.exp(-distance) / (1 + ei / 3)
            buy = abs(rng.gauss(scale, scale / 2))
            sell = abs(rng.gauss(scale, scale / 2))
            calls = (buy - sell) * (0.7 if b > spot else 0.3)
            tiles.append(
                {
                    "expiry": expiry,
                    "bucket": b,
                    "net_flow": round(buy - sell, 2),
                    "buy_premium": round(buy, 2),
                    "sell_premium": round(sell, 2),
                    "volume": rng.randint(1, 4000),
                    "trades": rng.randint(1, 300),
                    "call_flow": round(calls, 2),
                    "put_flow": round(buy - sell - calls, 2),
                }
            )
    view: dict[str, Any] = {
        "model": "heatmap",
        "underlying": underlying,
        "epoch": epoch,
        "as_of_ms": now_ms() if as_of_ms is None else as_of_ms,
        "spot": spot,
        "bucket_width": width,
        "buckets": edges,
        "expiries": exps,
        "tiles": tiles,
    }
    if pad_bytes:
        view["padding"] = "x" * pad_bytes
    return view


def _gamma_weight(strike: float, spot: float) -> float:
    return math.exp(-0.5 * ((strike - spot) / (spot * 0.025)) ** 2)


def gex_view(
    underlying: str,
    *,
    spot: float,
    epoch: str = "e1",
    as_of_ms: int | None = None,
    seed: int = 1,
    step: float = 1.0,
) -> dict[str, Any]:
    """A GEX view: call/put gamma by strike, by expiry, a profile over spot with its zero crossing and walls."""
    rng = random.Random(seed)
    strikes = [round(spot * 0.92 + i * step) for i in range(int(spot * 0.16 / step))]
    oi_call = {k: rng.uniform(2e3, 4e4) * (1.8 if k > spot and k % 5 == 0 else 1.0) for k in strikes}
    oi_put = {k: rng.uniform(2e3, 4e4) * (1.8 if k < spot and k % 5 == 0 else 1.0) for k in strikes}
    unit = 100 * spot * spot * 0.01 * 0.002

    def exposure(at: float) -> tuple[list[float], list[float]]:
        calls = [oi_call[k] * _gamma_weight(k, at) * unit for k in strikes]
        puts = [-oi_put[k] * _gamma_weight(k, at) * unit * 1.15 for k in strikes]
        return calls, puts

    calls, puts = exposure(spot)
    by_strike = [
        {
            "strike": k,
            "call_gex": round(c, 2),
            "put_gex": round(p, 2),
            "net_gex": round(c + p, 2),
            "vanna": round((c + p) * rng.uniform(-0.02, 0.02), 2),
            "charm": round((c + p) * rng.uniform(-0.01, 0.01), 2),
        }
        for k, c, p in zip(strikes, calls, puts, strict=True)
    ]
    grid = [round(spot * (0.95 + 0.0025 * i), 2) for i in range(41)]
    profile = [sum(exposure(s)[0]) + sum(exposure(s)[1]) for s in grid]
    crossings = [
        round(grid[i] + (grid[i + 1] - grid[i]) * profile[i] / (profile[i] - profile[i + 1]), 2)
        for i in range(len(grid) - 1)
        if (profile[i] < 0) != (profile[i + 1] < 0)
    ]
    zero = min(crossings, key=lambda z: abs(z - spot)) if crossings else None
    above = [row for row in by_strike if row["strike"] >= spot]
    below = [row for row in by_strike if row["strike"] <= spot]
    exps = _expiries(8)
    net = sum(calls) + sum(puts)
    return {
        "model": "gex",
        "underlying": underlying,
        "epoch": epoch,
        "as_of_ms": now_ms() if as_of_ms is None else as_of_ms,
        "spot": spot,
        "net_gex": round(net, 2),
        "abs_gex": round(sum(calls) - sum(puts), 2),
        "zero_gamma": zero,
        "zero_gamma_crossings": crossings,
        "call_wall": max(above, key=lambda row: row["call_gex"])["strike"] if above else None,
        "put_wall": min(below, key=lambda row: row["put_gex"])["strike"] if below else None,
        "by_strike": by_strike,
        "by_expiry": [
            {"expiry": e, "net_gex": round(net * w, 2), "abs_gex": round(abs(net) * w * 2, 2)}
            for e, w in zip(exps, [0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03], strict=True)
        ],
        "surface": {"expiries": exps[:3], "strikes": strikes, "net_gex": [[0.0] * len(strikes) for _ in range(3)]},
        "profile": {"spot": grid, "net_gex": [round(v, 2) for v in profile]},
        "zero_dte": {"net_gex": round(net * 0.3, 2), "abs_gex": round(abs(net) * 0.6, 2)},
        "unit": "$ per 1% move",
        "sign_convention": "dealers long calls, short puts",
    }


@contextmanager
def publishing(r: redis.Redis, markets: tuple[tuple[str, float, float], ...], epoch: str) -> Iterator[None]:
    """While the block runs, publish heatmap + GEX views of every ``(underlying, base spot, width)`` 4 times a
    second (spot drifting), with chain and ingest state — what a dashboard test looks at."""
    stop = threading.Event()

    def run() -> None:
        i = 0
        while not stop.is_set():
            for u, base, width in markets:
                spot = round(base * (1 + 0.0015 * ((i % 20) - 10) / 10), 2)
                set_chain_state(r, u, epoch, spot)
                publish_view(r, heatmap_view(u, spot=spot, width=width, seed=i, epoch=epoch))
                publish_view(r, gex_view(u, spot=spot, step=width, seed=7, epoch=epoch))
            set_ingest_status(r)
            i += 1
            stop.wait(0.25)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
