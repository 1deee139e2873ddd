"""Chain → ingest → models → promotion → publication → SSE, end to end on a real three-master Redis Cluster.

Everything goes through the product's own cluster client (``REDIS_URL=redis+cluster://…``): the chain
snapshot's MULTI/EXEC epoch (``fabric/bulk.py``), ``python -m ingest`` as a subprocess (``eval_many`` by
node, epoch notifications over cluster pub/sub), the heatmap and GEX recomputes, promotion, publication
by Lua, and ``python -m web`` streaming the published views. The views equal in shape the ones the same
path publishes on a single Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import redis
import requests
from redis.cluster import RedisCluster as ClusterClient

from chain.snapshot import run_snapshot
from fabric import keys
from fabric.epochs import promote_ready_epochs
from fabric.exposure import run_gex
from fabric.redis_client import redis_from_settings
from fabric.settings import Settings
from fabric.tiles import forget_layouts, run_heatmap
from tests.support.cluster import RedisCluster
from tests.support.servers import ROOT, RedisServer, SimProcess, stop_process
from tests.support.waiting import wait_for
from tests.web.conftest import SseStream, WebServer

UNDERLYINGS = ("SPY", "SPX")
REQUIRED = ("ingest", "heatmap", "gex")
HEATMAP_CELL_KEYS = {"expiry", "bucket", "net_flow", "buy_premium", "sell_premium", "volume", "trades", "call_flow",
                     "put_flow"}  # fmt: skip


def models(r: redis.Redis | ClusterClient, settings: Settings, u: str) -> dict[str, str]:
    """One heatmap and one GEX run of ``u``: the publication status of each model for its newest epoch."""
    heatmap = run_heatmap(r, u)[-1].publication
    gex = run_gex(r, u, rate=settings.risk_free_rate, dividend_yield=settings.dividend_yield(u))[-1].publication
    assert heatmap is not None and gex is not None
    return {"heatmap": heatmap.status, "gex": gex.status}


def shape(value: Any) -> Any:
    """The structure of a JSON value: dict keys and value types, recursively (lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def test_the_whole_path_on_a_redis_cluster(
    rc: ClusterClient, cluster: RedisCluster, cluster_settings: Settings, sim: SimProcess, redis_server: RedisServer
) -> None:
    reference = _reference(redis_server, cluster_settings)
    settings = replace(cluster_settings, epoch_required_components=REQUIRED)
    r = redis_from_settings(settings)
    assert isinstance(r, ClusterClient)
    nodes = {r.get_node_from_key(keys.active_epoch(u)).name for u in UNDERLYINGS}

    # 1. chain snapshots: each a warming epoch written in one MULTI/EXEC on the node of its {U} slot
    epochs = {}
    for u in UNDERLYINGS:
        outcome = run_snapshot(r, settings, u)
        assert outcome.status == "created" and outcome.promotion == "waiting", outcome
        epochs[u] = outcome.epoch
        assert r.hget(keys.epoch_meta(u, outcome.epoch), "state") == "warming"

    # 2. ingest as its own process on the cluster: accepts both epochs and writes ticks into them
    env = {**os.environ, "REDIS_URL": cluster.url, "MMAKER_SIM_PORT": str(sim.port), "PYTHONUNBUFFERED": "1",
           "MMAKER_EPOCH_REQUIRED": ",".join(REQUIRED), "MMAKER_UNDERLYINGS": ",".join(UNDERLYINGS)}  # fmt: skip
    log = Path(tempfile.mkstemp(prefix="mmaker-cluster-ingest-", suffix=".log")[1])
    web = WebServer(REDIS_URL=cluster.url, MMAKER_UNDERLYINGS=",".join(UNDERLYINGS))
    with log.open("wb") as out:
        ingest = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    stream: SseStream | None = None
    try:
        for u in UNDERLYINGS:
            wait_for(lambda u=u: "ingest" in r.smembers(keys.epoch_ready(u, epochs[u])), 60, f"ingest accepts {u}", log)
        wait_for(lambda: r.scard(keys.dirty_contracts("SPY", epochs["SPY"])) > 0, 60, "trades reach SPY", log)

        # 3. models on the warming epochs: views prepared, not published
        for u in UNDERLYINGS:
            assert models(r, settings, u) == {"heatmap": "prepared", "gex": "prepared"}
            assert r.get(keys.model_view("heatmap", u)) is None

        # 4. promotion: every component accepted, the prepared views go live with the switch
        for u in UNDERLYINGS:
            promotion = promote_ready_epochs(r, u, required=REQUIRED, max_warming_s=settings.epoch_max_warming_s,
                                             retire_ttl_s=settings.epoch_retire_ttl_s,
                                             now_ms=time.time_ns() // 1_000_000)  # fmt: skip
            assert promotion is not None and promotion.promoted, promotion
            assert set(promotion.published) == {"heatmap", "gex"}
            assert r.get(keys.active_epoch(u)) == epochs[u]

        # 5. publication reaches a web process subscribed through the cluster (PUBLISH from Lua, any node)
        web.start()
        stream = SseStream(f"{web.url}/stream/heatmap/SPY")
        first = stream.next(timeout=20)
        assert first is not None and first["event"] == "model", first
        assert orjson.loads(first["data"])["model"] == "heatmap"
        first_version = int(first["id"])
        wait_for(lambda: r.scard(keys.dirty_contracts("SPY", epochs["SPY"])) > 0, 60, "more SPY trades", log)
        assert models(r, settings, "SPY") == {"heatmap": "published", "gex": "published"}
        published = orjson.loads(r.get(keys.model_view("heatmap", "SPY")))
        assert published["version"] > first_version
        event = stream.next(timeout=20)
        while event is not None and int(event["id"]) < published["version"]:
            event = stream.next(timeout=20)
        assert event is not None and int(event["id"]) == published["version"]
        assert orjson.loads(event["data"])["tiles"] == published["tiles"]
        # the JSON API and /healthz read through the cluster client too (pipelines across slots)
        catalog = requests.get(f"{web.url}/api/models", timeout=10).json()
        assert catalog["published"]["heatmap"]["SPY"] >= published["version"]
        health = web.health()
        assert health["redis"]["reachable"] is True and health["sse"]["subscribed"] is True, health
        assert sum(cell["volume"] for cell in published["tiles"]) > 0, "ingested trades show in the heatmap"

        # 6. a second snapshot of the same topology refreshes the live epoch in place (bulk + refresh_quotes)
        assert run_snapshot(r, settings, "SPY").status == "refreshed"
        assert ingest.poll() is None, log.read_text(errors="replace")[-3000:]
    finally:
        if stream is not None:
            stream.close()
        web.stop()
        stop_process(ingest)
        r.close()
        log.unlink(missing_ok=True)

    # 7. the views have the shape of the single-Redis ones, and describe the same topology
    for (model, u), expected in reference.items():
        view = orjson.loads(rc.get(keys.model_view(model, u)))
        assert view["epoch"] == expected["epoch"] == epochs[u]
        if model == "heatmap":
            # no ingest ran on the single Redis, so its heatmap has no non-empty tile to compare cell by cell
            assert [view[a] for a in ("expiries", "buckets", "bucket_width")] == [
                expected[a] for a in ("expiries", "buckets", "bucket_width")
            ]
            assert {key for cell in view["tiles"] for key in cell} == HEATMAP_CELL_KEYS
            view, expected = {**view, "tiles": []}, {**expected, "tiles": []}
        assert shape(view) == shape(expected), (model, u)
    assert nodes, "the underlyings' slots were resolved to cluster nodes"


def _reference(redis_server: RedisServer, settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    single = redis.Redis.from_url(redis_server.url_db(0), decode_responses=True)
    single.flushdb()
    try:
        return single_redis_views_from(redis_server.url_db(0), settings)
    finally:
        single.flushdb()
        single.close()


def single_redis_views_from(url: str, settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """The same path on one Redis (promoted at once): the published views, by (model, underlying)."""
    single = replace(settings, redis_url=url, epoch_required_components=())
    client = redis_from_settings(single)
    try:
        for u in UNDERLYINGS:
            assert run_snapshot(client, single, u).status == "created"
            assert models(client, single, u) == {"heatmap": "published", "gex": "published"}
            forget_layouts(u, ())  # the cluster run must not reuse this store's cached tiles
        return {(m, u): orjson.loads(client.get(keys.model_view(m, u))) for m in keys.MODELS for u in UNDERLYINGS}
    finally:
        client.close()
