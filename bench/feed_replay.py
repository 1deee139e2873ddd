"""A minimal Massive-protocol WebSocket server that replays pre-encoded option frames from memory.

The simulator generates its market live, which costs a whole core at high rates; a benchmark of the
*client* needs a frame source that costs next to nothing. This module has two halves:

- :func:`generate` writes a replay file beforehand: ``N`` Massive ``T`` / ``Q`` option events (≈ 80 %
  quotes) for a list of tickers, in frames (JSON arrays) of ``frame_events`` events, one frame per line.
  Trades are for any ticker; quotes only for ``quote_tickers`` when given — the contracts the client
  subscribes quotes to, as Massive (at most 1,000 quoted contracts per connection) and our simulator send
  quotes only for subscribed contracts.
  Quotes follow a per-contract random walk around a seed price, with realistic one-cent-wide-or-wider
  spreads; trades print at, inside or outside the spread of the contract's current quote. ``q`` is the
  global event index (+ ``q_start``), so it increases per symbol across the WHOLE file — nothing is a
  duplicate — and ``t`` = ``t_base_ms`` + the index ÷ ``events_per_ms`` (by default ten minutes before the
  file is written, 100 events a millisecond: within the event-time window ingest accepts around the time of
  receipt, as a live feed's times are).
- ``python -m bench.feed_replay --port P --frames FILE --rate EVENTS_PER_S|max`` serves it. Every
  connection gets Massive's handshake (``connected``, any ``auth`` → ``auth_success``, every
  ``subscribe`` / ``unsubscribe`` → ``success``). After the first ``subscribe`` an ``/options`` connection
  is streamed the whole file once (subscriptions are not filtered: the file is the subscribed universe; after
  every change of a connection's quote topics the server prints ``replay quote subscriptions N, quoted
  tickers of the file not subscribed K`` for that connection, so a benchmark using one options connection
  can check that the file carries no quote the client did not ask for);
  ``/stocks`` and ``/indices`` get the handshake and no data. ``--rate max`` sends as fast as the client
  reads (``send`` waits on the socket's flow control); a fixed rate paces frames on an absolute schedule.
  Frames go out as text, byte for byte as written, with no compression and nothing stamped on them.

The server prints ``replay listening on ws://host:port (N frames, M events)`` when ready and
``replay done <path> frames=… events=… seconds=…`` each time a stream has been sent completely.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@dataclass
class ReplayFile:
    """What :func:`generate` wrote: counts, and per ticker the trades and the last quote sequence."""

    path: Path
    events: int = 0
    quotes: int = 0
    trades: int = 0
    frames: int = 0
    q_first: int = 0
    q_last: int = 0
    t_last_ms: int = 0  # the last event's time
    trades_by_ticker: dict[str, int] = field(default_factory=dict)
    last_quote_q: dict[str, int] = field(default_factory=dict)
    trade_placement: dict[str, int] = field(default_factory=dict)
    quoted: int = 0  # distinct tickers with quotes in the file


def _tick(price: float) -> float:
    """Option price increment: a cent under $3, five cents above (the classic penny-pilot rule)."""
    return 0.01 if price < 3.0 else 0.05


def generate(
    path: str | Path,
    tickers: Sequence[str],
    events: int,
    *,
    prices: Mapping[str, float] | None = None,
    quote_share: float = 0.8,
    frame_events: tuple[int, int] = (1_000, 2_000),
    q_start: int = 1,
    t_base_ms: int | None = None,
    events_per_ms: int = 100,
    skew: float = 0.5,
    seed: int = 7,
    quote_tickers: Sequence[str] | None = None,
) -> ReplayFile:
    """Write ``events`` option events for ``tickers`` to ``path`` (one JSON-array frame per line).

    ``prices`` (ticker → mid price, e.g. the chain snapshot's quotes) seeds each contract's random walk;
    tickers without one start at a log-uniform price between $0.05 and $50. Activity is skewed: the
    ``i``-th ticker of a seeded shuffle is picked with weight ``(i + 10) ** -skew`` (0 = uniform).
    Trades print 35 % at the ask, 35 % at the bid, 20 % strictly inside (the midpoint included) and 10 %
    a tick outside the spread. ``quote_tickers`` (a subset of ``tickers``): quotes only for those, picked with
    the same weights renormalised over them (trades keep every ticker); None: quotes for every ticker.
    """
    if not tickers:
        raise ValueError("no tickers to generate events for")
    if t_base_ms is None:
        t_base_ms = time.time_ns() // 1_000_000 - 600_000
    rng = np.random.default_rng(seed)
    n_sym = len(tickers)
    order = rng.permutation(n_sym)
    weights = np.empty(n_sym)
    weights[order] = (np.arange(n_sym) + 10.0) ** -skew
    weights /= weights.sum()
    sym_idx = rng.choice(n_sym, size=events, p=weights)
    is_quote = rng.random(events) < quote_share
    walk = rng.normal(0.0, 0.004, size=events)
    u_size = rng.integers(1, 500, size=(events, 2))
    trade_size = np.minimum(rng.geometric(0.15, size=events), 2_000)
    placement = rng.random(events)
    inside = rng.random(events)
    lo, hi = frame_events
    frame_sizes = rng.integers(lo, hi + 1, size=events // max(1, lo) + 2)
    if quote_tickers is not None:  # drawn last, so the draws above are those of a file without the option
        index = {t: i for i, t in enumerate(tickers)}
        try:
            quoted = np.array(sorted({index[t] for t in quote_tickers}), dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"quote ticker {exc.args[0]} is not one of the tickers") from None
        if not len(quoted):
            raise ValueError("quote_tickers is empty")
        pick = rng.choice(len(quoted), size=events, p=weights[quoted] / weights[quoted].sum())
        sym_idx = np.where(is_quote, quoted[pick], sym_idx)

    seeds = prices or {}
    mids: list[float] = []
    for i, ticker in enumerate(tickers):
        mid = seeds.get(ticker)
        if mid is None or not math.isfinite(mid) or mid <= 0:
            mid = math.exp(math.log(0.05) + (math.log(50.0) - math.log(0.05)) * ((i * 0.6180339887) % 1.0))
        mids.append(max(0.05, float(mid)))
    spreads = [max(1, round(m * 0.02 / _tick(m))) for m in mids]  # ≈ 2 % wide, in ticks
    book: list[tuple[float, float] | None] = [None] * n_sym

    out = ReplayFile(Path(path), q_first=q_start)
    placements = {"at_ask": 0, "at_bid": 0, "inside": 0, "outside": 0}
    last_quote_q: dict[str, int] = {}
    trades_by: dict[str, int] = {}
    lines: list[bytes] = []
    frame: list[dict] = []
    frame_i = 0
    target = int(frame_sizes[0])
    sym_list = sym_idx.tolist()
    quote_list = is_quote.tolist()
    walk_list = walk.tolist()
    size_list = u_size.tolist()
    tsize_list = trade_size.tolist()
    place_list = placement.tolist()
    inside_list = inside.tolist()
    with open(path, "wb") as fh:
        for n in range(events):
            s = sym_list[n]
            ticker = tickers[s]
            q = q_start + n
            t = t_base_ms + n // events_per_ms
            out.t_last_ms = t
            quote = book[s]
            if quote_list[n] or quote is None:
                mid = mids[s] = max(0.05, mids[s] * math.exp(walk_list[n]))
                tick = _tick(mid)
                half = spreads[s] * tick / 2
                bid = max(0.0, round(round((mid - half) / tick) * tick, 2))
                ask = round(bid + spreads[s] * tick, 2)
                book[s] = (bid, ask)
            if quote_list[n]:
                bs, asz = size_list[n]
                frame.append({"ev": "Q", "sym": ticker, "bx": 302, "ax": 302, "bp": bid, "ap": ask, "bs": bs,
                              "as": asz, "t": t, "q": q})  # fmt: skip
                last_quote_q[ticker] = q
                out.quotes += 1
            else:
                bid, ask = book[s]  # type: ignore[misc]
                tick = _tick(ask)
                u = place_list[n]
                if u < 0.35:
                    price, where = ask, "at_ask"
                elif u < 0.70:
                    price, where = bid, "at_bid"
                elif u < 0.90:
                    steps = round((ask - bid) / 0.01)
                    price = round(bid + 0.01 * max(1, min(steps - 1, round(inside_list[n] * steps))), 2)
                    where = "inside"
                else:
                    price = round(ask + tick, 2) if inside_list[n] < 0.5 else round(max(0.01, bid - tick), 2)
                    where = "outside"
                if price <= 0:
                    price, where = ask, "at_ask"
                placements[where] += 1
                frame.append({"ev": "T", "sym": ticker, "x": 65, "p": price, "s": tsize_list[n], "c": [233],
                              "t": t, "q": q})  # fmt: skip
                trades_by[ticker] = trades_by.get(ticker, 0) + 1
                out.trades += 1
            if len(frame) >= target:
                lines.append(orjson.dumps(frame))
                frame = []
                frame_i += 1
                target = int(frame_sizes[frame_i])
                if len(lines) >= 256:
                    fh.write(b"\n".join(lines) + b"\n")
                    out.frames += len(lines)
                    lines = []
        if frame:
            lines.append(orjson.dumps(frame))
        if lines:
            fh.write(b"\n".join(lines) + b"\n")
            out.frames += len(lines)
    out.events = events
    out.q_last = q_start + events - 1
    out.trades_by_ticker = trades_by
    out.last_quote_q = last_quote_q
    out.trade_placement = placements
    out.quoted = len(last_quote_q)
    return out


def load_frames(path: str | Path) -> tuple[list[bytes], list[int]]:
    """The frames of a replay file (raw bytes, as written) and the number of events in each."""
    frames, counts, _ = _load(path)
    return frames, counts


def _load(path: str | Path) -> tuple[list[bytes], list[int], frozenset[str]]:
    """:func:`load_frames` and the tickers the file has quotes for."""
    frames = [line for line in Path(path).read_bytes().split(b"\n") if line.strip()]
    counts: list[int] = []
    quoted: set[str] = set()
    for frame in frames:
        events = orjson.loads(frame)
        counts.append(len(events))
        quoted.update(e["sym"] for e in events if isinstance(e, dict) and e.get("ev") == "Q" and "sym" in e)
    return frames, counts, frozenset(quoted)


class ReplayServer:
    """Serves ``frames`` to every ``/options`` connection, at ``rate`` events/s (None = as fast as read)."""

    def __init__(self, frames: list[bytes], counts: list[int], rate: float | None, label: str = "",
                 quoted: frozenset[str] = frozenset()) -> None:  # fmt: skip
        self.frames = frames
        self.counts = counts
        self.rate = rate
        self.label = label
        self.quoted = quoted  # the tickers the file has quotes for

    async def handler(self, ws: ServerConnection) -> None:
        path = (ws.request.path if ws.request else "/").split("?", 1)[0].rstrip("/") or "/"
        feed = path.rsplit("/", 1)[-1]
        if feed not in ("options", "stocks", "indices"):
            await ws.close(1008, "unknown feed")
            return
        streamer: asyncio.Task | None = None
        quote_topics: set[str] = set()
        try:
            await ws.send(_status("connected", "Connected Successfully"))
            async for message in ws:
                try:
                    request = orjson.loads(message)
                except orjson.JSONDecodeError:
                    await ws.send(_status("error", "invalid JSON"))
                    continue
                action = request.get("action") if isinstance(request, dict) else None
                params = str(request.get("params", "")) if isinstance(request, dict) else ""
                if action == "auth":
                    await ws.send(_status("auth_success", "authenticated"))
                elif action in ("subscribe", "unsubscribe"):
                    verb = "subscribed to" if action == "subscribe" else "unsubscribed to"
                    head = params if len(params) <= 200 else params[:200] + "…"
                    await ws.send(_status("success", f"{verb}: {head}"))
                    changed = {t.strip()[2:] for t in params.split(",") if t.strip().startswith("Q.")}
                    if feed == "options" and changed:
                        quote_topics = quote_topics | changed if action == "subscribe" else quote_topics - changed
                        print(f"replay quote subscriptions {len(quote_topics)}, quoted tickers of the file not "
                              f"subscribed {len(self.quoted - quote_topics)}", flush=True)  # fmt: skip
                    if action == "subscribe" and feed == "options" and streamer is None:
                        streamer = asyncio.create_task(self._stream(ws))
                else:
                    await ws.send(_status("error", f"unknown action {action!r}"))
        except ConnectionClosed:
            pass
        finally:
            if streamer is not None:
                streamer.cancel()
                await asyncio.gather(streamer, return_exceptions=True)

    async def _stream(self, ws: ServerConnection) -> None:
        frames, counts, rate = self.frames, self.counts, self.rate
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent_events = 0
        try:
            for frame, count in zip(frames, counts, strict=True):
                if rate is not None:
                    due = start + sent_events / rate
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send(frame, text=True)
                sent_events += count
        except ConnectionClosed:
            return
        print(f"replay done {self.label} frames={len(frames)} events={sent_events} "
              f"seconds={loop.time() - start:.3f}", flush=True)  # fmt: skip


def _status(status: str, message: str) -> str:
    return orjson.dumps([{"ev": "status", "status": status, "message": message}]).decode()


async def serve_forever(host: str, port: int, frames_path: str, rate: float | None) -> None:
    """Load the file, listen, print the ready line and serve until cancelled."""
    frames, counts, quoted = _load(frames_path)
    server = ReplayServer(frames, counts, rate, label=frames_path, quoted=quoted)
    async with serve(server.handler, host, port, compression=None, max_size=2**20, ping_interval=None) as ws_server:
        sockets = ws_server.sockets
        bound = sockets[0].getsockname()[1] if sockets else port
        print(f"replay listening on ws://{host}:{bound} ({len(frames)} frames, {sum(counts)} events, "
              f"rate {'max' if rate is None else f'{rate:g}/s'})", flush=True)  # fmt: skip
        await asyncio.Future()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feed_replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", required=True, help="replay file written by generate()")
    parser.add_argument("--rate", default="max", help="events per second, or 'max'")
    args = parser.parse_args(argv)
    rate = None if args.rate == "max" else float(args.rate)
    if rate is not None and rate <= 0:
        parser.error("--rate must be positive or 'max'")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.host, args.port, args.frames, rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
