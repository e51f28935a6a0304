"""Data capture of asynchronous requests: after a request succeeds and before its output is committed,
its input (the inline body, its file or the InputLocation object) and its output (the temp file) are
offered to the data capture service, when the endpoint captures and this request is sampled.
Payloads over ``MAX_CAPTURED`` bytes are not captured (counted): a capture record holds its data inline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import Counter

from modelhost.hosting.asyncq.exchange import Success
from modelhost.hosting.asyncq.items import Item
from modelhost.hosting.capture import DataCapture
from modelhost.hosting.capture.record import Captured
from modelhost.hosting.metrics import REGISTRY
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore

MAX_CAPTURED = 6 * 1024 * 1024
TOO_LARGE = Counter(
    "modelhost_capture_skipped_large_records", "Async requests not captured: payload over 6 MiB", registry=REGISTRY
)


def _read_input(blobs: BlobStore, item: Item) -> bytes | None:
    if item.body is not None:
        return item.body
    spec = item.spec
    if spec.get("inline"):
        path = Path(spec["inline"])
        return path.read_bytes() if path.stat().st_size <= MAX_CAPTURED else None
    reader = blobs.open(spec["input"])
    try:
        return reader.read(MAX_CAPTURED + 1) if reader.size <= MAX_CAPTURED else None
    finally:
        reader.close()


def _read_output(result: Success) -> bytes | None:
    if result.embedded is not None:
        return result.embedded
    if result.size > MAX_CAPTURED or result.tmp is None:
        return None
    return Path(result.tmp).read_bytes()


async def capture_async(capture: DataCapture, blobs: BlobStore, item: Item, variant: str, result: Success) -> None:
    config = capture.sampled(item.endpoint)
    if config is None:
        return
    try:
        data = await asyncio.to_thread(_read_input, blobs, item)
        output = await asyncio.to_thread(_read_output, result)
    except (OSError, BlobError, BlobNotFound):
        return  # the request succeeded; its capture is best effort
    if data is None or output is None:
        TOO_LARGE.inc()
        return
    content_type = item.spec.get("content_type") or "application/octet-stream"
    capture.add(
        Captured(
            item.endpoint,
            variant,
            config,
            time.time(),
            data,
            content_type,
            output,
            result.content_type,
            item.inference_id,
        )
    )
