"""Pure SSE encoding of published views.

A view is encoded ONCE per publication into the exact bytes every client receives (``id``, ``event``,
``data`` lines), so fanning out to thousands of clients costs one socket write each and no per-client
JSON or string work. :func:`http_chunk` frames those bytes once more as one HTTP/1.1 chunk, so the hub's
direct write path (:mod:`web.hub`) hands the very same ``bytes`` object to every client's transport.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

EVENT_NAME = "model"
_LINES = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ViewFrame:
    """One published view: its identity, the stored JSON bytes and the encoded SSE event."""

    model: str
    underlying: str
    version: int
    as_of_ms: int | None
    raw: bytes
    event: bytes
    #: ``event`` as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``)
    chunk: bytes = b""


def encode_event(data: bytes, *, event: str, event_id: str, sep: bytes = b"\r\n") -> bytes:
    """One SSE event: ``id``, ``event`` and one ``data:`` line per line of ``data``, then a blank line."""
    out = [b"id: " + event_id.encode(), b"event: " + event.encode()]
    out.extend(b"data: " + line for line in _LINES.split(data))
    return sep.join(out) + sep + sep


def http_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk: hex length, CRLF, the bytes, CRLF."""
    return b"%x\r\n%b\r\n" % (len(data), data)


#: the chunk that ends a chunked response
LAST_CHUNK = b"0\r\n\r\n"
#: an SSE comment (keepalive), and the same as one chunk
PING_EVENT = b": ping\r\n\r\n"
PING_CHUNK = http_chunk(PING_EVENT)


def frame_from_view(model: str, underlying: str, raw: bytes) -> ViewFrame:
    """Parse a stored view (JSON bytes) into a :class:`ViewFrame`; its ``version`` field becomes the SSE id.

    Raises ``ValueError`` when the bytes are not a JSON object with an integer ``version``.
    """
    view = orjson.loads(raw)
    if not isinstance(view, dict) or not isinstance(view.get("version"), int):
        raise ValueError(f"{model}:{underlying} view has no integer version")
    version = view["version"]
    as_of = view.get("as_of_ms")
    event = encode_event(raw, event=EVENT_NAME, event_id=str(version))
    return ViewFrame(
        model=model,
        underlying=underlying,
        version=version,
        as_of_ms=as_of if isinstance(as_of, int) else None,
        raw=raw,
        event=event,
        chunk=http_chunk(event),
    )


def parse_last_event_id(value: str | None) -> int | None:
    """The integer version in a ``Last-Event-ID`` header, or None when absent or not an integer."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
