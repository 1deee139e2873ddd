"""JSON encoding of stream events into frames: one text frame carries a JSON array of many events."""

from __future__ import annotations

import numpy as np
import orjson

from sim.chain import EventBatch

T_FMT = '{"ev":"T","sym":"%s","x":%d,"p":%.2f,"s":%d,"c":[%d],"t":%d,"q":%d}'
Q_FMT = '{"ev":"Q","sym":"%s","bx":%d,"ax":%d,"bp":%.2f,"ap":%.2f,"bs":%d,"as":%d,"t":%d,"q":%d}'
MAX_EVENTS_PER_FRAME = 2000


def encode_events(batch: EventBatch, sel: np.ndarray) -> np.ndarray:
    """Encode the events at positions ``sel`` of ``batch``; returns an object array of ``bytes``."""
    out = np.empty(len(sel), dtype=object)
    if len(sel) == 0:
        return out
    kind = batch.kind[sel]
    sym = batch.tickers[batch.idx[sel]]
    t_ms, q = batch.t_ms[sel], batch.q[sel]
    tr = np.flatnonzero(kind == 0)
    if len(tr):
        s = sel[tr]
        out[tr] = [
            (T_FMT % row).encode()
            for row in zip(
                sym[tr].tolist(),
                batch.exch[s].tolist(),
                batch.price[s].tolist(),
                batch.size[s].tolist(),
                batch.cond[s].tolist(),
                t_ms[tr].tolist(),
                q[tr].tolist(),
                strict=True,
            )
        ]
    qu = np.flatnonzero(kind == 1)
    if len(qu):
        s = sel[qu]
        out[qu] = [
            (Q_FMT % row).encode()
            for row in zip(
                sym[qu].tolist(),
                batch.bx[s].tolist(),
                batch.ax[s].tolist(),
                batch.bid[s].tolist(),
                batch.ask[s].tolist(),
                batch.bid_size[s].tolist(),
                batch.ask_size[s].tolist(),
                t_ms[qu].tolist(),
                q[qu].tolist(),
                strict=True,
            )
        ]
    return out


def frames(pieces: list[bytes], max_events: int = MAX_EVENTS_PER_FRAME) -> list[tuple[bytes, int]]:
    """Join encoded events into JSON-array frames of at most ``max_events`` events; ``(frame, n)`` pairs."""
    return [
        (b"[" + b",".join(pieces[i : i + max_events]) + b"]", len(pieces[i : i + max_events]))
        for i in range(0, len(pieces), max_events)
    ]


def status(status_: str, message: str) -> bytes:
    """A one-event status frame, e.g. ``[{"ev":"status","status":"success","message":"..."}]``."""
    return orjson.dumps([{"ev": "status", "status": status_, "message": message}])


def dicts(events: list[dict]) -> bytes:
    """Encode a list of event dicts as one frame."""
    return orjson.dumps(events)
