"""Decompose a 20,000-contract chain into Redis vs. a baseline writing each contract with its own round trips.

mmaker: validate + decompose once, then one MULTI/EXEC pipeline for the whole warming epoch.
Baseline (what a typical script does): for each contract, HSET the two projections, ZADD each index and
SADD the universe as separate commands — one network round trip each.
Both run against the same redis-server started for the benchmark (never the user's 6379).
"""

from __future__ import annotations

import statistics
import time
from datetime import date, timedelta

import redis

from bench.results import Result
from chain.decompose import GEX_FIELDS, HEATMAP_FIELDS, decompose, dte_score, gex_values, heatmap_values
from chain.store import write_decomposition
from fabric import keys
from fabric.topology import bucket_of
from models.heatmap import RECORD_BYTES
from tests.support.chains import chain_rows
from tests.support.servers import RedisServer

COMMAND = "make bench  (python -m bench chain_decompose)"


def spx_like_chain(contracts: int = 20_000) -> list[dict]:
    """About ``contracts`` SPXW-like rows: 50 expiries × 200 strikes 5 points apart × call/put."""
    expiries = [date(2031, 1, 2) + timedelta(days=7 * i) for i in range(50)]
    strikes = [4500 + 5 * i for i in range(contracts // (2 * len(expiries)))]
    return chain_rows("SPXW", expiries, strikes, spot=5000.0, index=True)


def _mmaker(r: redis.Redis, rows: list[dict], now_ms: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    dec = decompose("SPX", rows, bucket_width=5.0, am_settled_roots=("SPX",))
    t1 = time.perf_counter()
    written = write_decomposition(r, dec, now_ms=now_ms, retire_ttl_s=300)
    t2 = time.perf_counter()
    assert written.action == "created" and written.contracts == len(rows)
    return t1 - t0, t2 - t0


def _baseline(r: redis.Redis, rows: list[dict]) -> float:
    t0 = time.perf_counter()
    dec = decompose("SPX", rows, bucket_width=5.0, am_settled_roots=("SPX",))
    e = dec.epoch_id
    for row, tile, slot in zip(dec.rows, dec.tiles(), dec.slots(), strict=True):
        bucket = bucket_of(row.spec.strike_milli, dec.bucket_width)
        hm = {k: v for k, v in zip(HEATMAP_FIELDS, heatmap_values(row, tile, slot), strict=True) if v}
        gx = {k: v for k, v in zip(GEX_FIELDS, gex_values(row), strict=True) if v}
        r.hset(keys.contract("SPX", e, "heatmap", row.cid), mapping=hm)
        r.hset(keys.contract("SPX", e, "gex", row.cid), mapping=gx)
        r.zadd(keys.model_index("SPX", e, "heatmap", "by_strike"), {row.cid: row.spec.strike})
        r.zadd(keys.model_index("SPX", e, "heatmap", "by_dte"), {row.cid: dte_score(row)})
        r.zadd(keys.model_index("SPX", e, "heatmap", "by_width"), {row.cid: bucket})
        r.zadd(keys.model_index("SPX", e, "heatmap", "plane"), {row.cid: tile})
        r.zadd(keys.model_index("SPX", e, "gex", "by_strike"), {row.cid: row.spec.strike})
        r.zadd(keys.model_index("SPX", e, "gex", "by_expiry"), {row.cid: row.settle_ms // 1000})
        r.sadd(keys.epoch_universe("SPX", e), row.cid)
    r.set(keys.heatmap_counters("SPX", e), bytes(RECORD_BYTES * len(dec.rows)))  # the counter records
    return time.perf_counter() - t0


def run(repeats: int = 5) -> list[Result]:
    """Time both approaches on the same chain and server; report medians."""
    server = RedisServer().start()
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        rows = spx_like_chain()
        ours, decompose_only = [], []
        for i in range(repeats):
            r.flushdb()
            d, total = _mmaker(r, rows, 1_900_000_000_000 + i)
            ours.append(total)
            decompose_only.append(d)
        r.flushdb()
        base = _baseline(r, rows)
        n = len(rows)
        ours_s = statistics.median(ours)
        return [
            Result.compare(
                "chain decompose 20k contracts → Redis",
                ours_s * 1000,
                "ms",
                base * 1000,
                higher_is_better=False,
                target="≤ 1,000 ms",
                command=COMMAND,
                detail=f"{n} contracts; decompose alone {statistics.median(decompose_only) * 1000:.0f} ms; "
                f"median of {repeats}; baseline 1 run",
            )
        ]
    finally:
        server.stop()
