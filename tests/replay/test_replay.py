"""Record a short live session, then replay it: the same views, byte for byte, run after run.

The recording is made the production way (``MMAKER_RECORD_DIR``: the chain fetcher's and ingest's own
recorders) from the live simulator. Each replay runs in a process of its own (``tests/replay/pipeline.py``):
a fresh redis-server, the simulator in replay mode, the chain snapshot, ingest and both model recomputes
under one fixed clock (``MMAKER_CLOCK_MS``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import orjson
import pytest
import redis
import websockets

from chain.fetch import ChainFetcher
from chain.snapshot import fetcher_from_settings, run_snapshot
from fabric.redis_client import async_redis_from_settings
from fabric.settings import Settings
from ingest.service import IngestService
from recording.format import ChainRecord, FrameRecord, read_recording, recording_files
from sim.replay import summary
from tests.support.servers import ROOT, RedisServer, SimProcess

REPLAY_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A few seconds of SPY recorded from the live simulator: the snapshot and every frame ingest received."""
    directory = tmp_path_factory.mktemp("recording")
    redis_server = RedisServer().start()
    sim = SimProcess("--tick-rate", "3000", underlyings="SPY", seed=11).start()
    try:
        settings = dataclasses.replace(
            Settings.from_env({}),
            redis_url=redis_server.url_db(0),
            massive_rest_url=sim.rest_url,
            massive_ws_url=sim.ws_url,
            underlyings=("SPY",),
            epoch_required_components=(),
            record_dir=str(directory),
        )
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        outcome = run_snapshot(r, settings, "SPY", fetcher=fetcher_from_settings(settings))
        assert outcome.status == "created"

        async def record() -> dict[str, int]:
            client = async_redis_from_settings(settings)
            service = IngestService(settings, client)
            task = asyncio.create_task(service.run())
            deadline = time.monotonic() + 60
            while service.stats.counters["trades_applied"] < 600 or service.stats.counters["frames"] < 40:
                assert time.monotonic() < deadline and not task.done(), service.status()
                await asyncio.sleep(0.05)
            task.cancel()  # the service closes its recorder on the way out
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
            return dict(service.stats.counters)

        counters = asyncio.run(record())
        # the chain worker's recorder is never closed (like a worker killed at any time): its file is read
        # as far as it was flushed, which it is within about a second
        deadline = time.monotonic() + 20
        while not any(isinstance(rec, ChainRecord) for rec in read_recording(directory, feeds=("chain",))):
            assert time.monotonic() < deadline, "the chain snapshot was never flushed to the recording"
            time.sleep(0.05)
        yield {"dir": str(directory), "snapshot": outcome, "counters": counters}
    finally:
        sim.stop()
        redis_server.stop()


def test_the_recording_holds_the_snapshot_pages_and_every_frame(recording: dict[str, Any]) -> None:
    files = recording_files(recording["dir"])
    assert sorted(files) == ["chain", "options", "stocks"]
    (snapshot,) = [rec for rec in read_recording(recording["dir"], feeds=("chain",))]
    assert isinstance(snapshot, ChainRecord) and snapshot.asset == "SPY"
    assert len(snapshot.pages) == recording["snapshot"].pages
    tickers = {row["details"]["ticker"] for page in snapshot.pages for row in orjson.loads(page.body)["results"]}
    assert len(tickers) == recording["snapshot"].contracts
    frames = [rec for rec in read_recording(recording["dir"], feeds=("options",))]
    assert all(isinstance(f, FrameRecord) and f.conn == "options-0" for f in frames)
    stamps = [f.ts_recv_ns for f in frames]
    assert stamps == sorted(stamps)
    about = summary(recording["dir"])
    # every option event ingest took in is in the recording (it records on receipt: a frame still queued
    # in ingest when it was stopped is recorded but was never counted)
    assert about["events"]["options"] >= recording["counters"]["events_in"] > 0
    assert about["chain_snapshots"] == {"SPY": 1} and about["events"]["stocks"] > 0


def replay(directory: str, clock_ms: int) -> dict[str, Any]:
    """One replay in its own process (see tests/replay/pipeline.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.replay.pipeline", directory, str(clock_ms)],
        cwd=ROOT, capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_replaying_twice_publishes_bit_identical_views(recording: dict[str, Any]) -> None:
    clock_ms = summary(recording["dir"])["clock_ms"]
    first = replay(recording["dir"], clock_ms)
    second = replay(recording["dir"], clock_ms)
    assert first["heatmap"] and first["gex"]
    assert first["heatmap"] == second["heatmap"]
    assert first["gex"] == second["gex"]

    # the replay was complete and served the recorded pages themselves
    recorded_trades = sum(
        1
        for rec in read_recording(recording["dir"], feeds=("options",))
        for event in orjson.loads(rec.data)
        if event.get("ev") == "T"
    )
    heatmap, gex = json.loads(first["heatmap"]), json.loads(first["gex"])
    assert recorded_trades >= recording["counters"]["trades_applied"] > 0
    assert sum(tile["trades"] for tile in heatmap["tiles"]) == recorded_trades
    assert first["replay"]["pages_served"] == {"recorded": recording["snapshot"].pages}
    assert first["replay"]["rejects"] == {}
    assert first["snapshot"]["epoch"] == recording["snapshot"].epoch
    assert heatmap["as_of_ms"] == gex["as_of_ms"] == clock_ms
    assert gex["contracts_used"] > 0 and gex["spot"] > 0


def test_other_requests_are_answered_from_the_recorded_rows(recording: dict[str, Any]) -> None:
    sim = SimProcess("--replay", recording["dir"], "--replay-start", "admin", underlyings="SPY").start()
    try:
        # another page size and one expiry range: no request matches a recorded one
        fetcher = ChainFetcher(sim.rest_url, "any", page_limit=97, parallel_ranges=1)
        rows = fetcher.fetch("SPY", today=date.today()).rows
        (snapshot,) = list(read_recording(recording["dir"], feeds=("chain",)))
        recorded = sorted(
            (row for page in snapshot.pages for row in orjson.loads(page.body)["results"]),
            key=lambda row: row["details"]["ticker"],
        )
        assert rows == recorded
        status = sim.admin("/admin/status")["replay"]
        assert status["state"] == "waiting" and status["pages_served"]["rebuilt"] == -(-len(rows) // 97)
        assert fetcher.fetch("QQQ", today=date.today()).rows == []  # not in the recording
    finally:
        sim.stop()


def test_subscribers_get_the_recorded_frames_or_just_their_events(recording: dict[str, Any]) -> None:
    """Paced playback (``--speed 20``) that starts on its own after the first options subscription."""
    frames = [orjson.loads(rec.data) for rec in read_recording(recording["dir"], feeds=("options",))]
    raw = [rec.data for rec in read_recording(recording["dir"], feeds=("options",))]
    data = [(text, events) for text, events in zip(raw, frames, strict=True) if events[0].get("ev") != "status"]
    quoted = sorted({e["sym"] for _, events in data for e in events if e["ev"] == "Q"})
    one = next(e["sym"] for _, events in data for e in events if e["ev"] == "T")
    sim = SimProcess("--replay", recording["dir"], "--speed", "20", "--replay-start", "auto", "--replay-wait-s", "1",
                     underlyings="SPY").start()  # fmt: skip

    async def listen(topics: list[str], got: list[str], go: asyncio.Event) -> None:
        async with websockets.connect(f"{sim.ws_url}/options", max_size=2**24) as ws:
            await ws.recv()
            await ws.send(json.dumps({"action": "auth", "params": "any"}))
            await ws.recv()
            got.append("authenticated")
            await go.wait()
            await ws.send(json.dumps({"action": "subscribe", "params": ",".join(topics)}))
            await ws.recv()  # the subscription statuses
            while True:
                got.append(await ws.recv())

    async def scenario() -> tuple[list[str], list[str]]:
        everything: list[str] = []
        single: list[str] = []
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(listen(["T.*", *(f"Q.{t}" for t in quoted)], everything, go)),
            asyncio.create_task(listen([f"T.{one}"], single, go)),
        ]
        while not (everything and single):
            await asyncio.sleep(0.01)
        go.set()  # both subscribe at once; playback starts 1 s after the first subscription
        deadline = time.monotonic() + 60
        while True:
            status = await asyncio.to_thread(sim.admin, "/admin/status")
            if status["replay"]["state"] == "done" and status["events_sent"] == sum(
                status["replay"]["events_queued"].values()
            ):
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return everything[1:], single[1:]

    try:
        everything, single = asyncio.run(scenario())
    finally:
        sim.stop()
    assert everything == [text for text, _ in data]  # every frame byte for byte, in order
    wanted = [e for _, events in data for e in events if e["ev"] == "T" and e["sym"] == one]
    assert [e for frame in single for e in orjson.loads(frame)] == wanted and wanted
