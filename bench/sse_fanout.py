"""SSE fan-out: publish→receipt latency of one published view to 1,000 and 5,000 concurrent SSE clients.

mmaker: ``python -m web`` (one pub/sub subscription per process; the hub reads each view once, encodes it
once and hands the same bytes to every client). Baseline (what a typical SSE endpoint does): every client
holds its own Redis pub/sub subscription and GETs the view itself on each notification — measured at
1,000 clients. Both run as uvicorn subprocesses against a redis-server started for the benchmark.

The publisher writes the view as ``lua/publish_view.lua`` does (INCR version, SET, PUBLISH) 4 times a second
for ~10 s with its wall-clock publish time (``pub_ns``) as the view's second field; the clients (asyncio
protocols, one process, no HTTP library) take receipt time when the bytes arrive. Latency therefore
includes Redis, the server and the client loop's own lag (all on one machine). Each run also reports the CPU
share (of one core) of the server, of this process (clients + publisher) and of Redis over the publishing
window: the machine has 2 cores, so a client process near 100% would mean the benchmark measures itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio as aioredis

from bench.results import Result
from fabric import keys
from tests.support.servers import ROOT, RedisServer, free_port, stop_process
from tests.web.views import gex_view

COMMAND = "make bench  (python -m bench sse_fanout)"
PUBLISH_HZ = 4.0
PUBLISH_S = 10.0
MARK = b'"pub_ns":'


@dataclass
class Samples:
    """Latencies (ns) and per-client receipt counts of one run."""

    latencies_ns: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)


class SseClient(asyncio.Protocol):
    """A minimal SSE client: sends the GET, finds ``"pub_ns":<n>`` in what arrives, records now − n.

    Kept as cheap as possible (it shares the CPU with the server): receipt time first, then a ``find`` over
    the chunk as it arrived (no concatenation of whole chunks); only the last few bytes of the previous chunk
    are kept, to catch a mark split across two reads. ``"pub_ns"`` is the view's second field, so it sits
    right after the event's ``id:``/``event:`` lines: receipt is timed when the event's head arrives.
    """

    def __init__(self, request: bytes, samples: Samples, index: int, since_ns: list[int]):
        self.request = request
        self.samples = samples
        self.index = index
        self.since_ns = since_ns
        self.tail = b""
        self.last = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if self.tail:  # a mark (or its number) split across the previous read and this one
            self._scan(self.tail + data[:_SPAN], now)
        self._scan(data, now)
        self.tail = data[-_SPAN:]

    def _scan(self, buf: bytes, now: int) -> None:
        at = buf.find(MARK)
        while at >= 0:
            start = at + len(MARK)
            end = buf.find(b",", start, start + 24)
            if end < 0:
                return
            pub = int(buf[start:end])
            if pub > self.last:
                self.last = pub
                if not self.ready.done():
                    self.ready.set_result(None)
                if pub >= self.since_ns[0]:
                    self.samples.latencies_ns.append(now - pub)
                    self.samples.received[self.index] += 1
            at = buf.find(MARK, end)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the first event"))


_SPAN = len(MARK) + 24


#: ``python -m web --workers 2``: two server processes on the port (SO_REUSEPORT), one subscription each —
#: the deployment docs/operations.md recommends for thousands of clients on a 2-core machine.
WEB_WORKERS = 2


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process or by ``pid``."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")  # the web workers of ``python -m web --workers N``
    kids = children.read_text().split() if children.exists() else []
    return own + sum(_cpu_s(int(kid)) for kid in kids)


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@contextlib.contextmanager
def _server(args: list[str], redis_url: str, port: int) -> Any:
    env = {**os.environ, "REDIS_URL": redis_url, "MMAKER_UNDERLYINGS": "SPY", "MMAKER_SSE_PING_S": "15"}
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"server {args} did not start")
        time.sleep(0.5)
        yield proc
    finally:
        stop_process(proc)


async def _publish(r: aioredis.Redis, body: bytes, version: int) -> None:
    """INCR + SET + PUBLISH like the publish script (the version is spliced in first, pub_ns second)."""
    pub_ns = time.time_ns()
    raw = b'{"version":%d,"pub_ns":%d,' % (version, pub_ns) + body[1:]
    pipe = r.pipeline(transaction=True)
    pipe.incr(keys.model_version("gex", "SPY"))
    pipe.set(keys.model_view("gex", "SPY"), raw)
    pipe.publish(keys.MODELS_CHANNEL, b'{"model":"gex","underlying":"SPY","version":%d}' % version)
    await pipe.execute()


async def _measure(
    port: int, redis_url: str, clients: int, body: bytes, pids: dict[str, int]
) -> tuple[Samples, float, dict[str, float]]:
    """Connect ``clients`` SSE clients, publish for PUBLISH_S at PUBLISH_HZ.

    Returns the samples, the connect time and the CPU share (of one core) of this process (the clients and
    the publisher) and of every process in ``pids`` over the publishing window.
    """
    r = aioredis.from_url(redis_url)
    version = int(await r.get(keys.model_version("gex", "SPY")) or 0)
    version += 1
    await _publish(r, body, version)  # a current view, so every client gets one on connect
    loop = asyncio.get_running_loop()
    samples = Samples(received=[0] * clients)
    since = [time.time_ns() + 10**12]  # nothing counts until the measurement starts
    request = b"GET /stream/gex/SPY HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    protocols: list[SseClient] = []
    t0 = time.perf_counter()
    for start in range(0, clients, 250):
        batch = range(start, min(clients, start + 250))
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda i=i: SseClient(request, samples, i, since), "127.0.0.1", port)
                for i in batch
            )
        )
        protocols.extend(p for _, p in made)
    await asyncio.wait_for(asyncio.gather(*(p.ready for p in protocols)), 120)
    connect_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    since[0] = time.time_ns()
    cpu0 = {"clients": _cpu_s(), **{name: _cpu_s(pid) for name, pid in pids.items()}}
    wall0 = time.perf_counter()
    period = 1.0 / PUBLISH_HZ
    next_at = loop.time()
    for _ in range(int(PUBLISH_S * PUBLISH_HZ)):
        version += 1
        await _publish(r, body, version)
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    wall = time.perf_counter() - wall0
    cpu = {"clients": _cpu_s() - cpu0["clients"]} | {name: _cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
    shares = {name: used / wall for name, used in cpu.items()}
    await asyncio.sleep(2.0)
    for p in protocols:
        if p.transport is not None:
            p.transport.close()
    await r.aclose()
    await asyncio.sleep(0.5)
    return samples, connect_s, shares


def _run_clients(
    port: int, redis_url: str, clients: int, body: bytes, pids: dict[str, int]
) -> tuple[Samples, float, dict[str, float]]:
    try:
        import uvloop

        return uvloop.run(_measure(port, redis_url, clients, body, pids))
    except ImportError:
        return asyncio.run(_measure(port, redis_url, clients, body, pids))


def _stats(samples: Samples, clients: int) -> dict[str, float]:
    lat = np.asarray(samples.latencies_ns, dtype=np.float64) / 1e6
    expected = clients * int(PUBLISH_S * PUBLISH_HZ)
    return {
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "max": float(lat.max()) if lat.size else float("nan"),
        "delivered": len(samples.latencies_ns) / expected if expected else 0.0,
    }


def measure(clients: int, *, naive: bool, redis_url: str, body: bytes, redis_pid: int) -> dict[str, float]:
    """One run: start the server (mmaker or the naive baseline), measure with ``clients`` clients."""
    port = free_port()
    if naive:
        args = ["-m", "uvicorn", "bench.sse_fanout:naive_app", "--factory", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--log-level", "warning", "--no-access-log", "--backlog", "4096"]
    else:
        args = ["-m", "web", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        args += ["--workers", str(WEB_WORKERS)]
    with _server(args, redis_url, port) as proc:
        samples, connect_s, cpu = _run_clients(port, redis_url, clients, body, {"server": proc.pid, "redis": redis_pid})
    out = _stats(samples, clients)
    out["connect_s"] = connect_s
    out.update({f"cpu_{name}": share for name, share in cpu.items()})
    return out


def naive_app() -> Any:
    """The baseline: sse-starlette where every client subscribes to pub/sub and GETs the view itself."""
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    r = aioredis.from_url(os.environ["REDIS_URL"], max_connections=20_000)

    async def stream(request: Request) -> EventSourceResponse:
        model, underlying = request.path_params["model"], request.path_params["underlying"]
        view_key = keys.model_view(model, underlying)

        async def events() -> AsyncIterator[dict[str, str]]:
            pubsub = r.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(keys.MODELS_CHANNEL)
            try:
                raw = await r.get(view_key)
                if raw is not None:
                    yield {"event": "model", "id": str(orjson.loads(raw)["version"]), "data": raw.decode()}
                async for message in pubsub.listen():
                    note = orjson.loads(message["data"])
                    if note["model"] != model or note["underlying"] != underlying:
                        continue
                    raw = await r.get(view_key)
                    yield {"event": "model", "id": str(orjson.loads(raw)["version"]), "data": raw.decode()}
            finally:
                await pubsub.aclose()

        return EventSourceResponse(events(), ping=15)

    return Starlette(routes=[Route("/stream/{model}/{underlying}", stream)])


def _fmt(s: dict[str, float]) -> str:
    return (
        f"p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, max {s['max']:.0f} ms, "
        f"delivered {100 * s['delivered']:.1f}%, connect {s['connect_s']:.1f} s, CPU (of one core) server "
        f"{100 * s['cpu_server']:.0f}% / clients+publisher {100 * s['cpu_clients']:.0f}% / redis "
        f"{100 * s['cpu_redis']:.0f}%"
    )


def run() -> list[Result]:
    """Measure mmaker at 1,000 and 5,000 clients and the naive baseline at 1,000 clients."""
    _raise_nofile(20_000)
    view = gex_view("SPY", spot=512.3)
    body = orjson.dumps(view)  # ~12 kB, a realistic GEX view
    server = RedisServer(args=("--maxclients", "12000")).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        client.close()
        pid = server.proc.pid
        mm_1k = measure(1_000, naive=False, redis_url=server.url, body=body, redis_pid=pid)
        mm_5k = measure(5_000, naive=False, redis_url=server.url, body=body, redis_pid=pid)
        naive_1k = measure(1_000, naive=True, redis_url=server.url, body=body, redis_pid=pid)
    finally:
        server.stop()
    detail = (
        f"python -m web --workers {WEB_WORKERS}; view {len(body) / 1000:.1f} kB at {PUBLISH_HZ:g}/s "
        f"for {PUBLISH_S:g} s. "
        f"mmaker 5,000 clients: {_fmt(mm_5k)}. mmaker 1,000 clients: {_fmt(mm_1k)}. "
        f"baseline (pub/sub subscription + GET per client) 1,000 clients: {_fmt(naive_1k)}; ratio = baseline p99 "
        f"at 1,000 clients / mmaker p99 at 5,000."
    )
    return [
        Result.compare(
            "sse_fanout_p99_5000_clients",
            mm_5k["p99"],
            "ms",
            naive_1k["p99"],
            higher_is_better=False,
            target="≤ 100 ms",
            command=COMMAND,
            detail=detail,
        )
    ]


if __name__ == "__main__":
    for result in run():
        print(result)
