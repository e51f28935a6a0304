"""AWS event-stream frames (``application/vnd.amazon.eventstream``), as InvokeEndpointWithResponseStream sends.

A frame: a 12-byte prelude (total length u32, headers length u32, CRC32 of those 8 bytes), the headers
(name length u8, name, value type u8 = 7 for a string, value length u16, value), the payload and the
CRC32 of everything before it. botocore's ``EventStreamBuffer`` is the decoder (tests use it); this is
the encoder, which botocore does not ship. The instance writes whole frames; the router forwards them
frame by frame (``FrameSplitter``) and adds its own exception frame when the instance goes away.
"""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
PRELUDE = struct.Struct(">II")
_STRING = 7
MAX_FRAME = 16 * 1024 * 1024  # AWS's frame limit


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        out += struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def frame(headers: dict[str, str] | bytes, payload: bytes) -> bytes:
    encoded = headers if isinstance(headers, bytes) else _headers(headers)
    total = PRELUDE.size + 4 + len(encoded) + len(payload) + 4
    prelude = PRELUDE.pack(total, len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + payload + struct.pack(">I", crc)


_PAYLOAD_PART_HEADERS = _headers(
    {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}
)


def payload_part(chunk: bytes) -> bytes:
    """One ``PayloadPart`` event carrying ``chunk`` (``Bytes`` of the event, raw)."""
    return frame(_PAYLOAD_PART_HEADERS, chunk)


def model_stream_error(message: str, error_code: str = "StreamBroken") -> bytes:
    """The ``ModelStreamError`` exception (``ErrorCode`` ``StreamBroken`` or ``ModelInvocationTimeExceeded``)."""
    return _exception("ModelStreamError", {"Message": message, "ErrorCode": error_code})


def internal_stream_failure(message: str) -> bytes:
    return _exception("InternalStreamFailure", {"Message": message})


def _exception(kind: str, body: dict[str, str]) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, json.dumps(body).encode("utf-8"))


class FrameError(Exception):
    """The bytes are not event-stream frames."""


class FrameSplitter:
    """Bytes as they arrive -> whole frames (a frame is never forwarded in pieces)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buffer
        if not buf and len(data) >= PRELUDE.size:
            total = PRELUDE.unpack_from(data)[0]
            if total == len(data):  # the common case: one chunk, one frame; no copy
                return [data]
        buf += data
        frames: list[bytes] = []
        while len(buf) >= PRELUDE.size:
            total = PRELUDE.unpack_from(buf)[0]
            if not 16 <= total <= MAX_FRAME:
                raise FrameError(f"bad event-stream frame length {total}")
            if len(buf) < total:
                break
            frames.append(bytes(buf[:total]))
            del buf[:total]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame."""
        return len(self._buffer)
