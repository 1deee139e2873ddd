"""Several underlyings at once, and the same path on a Redis Cluster against a single Redis.

One machine runs everything: the simulator generating ``RATE_PER_UNDERLYING`` option events per second for
each underlying (trades and quotes), one ``python -m ingest`` process serving all of them, and this process
running the heatmap and GEX recomputes of each underlying (as the workers do) while ingest writes.

- **underlyings**: SPY alone, then SPY+SPX, then SPY+SPX+QQQ on one redis-server — events committed per
  second (ingest's own count) and each underlying's recompute times, against the single-underlying figures;
- **cluster**: SPY+SPX+QQQ on a local three-master Redis Cluster (``redis+cluster://``) against the single
  redis-server of the same run.

The baseline of each row is the comparable figure of the same run (one underlying; one Redis), so the ratio
shows what adding underlyings, or spreading the state over a cluster, costs or gains.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.ingest_throughput import cpu_seconds
from bench.models_recompute import median_ms
from bench.results import Result
from chain.snapshot import run_snapshot
from fabric import exposure, keys, tiles
from fabric.redis_client import redis_from_url
from fabric.settings import Settings
from tests.support.cluster import RedisCluster
from tests.support.servers import ROOT, RedisServer, SimProcess, stop_process

COMMAND = "make bench  (python -m bench scale)"
RATE_PER_UNDERLYING = 25_000  # option events/s the simulator generates per underlying (it sends the subscribed ones)
WARMUP_S = 6.0
WINDOW_S = 10.0
RUNS = 7
DIRTY_PER_RUN = 1_000  # contracts marked dirty before each timed heatmap run (plus what ingest marks)


def _committed(r: Any) -> int:
    return int(r.hget(keys.ingest_status(), "events_committed") or 0)


def measure(redis_url: str, redis_pids: list[int], underlyings: tuple[str, ...]) -> dict[str, Any]:
    """Load the state store at ``redis_url`` with ``underlyings`` from one simulator and one ingest."""
    sim = SimProcess("--tick-rate", str(RATE_PER_UNDERLYING * len(underlyings)), underlyings=",".join(underlyings))
    sim.start()
    env = {**os.environ, "REDIS_URL": redis_url, "MMAKER_SIM_PORT": str(sim.port), "PYTHONUNBUFFERED": "1",
           "MMAKER_UNDERLYINGS": ",".join(underlyings), "MMAKER_EPOCH_REQUIRED": "none",
           "MMAKER_INGEST_QUOTE_CONNECTIONS": str(len(underlyings)), "CELERY_BROKER_URL": "memory://"}  # fmt: skip
    env.pop("MASSIVE_API_KEY", None)
    settings = Settings.from_env(env)
    r = redis_from_url(redis_url, decode_responses=True)
    log = Path(tempfile.mkstemp(prefix="mmaker-bench-scale-", suffix=".log")[1])
    ingest = None
    try:
        for u in underlyings:
            outcome = run_snapshot(r, replace(settings, epoch_required_components=()), u)
            assert outcome.status == "created", outcome
        contracts = {u: r.scard(keys.epoch_universe(u, r.get(keys.active_epoch(u)))) for u in underlyings}
        with log.open("wb") as out:
            ingest = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while _committed(r) == 0:
            if time.monotonic() > deadline or ingest.poll() is not None:
                raise RuntimeError(f"ingest committed nothing:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        time.sleep(WARMUP_S)
        pids = [ingest.pid, sim.proc.pid, *redis_pids]  # type: ignore[union-attr]
        cpu0 = [cpu_seconds(p) for p in pids]
        n0, t0 = _committed(r), time.monotonic()
        time.sleep(WINDOW_S)
        n1, t1 = _committed(r), time.monotonic()
        cpu = [(cpu_seconds(p) - c) / (t1 - t0) * 100 for p, c in zip(pids, cpu0, strict=True)]
        status = r.hgetall(keys.ingest_status())
        recompute: dict[str, dict[str, float]] = {}
        rng = random.Random(7)
        for u in underlyings:  # while ingest keeps writing; each heatmap run also gets DIRTY_PER_RUN contracts
            epoch = r.get(keys.active_epoch(u))
            cids = sorted(r.smembers(keys.epoch_universe(u, epoch)))

            def mark(u: str = u, epoch: str = epoch, cids: list[str] = cids) -> None:
                r.sadd(keys.dirty_contracts(u, epoch), *rng.sample(cids, min(DIRTY_PER_RUN, len(cids))))

            exposure._cache.clear()
            gex_cold = median_ms(lambda u=u: exposure.run_gex(r, u, rate=0.04), 1)
            recompute[u] = {
                "heatmap_ms": median_ms(lambda u=u: tiles.run_heatmap(r, u), RUNS, mark),
                "gex_ms": median_ms(lambda u=u: exposure.run_gex(r, u, rate=0.04), RUNS),
                "gex_cold_ms": gex_cold,
            }
        return {
            "events_per_s": (n1 - n0) / (t1 - t0), "contracts": contracts, "recompute": recompute,
            "cpu_ingest": cpu[0], "cpu_sim": cpu[1], "cpu_redis": sum(cpu[2:]),
            "lag_p99_ms": status.get("lag_ms_p99"), "commit_p99_ms": status.get("commit_ms_p99"),
        }  # fmt: skip
    finally:
        stop_process(ingest)
        sim.stop()
        tiles.forget_all()
        exposure._cache.clear()
        r.close()
        log.unlink(missing_ok=True)


def _describe(m: dict[str, Any]) -> str:
    per_u = "; ".join(
        f"{u} ({m['contracts'][u]:,} contracts) heatmap {v['heatmap_ms']:.1f} ms, GEX {v['gex_ms']:.1f} ms "
        f"(cold {v['gex_cold_ms']:.0f} ms)"
        for u, v in m["recompute"].items()
    )
    return (f"{m['events_per_s']:,.0f} events/s committed; ingest lag p99 {m['lag_p99_ms']} ms, commit p99 "
            f"{m['commit_p99_ms']} ms; CPU ingest {m['cpu_ingest']:.0f}% sim {m['cpu_sim']:.0f}% redis "
            f"{m['cpu_redis']:.0f}% of one core; {per_u}")  # fmt: skip


def run() -> list[Result]:
    """One, two and three underlyings on a single Redis; three on a cluster."""
    single: dict[int, dict[str, Any]] = {}
    for count in (1, 2, 3):
        server = RedisServer().start()
        try:
            single[count] = measure(server.url_db(0), [server.proc.pid], ("SPY", "SPX", "QQQ")[:count])  # type: ignore[union-attr]
        finally:
            server.stop()
    cluster = RedisCluster().start()
    try:
        clustered = measure(cluster.url, [p.pid for p in cluster.procs], ("SPY", "SPX", "QQQ"))
    finally:
        cluster.stop()

    one, three = single[1], single[3]
    offered = (
        f"the simulator generates {RATE_PER_UNDERLYING:,} option events/s per underlying and sends those "
        "subscribed (trades of every contract, quotes of 1,000 per connection); 2 cores shared by all"
    )
    spy_heatmap = [single[n]["recompute"]["SPY"]["heatmap_ms"] for n in (1, 2, 3)]
    return [
        Result.compare("scale: events committed/s, SPY+SPX+QQQ", three["events_per_s"], "events/s",
                       one["events_per_s"], higher_is_better=True, target="report (baseline: SPY alone)",
                       command=COMMAND, detail=f"{offered}. 3 underlyings: {_describe(three)}. 2 underlyings "
                       f"(SPY+SPX): {_describe(single[2])}. SPY alone: {_describe(one)}"),
        Result.compare("scale: SPY heatmap recompute with 3 underlyings live", spy_heatmap[2], "ms", spy_heatmap[0],
                       higher_is_better=False, target="report (baseline: SPY alone)", command=COMMAND,
                       detail=f"SPY heatmap median ({DIRTY_PER_RUN:,} contracts marked dirty before each run, plus "
                              f"what ingest marks) with 1 / 2 / 3 underlyings: "
                              f"{' / '.join(f'{v:.1f}' for v in spy_heatmap)} ms; GEX (warm) "
                              + " / ".join(f"{single[n]['recompute']['SPY']['gex_ms']:.1f}" for n in (1, 2, 3))
                              + " ms; every run while ingest writes"),
        Result.compare("cluster: events committed/s, SPY+SPX+QQQ on 3 masters", clustered["events_per_s"],
                       "events/s", three["events_per_s"], higher_is_better=True,
                       target="report (baseline: one redis-server)", command=COMMAND,
                       detail=f"{offered}. cluster: {_describe(clustered)}. single Redis: {_describe(three)}"),
        Result.compare("cluster: SPX heatmap recompute, 3 underlyings on 3 masters",
                       clustered["recompute"]["SPX"]["heatmap_ms"], "ms", three["recompute"]["SPX"]["heatmap_ms"],
                       higher_is_better=False, target="report (baseline: one redis-server)", command=COMMAND,
                       detail=f"heatmap with {DIRTY_PER_RUN:,} dirty contracts per run. Cluster / single: heatmap "
                              + ", ".join(f"{u} {clustered['recompute'][u]['heatmap_ms']:.1f} / "
                                          f"{three['recompute'][u]['heatmap_ms']:.1f} ms" for u in three["recompute"])
                              + "; GEX warm " + ", ".join(
                           f"{u} {clustered['recompute'][u]['gex_ms']:.1f} / {three['recompute'][u]['gex_ms']:.1f} ms"
                           for u in three["recompute"])),
    ]  # fmt: skip
