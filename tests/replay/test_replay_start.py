"""What the replay serves before playback starts, from recordings written by hand in the recording format."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson
import requests

from recording import format as recording
from recording.format import first_chain_records, read_recording, recording_files
from tests.support.servers import SimProcess

SPY_URL = "/v3/snapshot/options/SPY?limit=250"
SPX_URL = "/v3/snapshot/options/I:SPX?limit=250"
US = 1_000  # file names stamp microseconds


def page(ticker: str) -> bytes:
    """One snapshot page holding one contract."""
    row = {"details": {"ticker": ticker, "contract_type": "call", "expiration_date": "2026-12-18",
                       "strike_price": 600.0}}  # fmt: skip
    return orjson.dumps({"status": "OK", "request_id": "r", "results": [row]})


def write(path: Path, feed: str, lines: list[bytes]) -> None:
    """One recording file: the header, then ``lines``."""
    with gzip.open(path, "wb") as f:
        f.write(recording.header_line(feed) + b"".join(lines))


def snapshot(asset: str, url: str, ticker: str, ts: int) -> bytes:
    return recording.chain_line(asset, [(url, ts, page(ticker))], ts - 1, ts)


def test_every_recorded_asset_has_its_first_snapshot_before_playback(tmp_path: Path) -> None:
    """The chain schedule is per underlying: SPY is snapshotted twice before SPX's first snapshot."""
    t0 = time.time_ns() - 60 * 10**9
    write(tmp_path / recording.file_name("chain", t0, pid=101), "chain", [
        snapshot("SPY", SPY_URL, "O:SPY261218C00600000", t0),
        snapshot("SPY", SPY_URL, "O:SPY261218C00601000", t0 + 1_000),
        snapshot("I:SPX", SPX_URL, "O:SPX261218C06000000", t0 + 2_000),
    ])  # fmt: skip
    frames = [recording.frame_line("options", "options-0", '[{"ev":"T","sym":"O:SPY261218C00600000"}]', t0 + 5_000)]
    write(tmp_path / recording.file_name("options", t0 + 5_000, pid=100), "options", frames)
    sim = SimProcess("--replay", str(tmp_path), "--replay-start", "admin", underlyings="SPY").start()
    try:
        answers = {}
        for url in (SPX_URL, SPY_URL, SPX_URL.replace("limit=250", "limit=7")):  # recorded, recorded, rebuilt
            response = requests.get(f"{sim.rest_url}{url}&apiKey=any", timeout=30)
            assert response.status_code == 200, response.text
            answers[url] = [row["details"]["ticker"] for row in response.json()["results"]]
        assert list(answers.values()) == [["O:SPX261218C06000000"], ["O:SPY261218C00600000"], ["O:SPX261218C06000000"]]
        status = sim.admin("/admin/status")["replay"]
        assert status["state"] == "waiting" and status["pages_served"] == {"recorded": 2, "rebuilt": 1}
        assert status["snapshots_in_force"] == {"SPY": t0 // 1_000_000, "I:SPX": (t0 + 2_000) // 1_000_000}
    finally:
        sim.stop()


def test_several_processes_series_are_merged_in_time_order(tmp_path: Path) -> None:
    """Two chain workers' files in one directory: the reader merges them by receive time, and the first
    snapshot of an asset is the earliest of all processes."""
    t0 = time.time_ns()
    write(tmp_path / recording.file_name("chain", t0, pid=7), "chain", [
        snapshot("SPY", SPY_URL, "O:SPY-a", t0), snapshot("SPY", SPY_URL, "O:SPY-c", t0 + 30 * US),
        snapshot("I:SPX", SPX_URL, "O:SPX-late", t0 + 40 * US),
    ])  # fmt: skip
    write(tmp_path / recording.file_name("chain", t0 + 10 * US, pid=8), "chain", [
        snapshot("I:SPX", SPX_URL, "O:SPX-b", t0 + 10 * US), snapshot("SPY", SPY_URL, "O:SPY-d", t0 + 35 * US),
    ])  # fmt: skip
    late = [snapshot("SPY", SPY_URL, "O:SPY-e", t0 + 50 * US)]
    write(tmp_path / recording.file_name("chain", t0 + 50 * US, pid=7), "chain", late)
    files = recording_files(tmp_path)["chain"]
    assert [recording.parse_file_name(p.name).pid for p in files] == [7, 8, 7]  # type: ignore[union-attr]
    assert [(r.ts_recv_ns - t0) // US for r in read_recording(tmp_path)] == [0, 10, 30, 35, 40, 50]
    first = first_chain_records(files)
    assert {a: (r.ts_recv_ns - t0) // US for a, r in first.items()} == {"SPY": 0, "I:SPX": 10}
