"""Pack framed records into request bodies.

``MultiRecord``: as many whole records as fit in ``MaxPayloadInMB`` (records of one object only);
``SingleRecord``: one record per request, framing stripped (a ``Line`` record is sent without its
newline, a RecordIO/TFRecord record without header and padding). ``SplitType None``: the whole
object is one request. A record larger than the limit raises :class:`RecordTooLarge`, which fails
its object. ``limit`` None means no limit (``MaxPayloadInMB`` 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelhost.jobs.filters import DataProcessing
from modelhost.jobs.splitters import RecordTooLarge, payload

MB = 1024 * 1024


@dataclass
class Batch:
    body: bytes
    count: int  # records in this request
    first: int  # index of its first record in the object
    raw: int = 0  # bytes of the object these records took (before InputFilter)
    originals: list[Any] = field(default_factory=list)  # parsed input records (JoinSource=Input only)


def batches(
    records: Iterable[bytes],
    strategy: str,
    split_type: str,
    limit: int | None,
    processing: DataProcessing | None = None,
) -> Iterator[Batch]:
    keep = processing is not None and processing.join
    transform = processing is not None and (processing.filters_input or processing.join)
    index = 0
    if strategy == "SingleRecord" or split_type in ("None", "", None):
        for framed in records:
            raw = len(framed)
            original = None
            if transform:
                assert processing is not None
                framed, original = processing.input_record(framed)
            body = framed if split_type in ("None", "", None) else payload(framed, split_type)
            if limit is not None and len(body) > limit:
                raise RecordTooLarge(index, len(body), limit)
            yield Batch(body, 1, index, raw, [original] if keep else [])
            index += 1
        return
    parts: list[bytes] = []
    originals: list[Any] = []
    size = raw = 0
    first = 0
    for framed in records:
        raw_len = len(framed)
        original = None
        if transform:
            assert processing is not None
            framed, original = processing.input_record(framed)
        n = len(framed)
        if limit is not None and n > limit:
            raise RecordTooLarge(index, n, limit)
        if parts and limit is not None and size + n > limit:
            yield Batch(b"".join(parts), len(parts), first, raw, originals)
            parts, originals, size, first, raw = [], [], 0, index, 0
        parts.append(framed)
        if keep:
            originals.append(original)
        size += n
        raw += raw_len
        index += 1
    if parts:
        yield Batch(b"".join(parts), len(parts), first, raw, originals)
