"""The official ``massive`` clients read from the simulator unchanged; the CLI announces its port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import requests
from massive import RESTClient, WebSocketClient

from tests.sim.simkit import ThreadedSim

ROOT = Path(__file__).resolve().parents[2]


def test_official_rest_client(sim: ThreadedSim) -> None:
    client = RESTClient("any-key", base=sim.url, retries=0)
    snaps = list(client.list_snapshot_options_chain("SPY", params={"limit": 250}))
    assert len(snaps) == sim.admin("status")["underlyings"]["SPY"]["contracts"]
    assert len({s.details.ticker for s in snaps}) == len(snaps)
    first = snaps[0]
    assert first.details.ticker.startswith("O:SPY") and first.last_quote.bid is not None
    spx = list(
        client.list_snapshot_options_chain(
            "I:SPX", params={"limit": 250, "strike_price.gte": 6500, "strike_price.lte": 6600}
        )
    )
    assert spx and spx[0].underlying_asset.value is not None


def test_official_websocket_client(sim: ThreadedSim) -> None:
    client = WebSocketClient(
        "any-key", feed=f"127.0.0.1:{sim.port}", market="options", secure=False, subscriptions=["T.*"], max_reconnects=0
    )
    received: list = []
    done = threading.Event()
    loop = asyncio.new_event_loop()

    async def handler(msgs: list) -> None:
        received.extend(msgs)
        if len(received) >= 100:
            done.set()
            await client.close()

    def run() -> None:
        loop.run_until_complete(client.connect(handler))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(15), f"only {len(received)} messages"
    thread.join(10)
    assert received[0].event_type == "T" and received[0].symbol.startswith("O:")
    assert received[0].price > 0 and received[0].sequence_number > 0


def test_cli_subprocess_port_zero() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "7",
            "--underlyings",
            "QQQ",
            "--api-key",
            "secret",
            "--tick-rate",
            "500",
            "--clock",
            "2025-11-24T15:00:00Z",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sim listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert not url.endswith(":0")
        ok = requests.get(f"{url}/v3/snapshot/options/QQQ", params={"apiKey": "secret"}, timeout=10)
        assert ok.status_code == 200 and len(ok.json()["results"]) == 10
        assert requests.get(f"{url}/v3/snapshot/options/QQQ", params={"apiKey": "x"}, timeout=10).status_code == 401
        status = requests.get(f"{url}/admin/status", timeout=10).json()
        assert status["clock"].startswith("2025-11-24T15:00")
        assert (
            requests.get(f"{url}/admin/tick_rate", params={"events_per_s": 1000}, timeout=10).json()["tick_rate"]
            == 1000
        )
    finally:
        proc.terminate()
        proc.wait(10)
