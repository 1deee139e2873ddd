"""One replay of a recording through the whole pipeline, in a process of its own (fresh caches, fresh Redis).

``python -m tests.replay.pipeline DIR CLOCK_MS [UNDERLYING]`` (default SPY) starts a redis-server and the
simulator in replay mode (``--speed max``, started by the admin endpoint once ingest holds its subscriptions),
then runs the pipeline the way the workers do — the chain snapshot, ingest, the heatmap and GEX recomputes —
under the fixed clock ``CLOCK_MS``, and prints the published views as JSON: ``{"heatmap": "<view>", "gex": "<view>",
"replay": {…sim status…}}``. The recomputes run only once every replayed frame is committed (the
simulator's queued events = ingest's committed events, and the last recorded spot is in Redis).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import Any

import orjson
import redis

from chain.snapshot import run_snapshot
from fabric import keys
from fabric.exposure import run_gex
from fabric.redis_client import async_redis_from_settings
from fabric.settings import Settings
from fabric.tiles import run_heatmap
from ingest.service import IngestConfig, IngestService
from recording.format import FrameRecord, read_recording
from tests.support.servers import RedisServer, SimProcess
from tests.support.waiting import until


def last_spot_ts_ms(directory: str, underlying: str) -> int:
    """The latest event time of the recorded spot of ``underlying`` (stock trades, index values; 0 when none)."""
    latest = 0
    for record in read_recording(directory, feeds=("stocks", "indices")):
        if isinstance(record, FrameRecord):
            for event in orjson.loads(record.data):
                if (event.get("ev") == "T" and event.get("sym") == underlying) or (
                    event.get("ev") == "V" and event.get("T") == f"I:{underlying}"
                ):
                    latest = max(latest, int(event["t"]))
    return latest


def replay_views(directory: str, clock_ms: int, underlying: str = "SPY") -> dict[str, Any]:
    """Replay ``underlying`` of ``directory`` under the fixed clock; the published views and the replay status."""
    redis_server = RedisServer().start()
    sim = SimProcess("--replay", directory, "--speed", "max", "--replay-start", "admin", underlyings=underlying)
    try:
        sim.start()
        settings = dataclasses.replace(
            Settings.from_env({}),
            redis_url=redis_server.url_db(0),
            massive_rest_url=sim.rest_url,
            massive_ws_url=sim.ws_url,
            underlyings=(underlying,),
            epoch_required_components=(),
            clock_ms=clock_ms,
        )
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        outcome = run_snapshot(r, settings, underlying)
        assert outcome.status == "created" and outcome.promotion == "promoted", outcome
        spot_ts = last_spot_ts_ms(directory, underlying)
        status = asyncio.run(_ingest_everything(settings, sim, r, underlying, spot_ts))
        run_heatmap(r, underlying, now_ms=settings.now_ms())
        run_gex(r, underlying, rate=settings.risk_free_rate, dividend_yield=settings.dividend_yield(underlying),
                now_ms=settings.now_ms())  # fmt: skip
        return {
            "heatmap": r.get(keys.model_view("heatmap", underlying)),
            "gex": r.get(keys.model_view("gex", underlying)),
            "replay": status,
            "snapshot": outcome.as_dict(),
        }
    finally:
        sim.stop()
        redis_server.stop()


async def _ingest_everything(
    settings: Settings, sim: SimProcess, r: redis.Redis, underlying: str, spot_ts: int
) -> dict[str, Any]:
    client = async_redis_from_settings(settings)
    # quotes are ranked once, at the start (the replay must not outlast a re-ranking on a slow machine)
    service = IngestService(settings, client, dataclasses.replace(IngestConfig.from_settings(settings), requote_s=3600))
    task = asyncio.create_task(service.run())
    try:
        connections = list(service.connections.values())
        await until(lambda: all(c.connected and c.desired and c.subscribed == c.desired for c in connections),
                    "ingest subscriptions")  # fmt: skip
        await asyncio.to_thread(sim.admin, "/admin/replay/start")
        status: dict[str, Any] = {}

        async def sim_done() -> bool:
            status.update(await asyncio.to_thread(sim.admin, "/admin/status"))
            queued = sum(status["replay"]["events_queued"].values())
            return status["replay"]["state"] == "done" and status["events_sent"] == queued

        await until(sim_done, "the replay to finish")
        expected = status["replay"]["events_queued"].get("options", 0)
        await until(lambda: service.stats.counters["events_committed"] == expected, "every option event committed")
        await until(lambda: int(r.hget(keys.spot(underlying), "ts_ms") or 0) >= spot_ts, "the last recorded spot")
        assert not task.done(), "ingest stopped"
        return {**status["replay"], "events_committed": service.stats.counters["events_committed"],
                "rejects": dict(service.stats.rejects)}  # fmt: skip
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


if __name__ == "__main__":
    print(json.dumps(replay_views(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])))
