"""Splitting input objects by SplitType (streams, framing, gzip, limits) and packing batches."""

from __future__ import annotations

import gzip
import io
import struct

import pytest

from modelhost.jobs.batching import batches
from modelhost.jobs.inputs import InputObject, open_input
from modelhost.jobs.splitters import (
    RECORDIO_MAGIC,
    RecordTooLarge,
    SplitError,
    _crc32c,
    payload,
    recordio_frame,
    split,
    tfrecord_frame,
)
from modelhost.store.blobs_files import FileBlobs


def _split(data: bytes, split_type: str, limit: int | None = None) -> list[bytes]:
    return list(split(io.BufferedReader(io.BytesIO(data)), split_type, limit))  # type: ignore[arg-type]


def test_line_split_normalises_terminators_and_skips_blank_lines() -> None:
    assert _split(b"a,1\r\nb,2\n\nc,3", "Line") == [b"a,1\n", b"b,2\n", b"c,3\n"]
    assert [payload(r, "Line") for r in _split(b"x\ny\n", "Line")] == [b"x", b"y"]


def test_line_over_the_limit_is_refused_with_its_index() -> None:
    with pytest.raises(RecordTooLarge) as err:
        _split(b"ok\n" + b"x" * 50 + b"\nafter\n", "Line", limit=20)
    assert err.value.index == 1 and err.value.size == 51


def test_none_is_the_whole_object_within_the_limit() -> None:
    assert _split(b"a\nb\n", "None") == [b"a\nb\n"]
    with pytest.raises(RecordTooLarge) as err:
        _split(b"x" * 30, "None", limit=10)
    assert err.value.size == 30


def test_recordio_framing_padding_and_multipart_records() -> None:
    recs = [b"abc", b"hello!!!", b""]
    data = b"".join(recordio_frame(r) for r in recs)
    framed = _split(data, "RecordIO")
    assert framed == [recordio_frame(r) for r in recs]
    assert len(framed[0]) == 8 + 4  # 3 bytes padded to 4
    assert [payload(f, "RecordIO") for f in framed] == recs
    # a record whose data contained the magic, written in two parts (cflag 1 then 3)
    part1, part2 = b"left", b"right"
    multi = (
        struct.pack("<II", RECORDIO_MAGIC, (1 << 29) | len(part1))
        + part1
        + struct.pack("<II", RECORDIO_MAGIC, (3 << 29) | len(part2))
        + part2
        + b"\0\0\0"
    )
    (one,) = _split(multi, "RecordIO")
    assert payload(one, "RecordIO") == part1 + struct.pack("<I", RECORDIO_MAGIC) + part2
    with pytest.raises(SplitError, match="magic"):
        _split(b"\0" * 8, "RecordIO")
    with pytest.raises(SplitError, match="truncated"):
        _split(recordio_frame(b"abcdefgh")[:-3], "RecordIO")


def test_tfrecord_framing() -> None:
    recs = [b'{"a":1}', b"x" * 100]
    data = b"".join(tfrecord_frame(r) for r in recs)
    framed = _split(data, "TFRecord")
    assert [len(f) for f in framed] == [12 + 7 + 4, 12 + 100 + 4]
    assert [payload(f, "TFRecord") for f in framed] == recs
    # CRC32C (Castagnoli) check value, and TFRecord's mask: rotate right 15 bits, add 0xa282ead8
    assert _crc32c(b"123456789") == 0xE3069283
    crc = _crc32c(b"x" * 100)
    assert framed[1][-4:] == struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    with pytest.raises(RecordTooLarge):
        _split(data, "TFRecord", limit=50)


def test_multirecord_packs_whole_records_up_to_the_limit() -> None:
    records = [f"{i:04d}\n".encode() for i in range(10)]  # 5 bytes each
    out = list(batches(iter(records), "MultiRecord", "Line", 12))
    assert [b.count for b in out] == [2, 2, 2, 2, 2]
    assert out[0].body == b"0000\n0001\n" and out[1].first == 2
    assert b"".join(b.body for b in out) == b"".join(records)
    single = list(batches(iter(records[:3]), "SingleRecord", "Line", 12))
    assert [b.body for b in single] == [b"0000", b"0001", b"0002"]
    with pytest.raises(RecordTooLarge):
        list(batches(iter([b"a\n", b"x" * 20 + b"\n"]), "MultiRecord", "Line", 12))
    unlimited = list(batches(iter(records), "MultiRecord", "Line", None))
    assert len(unlimited) == 1 and unlimited[0].count == 10


def test_singlerecord_strips_recordio_framing() -> None:
    framed = [recordio_frame(b"abc"), recordio_frame(b"defgh")]
    assert [b.body for b in batches(iter(framed), "SingleRecord", "RecordIO", None)] == [b"abc", b"defgh"]
    (multi,) = batches(iter(framed), "MultiRecord", "RecordIO", None)
    assert multi.body == framed[0] + framed[1]


def test_gzip_input_is_streamed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "in.csv.gz"
    with gzip.open(path, "wb") as f:
        for i in range(10000):
            f.write(f"{i},{i * 2}\n".encode())
    obj = InputObject(str(path), "in.csv.gz", path.stat().st_size)
    with open_input(FileBlobs(), obj, "Gzip") as stream:
        lines = list(split(stream, "Line", 1024))
    assert len(lines) == 10000 and lines[-1] == b"9999,19998\n"
