"""The pure SSE encoder."""

from __future__ import annotations

import pytest

from web.events import encode_event, frame_from_view, parse_last_event_id


def test_encode_event_one_data_line_per_line() -> None:
    assert encode_event(b'{"a":1}', event="model", event_id="7") == b'id: 7\r\nevent: model\r\ndata: {"a":1}\r\n\r\n'
    assert (
        encode_event(b"x\ny\r\nz", event="e", event_id="1", sep=b"\n")
        == b"id: 1\nevent: e\ndata: x\ndata: y\ndata: z\n\n"
    )


def test_frame_from_view_keeps_the_exact_bytes_and_takes_the_version() -> None:
    raw = b'{"version":42,"model":"gex","as_of_ms":1700000000000,"spot":500.5}'
    frame = frame_from_view("gex", "SPY", raw)
    assert (frame.version, frame.as_of_ms, frame.raw) == (42, 1700000000000, raw)
    assert frame.event.startswith(b"id: 42\r\nevent: model\r\ndata: " + raw)


@pytest.mark.parametrize("raw", [b"[]", b'{"model":"gex"}', b'{"version":"3"}'])
def test_frame_from_view_refuses_views_without_an_integer_version(raw: bytes) -> None:
    with pytest.raises(ValueError):
        frame_from_view("gex", "SPY", raw)


def test_parse_last_event_id() -> None:
    assert parse_last_event_id(None) is None
    assert parse_last_event_id(" 12 ") == 12
    assert parse_last_event_id("abc") is None
