"""One input object as request bodies: read through the blob store (decompressed), split by
``SplitType``, packed by ``BatchStrategy`` within ``MaxPayloadInMB``, ``InputFilter`` applied.
Every executor sends exactly these bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelhost.jobs.batching import Batch, batches
from modelhost.jobs.filters import DataProcessing
from modelhost.jobs.inputs import InputObject, open_input
from modelhost.jobs.params import ExecutionParameters
from modelhost.jobs.splitters import split
from modelhost.store.blobs import BlobStore


def object_batches(
    blobs: BlobStore,
    spec: dict[str, Any],
    obj: InputObject,
    params: ExecutionParameters,
    processing: DataProcessing | None,
) -> Iterator[Batch]:
    tin = spec["TransformInput"]
    split_type = tin.get("SplitType", "None")
    stream = open_input(blobs, obj, tin.get("CompressionType"))
    with stream:
        yield from batches(
            split(stream, split_type, params.limit), params.strategy, split_type, params.limit, processing
        )
