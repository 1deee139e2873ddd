"""The recorder (recording/writer.py) and the recording format (recording/format.py), without a feed."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

from fabric.settings import Settings
from recording import format as recording
from recording.format import ChainRecord, FrameRecord, read_file, read_recording, recording_files
from recording.writer import MB, Recorder, recorder_from_settings
from tests.support.servers import ROOT
from tests.support.waiting import wait_for


def frame(i: int) -> bytes:
    """A frame that does not compress away (so rotation happens after a few of them)."""
    return b'[{"ev":"T","sym":"O:SPY","i":"' + os.urandom(600).hex().encode() + b'","q":%d}]' % i


def test_frames_and_snapshots_round_trip(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    t0 = time.time_ns()
    recorder.frame("options", "options-0", b'[{"ev":"T","sym":"O:SPY251219C00650000"}]', t0)
    recorder.frame("stocks", "stocks", '[{"ev":"T","sym":"SPY"}]', t0 + 1)
    recorder.chain_snapshot("I:SPX", [("/v3/snapshot/options/I:SPX?limit=250", t0 + 2, b'{"status":"OK"}')], t0, t0 + 3)
    recorder.frame("options", "options-1", b"not json \xff", t0 + 4)
    recorder.close()
    files = recording_files(tmp_path)
    assert sorted(files) == ["chain", "options", "stocks"]
    records = list(read_recording(tmp_path))
    assert [r.ts_recv_ns for r in records] == [t0, t0 + 1, t0 + 3, t0 + 4]
    assert records[0] == FrameRecord("options", "options-0", t0, '[{"ev":"T","sym":"O:SPY251219C00650000"}]')
    assert isinstance(records[2], ChainRecord) and records[2].asset == "I:SPX" and records[2].started_ns == t0
    assert records[2].pages[0].url == "/v3/snapshot/options/I:SPX?limit=250"
    assert records[2].pages[0].body == '{"status":"OK"}'
    assert isinstance(records[3], FrameRecord) and records[3].data.startswith("not json")
    assert recorder.counters["records"] == 4 and recorder.dropped_frames == 0


def test_files_rotate_and_the_oldest_go_beyond_the_budget(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, rotate_bytes=8_000, max_bytes=40_000)
    t0 = time.time_ns()
    for i in range(400):
        recorder.frame("options", "options-0", frame(i), t0 + i * 1000)
    recorder.close()
    paths = recording_files(tmp_path)["options"]
    assert recorder.counters["files"] >= 4 and recorder.counters["files_deleted"] > 0 and len(paths) >= 2
    # when the newest file was opened, everything older fit the budget (the file being written is never deleted)
    assert sum(p.stat().st_size for p in paths[:-1]) <= 40_000
    kept = [r for p in paths for r in read_file(p)]
    seq = [int(r.data.rsplit('"q":', 1)[1].rstrip("}]")) for r in kept]
    assert seq == list(range(seq[0], 400)) and seq[0] > 0  # a contiguous tail: the oldest files went first


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, queue_max_bytes=1_000)
    recorder.frame("options", "options-0", b"x" * 5_000, time.time_ns())  # larger than the whole queue
    recorder.frame("options", "options-0", b"[]", time.time_ns())
    recorder.close()
    assert recorder.dropped_frames == 1
    assert [r.data for r in read_recording(tmp_path)] == ["[]"]


def test_a_killed_writer_leaves_every_flushed_line_readable(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)  # never closed: like a process killed without cleanup
    t0 = time.time_ns()
    for i in range(50):
        recorder.frame("options", "options-0", frame(i), t0 + i)
    wait_for(lambda: "options" in recording_files(tmp_path))  # the writer thread opens the file
    (path,) = recording_files(tmp_path)["options"]
    wait_for(lambda: len(list(read_file(path))) == 50)  # sync-flushed within about a second
    data = path.read_bytes()
    recorder.close()  # the bytes are taken: stop the writer thread (the copy is what a killed process leaves)
    cut = tmp_path / recording.file_name("options", t0 + 1_000_000_000)
    cut.write_bytes(data[: len(data) // 2])  # and cut in the middle of the stream
    kept = list(read_file(cut))
    assert 0 < len(kept) < 50 and [int(r.ts_recv_ns - t0) for r in kept] == list(range(len(kept)))
    with gzip.open(path, "rb") as f:
        assert f.readline().startswith(b'{"kind":"header","version":1')


def test_settings_name_the_recording_and_the_clock(tmp_path: Path) -> None:
    env = {"MMAKER_RECORD_DIR": str(tmp_path), "MMAKER_RECORD_ROTATE_MB": "8", "MMAKER_RECORD_MAX_MB": "100",
           "MMAKER_RECORD_QUEUE_MB": "16", "MMAKER_CLOCK_MS": "1795518745289"}  # fmt: skip
    settings = Settings.from_env(env)
    assert settings.now_ms() == settings.now_ms() == 1795518745289
    recorder = recorder_from_settings(settings)
    assert recorder is not None and recorder.directory == tmp_path
    assert (recorder.rotate_bytes, recorder.max_bytes, recorder.queue_max_bytes) == (8 * MB, 100 * MB, 16 * MB)
    unset = Settings.from_env({})
    assert recorder_from_settings(unset) is None and unset.clock_ms is None
    assert abs(unset.now_ms() - time.time_ns() // 1_000_000) < 60_000  # the wall clock


def seq_of(records: list) -> list[int]:
    """The ``q`` of each frame made by :func:`frame`."""
    return [int(r.data.rsplit('"q":', 1)[1].rstrip("}]")) for r in records]


def own_files(directory: Path, pid: int) -> list[Path]:
    """The options files of one process, oldest first."""
    return [p for p in recording_files(directory)["options"] if recording.parse_file_name(p.name).pid == pid]


def test_processes_sharing_a_directory_prune_only_their_own_files(tmp_path: Path) -> None:
    """Two recorders (two processes: ingest and a second ingest, two chain workers) in one directory with a
    tiny budget: each deletes only its own oldest files, so each keeps a contiguous tail of its frames."""
    pids = (os.getpid(), os.getppid())  # both running: neither's files are orphans
    recorders = [Recorder(tmp_path, rotate_bytes=8_000, max_bytes=40_000, pid=pid) for pid in pids]
    t0 = time.time_ns()
    for i in range(400):
        for k, recorder in enumerate(recorders):
            recorder.frame("options", f"options-{k}", frame(i), t0 + i * 1000 + k)
    for recorder in recorders:
        recorder.close()
    for pid, recorder in zip(pids, recorders, strict=True):
        paths = own_files(tmp_path, pid)
        assert all(p.name.endswith(f"-p{pid}.jsonl.gz") or f"-p{pid}-" in p.name for p in paths)
        assert recorder.counters["files_deleted"] > 0
        # every file this recorder made and did not delete itself is still there: nobody else deleted any
        assert len(paths) == recorder.counters["files"] - recorder.counters["files_deleted"]
        assert sum(p.stat().st_size for p in paths[:-1]) <= 40_000  # its own budget
        seq = seq_of([r for p in paths for r in read_file(p)])
        assert seq == list(range(seq[0], 400)) and seq[0] > 0
    # the reader merges both processes' series by receive time
    stamps = [r.ts_recv_ns for r in read_recording(tmp_path)]
    assert stamps == sorted(stamps) and len({r.conn for r in read_recording(tmp_path)}) == 2


def test_files_of_processes_that_are_gone_are_adopted_into_the_budget(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid runs no process any more
    t_old = time.time_ns() - 3_600 * 10**9
    names = {
        "gone": recording.file_name("options", t_old, pid=gone.pid),
        "running": recording.file_name("options", t_old, pid=os.getppid()),
        "unnamed": recording.file_name("options", t_old + 1),  # an older recording's name: no pid, kept
    }
    for name in names.values():
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(recording.header_line("options") + recording.frame_line("options", "x", frame(0), t_old))
    recorder = Recorder(tmp_path, rotate_bytes=8_000, max_bytes=20_000)
    for i in range(100):
        recorder.frame("options", "options-0", frame(i), time.time_ns())
    recorder.close()
    left = {p.name for p in recording_files(tmp_path)["options"]}
    assert names["gone"] not in left and names["running"] in left and names["unnamed"] in left
    assert recorder.counters["files_deleted"] > 1  # the orphan and some of its own


def test_chain_snapshots_obey_the_queue_bound_and_close(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, queue_max_bytes=2_000)
    t0 = time.time_ns()
    url = "/v3/snapshot/options/SPY?limit=250"
    recorder.chain_snapshot("SPY", [(url, t0, b'{"results":["' + b"x" * 5_000 + b'"]}')], t0, t0 + 1)  # too big
    recorder.chain_snapshot("SPY", [(url, t0 + 2, b'{"results":[]}')], t0 + 2, t0 + 3)
    recorder.close()
    recorder.chain_snapshot("SPY", [(url, t0 + 4, b'{"results":[]}')], t0 + 4, t0 + 5)  # after close: ignored
    assert recorder.dropped_snapshots == 1 and recorder.counters["dropped_snapshots"] == 1
    records = list(read_recording(tmp_path))
    assert [(r.asset, r.ts_recv_ns) for r in records] == [("SPY", t0 + 3)]  # type: ignore[union-attr]
    (path,) = recording_files(tmp_path)["chain"]
    assert path.name == recording.file_name("chain", t0 + 3, pid=os.getpid())  # named by the snapshot's time


def test_a_recorder_never_closed_is_closed_at_exit(tmp_path: Path) -> None:
    """Like the chain worker's recorder: the interpreter's exit writes the queue and the gzip trailer."""
    script = (
        "import sys, time\n"
        "from recording.writer import Recorder\n"
        "r = Recorder(sys.argv[1])\n"
        "for i in range(20):\n"
        "    r.chain_snapshot('SPY', [('/v3/snapshot/options/SPY', i, b'{}')], i, time.time_ns())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    (path,) = recording_files(tmp_path)["chain"]
    with gzip.open(path, "rb") as f:
        lines = f.read().splitlines()  # raises EOFError without the trailer
    assert len(lines) == 21 and len(list(read_file(path))) == 20
