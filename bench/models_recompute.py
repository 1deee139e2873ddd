"""Heatmap and GEX recomputes on a 20,000-contract epoch vs. the hydrating approach public tools use.

mmaker (what the workers run, Redis included):
- heatmap: take the dirty set, recompute only the touched tiles from their contracts' counters (the counter
  records ingest keeps beside the hashes), write them, build and publish the complete view — with 1,000
  dirty contracts, and with the whole chain dirty, every tile of the chain holding flow (the whole view
  is published each run);
- GEX: read the projection (pipelined; cached per epoch refresh), re-price gamma at spot with numpy,
  the 201-point profile, zero gamma, walls, surfaces, publish — cold (projection read from Redis) and warm.
Baseline, same run and server: reload the whole chain blob (one JSON value in Redis) and rebuild with
per-row Python loops (``bench/models_baseline.py`` for GEX; a dict-of-tiles loop for the heatmap).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.models_baseline import baseline_gex
from bench.results import Result
from chain.decompose import decompose
from chain.store import write_decomposition
from fabric import exposure, keys, tiles
from fabric.epochs import promote_epoch
from sim.market import Market
from tests.support.servers import RedisServer

COMMAND = "make bench  (python -m bench models_recompute)"


def sim_spx_chain(now_ms: int) -> tuple[list[dict], float]:
    """A realistic SPX chain (SPX + SPXW, ~19.7k contracts, skewed IV, OI heavier at round strikes) from the
    simulator's market model, and its spot."""
    market = Market(7, now_ms * 1_000_000, ("SPX",))
    rows = market.snapshot_rows("I:SPX")
    return rows, float(rows[0]["underlying_asset"]["value"])


def median_ms(fn: Callable[[], Any], repeats: int, before: Callable[[], Any] | None = None) -> float:
    """The median wall time of ``repeats`` calls of ``fn`` in ms (``before`` runs untimed before each)."""
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _seed_flow(r: redis.Redis, u: str, epoch: str, cids: list[str], rng: random.Random) -> None:
    pipe = r.pipeline(transaction=False)
    for cid in cids:
        premium = rng.randrange(1, 5_000) * 1_000_000
        sign = rng.choice((1, -1))
        pipe.hset(
            keys.contract(u, epoch, "heatmap", cid),
            mapping={
                "flow_micro": sign * premium,
                "buy_micro": premium if sign > 0 else 0,
                "sell_micro": premium if sign < 0 else 0,
                "volume": rng.randrange(1, 50),
                "trades": rng.randrange(1, 9),
            },
        )
    pipe.execute()


def _blob(r: redis.Redis, u: str, epoch: str, cids: list[str]) -> None:
    """The hydrating tools' state: the whole chain as one JSON blob (heatmap and GEX fields per row)."""
    pipe = r.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(keys.contract(u, epoch, "heatmap", cid))
        pipe.hgetall(keys.contract(u, epoch, "gex", cid))
    replies = pipe.execute()
    rows = [
        {**replies[i], **replies[i + 1], "cid": cid} for i, cid in zip(range(0, len(replies), 2), cids, strict=True)
    ]
    r.set("bench:chain_blob", json.dumps(rows))


def _baseline_heatmap(r: redis.Redis) -> None:
    rows = json.loads(r.get("bench:chain_blob"))
    cells: dict[tuple[str, float], dict[str, float]] = {}
    for row in rows:  # every contract re-aggregated on every run
        cell = cells.setdefault(
            (row["expiry"], float(row["strike"]) // 5 * 5),
            {"net_flow": 0.0, "buy_premium": 0.0, "sell_premium": 0.0, "volume": 0, "trades": 0},
        )
        flow = float(row.get("flow_micro", 0)) / 1e6
        cell["net_flow"] += flow
        cell["buy_premium"] += float(row.get("buy_micro", 0)) / 1e6
        cell["sell_premium"] += float(row.get("sell_micro", 0)) / 1e6
        cell["volume"] += int(row.get("volume", 0))
        cell["trades"] += int(row.get("trades", 0))
    r.set(
        "bench:baseline_heatmap",
        json.dumps([{"expiry": e, "bucket": b, **v} for (e, b), v in cells.items()]),
    )


def _baseline_gex(r: redis.Redis, spot: float, now_ms: int) -> None:
    rows = json.loads(r.get("bench:chain_blob"))
    view = baseline_gex(rows, spot, now_ms)
    r.set("bench:baseline_gex", json.dumps(view))


def run(repeats: int = 15) -> list[Result]:
    """Time mmaker's recomputes and the baselines on the same epoch and server."""
    server = RedisServer().start()
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        now_ms = int(time.time() * 1000)
        chain_rows, spot = sim_spx_chain(now_ms)
        dec = decompose("SPX", chain_rows, bucket_width=5.0, am_settled_roots=("SPX",), now_ms=now_ms)
        write_decomposition(r, dec, now_ms=now_ms, retire_ttl_s=300)
        promote_epoch(r, "SPX", dec.epoch_id, required=(), max_warming_s=30, retire_ttl_s=300, now_ms=now_ms)
        r.hset(keys.spot("SPX"), mapping={"price": spot, "ts_ms": now_ms, "source": "bench"})
        u, epoch, cids = "SPX", dec.epoch_id, dec.contract_ids
        rng = random.Random(7)
        _seed_flow(r, u, epoch, cids, rng)
        tiles.project_counters(r, u, epoch)  # the counter records ingest keeps beside the hashes it writes
        _blob(r, u, epoch, cids)
        layout = tiles.read_layout(r, u, epoch)
        assert layout is not None
        dirty_key = keys.dirty_contracts(u, epoch)

        def mark(n: int) -> Callable[[], None]:
            return lambda: r.sadd(dirty_key, *rng.sample(cids, n))

        def heatmap_run() -> None:
            (result,) = tiles.run_heatmap(r, u)
            assert result.publication is not None and result.publication.published

        mark(len(cids))()
        heatmap_run()  # every tile computed and published once: the steady state (the whole view is sent)
        recompute_1k = median_ms(lambda: tiles.recompute_tiles(r, u, epoch, layout), repeats, mark(1000))
        full_1k = median_ms(heatmap_run, 2 * repeats + 1, mark(1000))  # (the machine is noisy: more samples)
        full_20k = median_ms(heatmap_run, repeats, mark(len(cids)))
        base_heatmap = median_ms(lambda: _baseline_heatmap(r), 3)

        exposure._cache.clear()
        gex_cold = median_ms(lambda: exposure.run_gex(r, u, rate=0.04, now_ms=now_ms), 3, exposure._cache.clear)
        gex_warm = median_ms(lambda: exposure.run_gex(r, u, rate=0.04, now_ms=now_ms), repeats)
        base_gex = median_ms(lambda: _baseline_gex(r, spot, now_ms), 1)
        n = len(cids)
        return [
            Result.compare("heatmap recompute, 1,000 dirty of 20k", full_1k, "ms", base_heatmap,
                           higher_is_better=False, target="≤ 10 ms", command=COMMAND,
                           detail=f"take dirty → tiles → write → build + publish view; tiles alone "
                                  f"{recompute_1k:.1f} ms; baseline re-aggregates the whole {n}-row blob"),
            Result.compare("heatmap recompute, 20k fully dirty", full_20k, "ms", base_heatmap,
                           higher_is_better=False, target="≤ 60 ms", command=COMMAND,
                           detail=f"{n} contracts, {layout.tile_count} cells; view published each run"),
            Result.compare("GEX recompute 20k + 201-point profile (warm)", gex_warm, "ms", base_gex,
                           higher_is_better=False, target="≤ 150 ms and ≥ 20× baseline", command=COMMAND,
                           detail=f"projection cached per epoch refresh; cold (read {n} hashes from Redis) "
                                  f"{gex_cold:.0f} ms; baseline = blob reload + per-row loops, 200 points"),
        ]  # fmt: skip
    finally:
        server.stop()
