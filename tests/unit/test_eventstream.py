"""The event-stream encoder against botocore's decoder, and the router's frame splitter."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import EventStreamBuffer

from modelhost.serving import eventstream


def decode(raw: bytes) -> list:  # type: ignore[type-arg]
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return list(buf)


def test_frames_decode_with_botocore() -> None:
    raw = (
        eventstream.payload_part(b'{"a": 1}\n')
        + eventstream.payload_part(b"")
        + eventstream.payload_part(b"\x00" * 70000)
    )
    raw += eventstream.model_stream_error("it broke", "ModelInvocationTimeExceeded")
    raw += eventstream.internal_stream_failure("gone")
    frames = decode(raw)  # botocore checks both CRCs and the lengths
    assert [f.payload for f in frames[:3]] == [b'{"a": 1}\n', b"", b"\x00" * 70000]
    assert frames[0].headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert frames[3].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(frames[3].payload) == {"Message": "it broke", "ErrorCode": "ModelInvocationTimeExceeded"}
    assert frames[4].headers[":exception-type"] == "InternalStreamFailure"


def test_splitter_returns_whole_frames_however_the_bytes_arrive() -> None:
    frames = [eventstream.payload_part(bytes([i]) * (i * 37)) for i in range(1, 6)]
    raw = b"".join(frames)
    for step in (1, 7, 64, len(raw)):
        splitter = eventstream.FrameSplitter()
        out: list[bytes] = []
        for i in range(0, len(raw), step):
            out += splitter.feed(raw[i : i + step])
        assert out == frames and splitter.pending == 0
    splitter = eventstream.FrameSplitter()
    assert splitter.feed(frames[0][:-3]) == [] and splitter.pending == len(frames[0]) - 3
    with pytest.raises(eventstream.FrameError):
        eventstream.FrameSplitter().feed(b"\x00\x00\x00\x05" + b"\x00" * 12)
