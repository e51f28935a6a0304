"""Split an input object (a binary stream) into records by ``SplitType``, never reading it whole.

Every splitter yields *framed* records: the bytes as they sit in the object, ready to be
concatenated into a ``MultiRecord`` request (``Line``: the line plus ``\\n``; ``RecordIO``: header,
data and padding; ``TFRecord``: length, its CRC, data and its CRC). :func:`payload` strips the
framing for ``SingleRecord`` requests and for the JSONPath filters.

MXNet RecordIO: ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (upper 3 bits: continuation flag,
lower 29 bits: length), data, zero padding to 4 bytes. A record whose data contains the magic is
written in parts (flag 1 = first, 2 = middle, 3 = last); the parts form one record here, and
:func:`payload` joins their data with the magic between them as MXNet's reader does.

TFRecord: ``uint64 length``, ``uint32 masked crc32c(length)``, data, ``uint32 masked crc32c(data)``
(little endian). CRCs are not verified.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
READ_CHUNK = 1024 * 1024


class SplitError(Exception):
    """The object cannot be split (bad framing, or a record over the payload limit)."""


class RecordTooLarge(SplitError):
    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(
            f"record {index + 1} is {size} bytes, larger than MaxPayloadInMB ({limit // (1024 * 1024)} MB)"
        )
        self.index = index
        self.size = size
        self.limit = limit


def split(stream: IO[bytes], split_type: str, max_record: int | None) -> Iterator[bytes]:
    """Framed records of ``stream``; a record over ``max_record`` bytes raises :class:`RecordTooLarge`."""
    if split_type == "Line":
        return split_lines(stream, max_record)
    if split_type == "RecordIO":
        return split_recordio(stream, max_record)
    if split_type == "TFRecord":
        return split_tfrecord(stream, max_record)
    if split_type in ("None", "", None):
        return split_none(stream, max_record)
    raise SplitError(f"unknown SplitType {split_type}")


def split_none(stream: IO[bytes], max_record: int | None) -> Iterator[bytes]:
    """The whole object as one record (it must fit the payload limit)."""
    limit = max_record if max_record is not None else -1
    data = stream.read(limit + 1 if limit >= 0 else -1)
    if max_record is not None and len(data) > max_record:
        size = len(data) + _drain(stream)
        raise RecordTooLarge(0, size, max_record)
    if data:
        yield data


def _drain(stream: IO[bytes]) -> int:
    n = 0
    while chunk := stream.read(READ_CHUNK):
        n += len(chunk)
    return n


def split_lines(stream: IO[bytes], max_record: int | None) -> Iterator[bytes]:
    """Lines with their terminator normalised to ``\\n``; empty lines are skipped."""
    index = 0
    limit = max_record if max_record is not None else -1
    readline = stream.readline
    while True:
        line = readline(limit + 1) if limit >= 0 else readline()
        if not line:
            return
        if max_record is not None and len(line) > max_record:
            size = len(line)
            while not line.endswith(b"\n"):
                line = readline(READ_CHUNK)
                if not line:
                    break
                size += len(line)
            raise RecordTooLarge(index, size, max_record)
        if line.endswith(b"\r\n"):
            line = line[:-2] + b"\n"
        elif not line.endswith(b"\n"):
            line += b"\n"
        if line == b"\n":
            continue
        index += 1
        yield line


def _read_exact(stream: IO[bytes], n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise SplitError(f"truncated {what}: expected {n} bytes, got {len(data)}")
    return data


def split_recordio(stream: IO[bytes], max_record: int | None) -> Iterator[bytes]:
    index = 0
    parts: list[bytes] = []
    size = 0
    while True:
        head = stream.read(8)
        if not head:
            if parts:
                raise SplitError("truncated RecordIO: a multi-part record has no last part")
            return
        if len(head) != 8:
            raise SplitError(f"truncated RecordIO header at record {index + 1}")
        magic, lrecord = struct.unpack("<II", head)
        if magic != RECORDIO_MAGIC:
            raise SplitError(f"bad RecordIO magic {magic:#010x} at record {index + 1}")
        cflag, length = lrecord >> 29, lrecord & ((1 << 29) - 1)
        padded = (length + 3) & ~3
        size += 8 + padded
        if max_record is not None and size > max_record:
            raise RecordTooLarge(index, size, max_record)
        body = _read_exact(stream, padded, "RecordIO record")
        parts.append(head + body)
        if cflag in (0, 3):
            if cflag == 3 and len(parts) < 2:
                raise SplitError(f"RecordIO record {index + 1}: a last part without a first part")
            yield b"".join(parts)
            parts, size = [], 0
            index += 1
        elif cflag == 1 and len(parts) > 1:
            raise SplitError(f"RecordIO record {index + 1}: a first part inside a multi-part record")


def split_tfrecord(stream: IO[bytes], max_record: int | None) -> Iterator[bytes]:
    index = 0
    while True:
        head = stream.read(12)
        if not head:
            return
        if len(head) != 12:
            raise SplitError(f"truncated TFRecord header at record {index + 1}")
        (length,) = struct.unpack("<Q", head[:8])
        size = 12 + length + 4
        if max_record is not None and size > max_record:
            raise RecordTooLarge(index, size, max_record)
        rest = _read_exact(stream, length + 4, "TFRecord record")
        index += 1
        yield head + rest


def payload(framed: bytes, split_type: str) -> bytes:
    """The record's data without its framing."""
    if split_type == "Line":
        return framed[:-1] if framed.endswith(b"\n") else framed
    if split_type == "TFRecord":
        return framed[12:-4]
    if split_type == "RecordIO":
        out: list[bytes] = []
        pos = 0
        while pos < len(framed):
            _magic, lrecord = struct.unpack_from("<II", framed, pos)
            length = lrecord & ((1 << 29) - 1)
            out.append(framed[pos + 8 : pos + 8 + length])
            pos += 8 + ((length + 3) & ~3)
        return _MAGIC_BYTES.join(out)
    return framed


def recordio_frame(data: bytes) -> bytes:
    """One RecordIO record (single part) around ``data``; used by tests and tools."""
    pad = (-len(data)) % 4
    return struct.pack("<II", RECORDIO_MAGIC, len(data)) + data + b"\0" * pad


def tfrecord_frame(data: bytes) -> bytes:
    """One TFRecord record around ``data`` with real masked CRC32C checksums."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


_CRC32C_TABLE: list[int] = []


def _crc32c(data: bytes) -> int:
    if not _CRC32C_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC32C_TABLE.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
