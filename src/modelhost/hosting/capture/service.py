"""The capture service: the hot path's ``offer`` (a dict lookup, a random draw, an append) and a
background flush that turns the buffered records into objects through the one blob store.

Sampling is decided per request without locks (``random.random()``). Records are buffered in
memory up to ``buffer_bytes`` (past it they are dropped and counted, never blocking a request) and
written every ``flush_interval`` seconds: one object per endpoint, variant and UTC hour per flush,
each installed atomically by ``BlobStore.put_bytes`` — a reader sees the whole file or none, so a
``kill -9`` loses at most the records of the last interval and never leaves a partial line. The
swap of the buffer happens on the event loop, the only thread that appends, so nothing is lost
between an append and a flush. ``stop`` flushes everything (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable

from prometheus_client import Counter

from modelhost.hosting.capture.config import CaptureConfig
from modelhost.hosting.capture.record import Captured, object_uri, to_line
from modelhost.hosting.metrics import LABELS, REGISTRY
from modelhost.resources.endpoint import EndpointRecord
from modelhost.store.blobs import BlobError, BlobStore

log = logging.getLogger("modelhost.capture")

CAPTURED = Counter("modelhost_capture_records", "Records written by data capture", LABELS, registry=REGISTRY)
DROPPED = Counter("modelhost_capture_dropped_records", "Records dropped: capture buffer full", registry=REGISTRY)
FAILED = Counter(
    "modelhost_capture_write_failures", "Capture objects that could not be written", LABELS, registry=REGISTRY
)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class DataCapture:
    def __init__(self, blobs: BlobStore, flush_interval: float = 1.0, buffer_bytes: int = 64 << 20) -> None:
        self.blobs = blobs
        self.flush_interval = flush_interval
        self.buffer_bytes = buffer_bytes
        self.configs: dict[str, CaptureConfig] = {}  # endpoint -> its active capture
        self._pending: list[Captured] = []
        self._pending_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- the control loop's view --------------------------------------------------------------------

    async def sync_endpoints(self, records: Iterable[EndpointRecord]) -> None:
        configs: dict[str, CaptureConfig] = {}
        for record in records:
            dc = record.deployment.current.config.get("DataCaptureConfig")
            if dc:
                config = CaptureConfig.parse(dc)
                if config.active:
                    configs[record.name] = config
        self.configs = configs

    def status(self, endpoint: str) -> str:
        return "Started" if endpoint in self.configs else "Stopped"

    # -- the hot path ---------------------------------------------------------------------------------

    def offer(
        self,
        endpoint: str,
        variant: str,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        output: bytes,
        output_type: str,
    ) -> None:
        config = self.sampled(endpoint)
        if config is None:
            return
        content_type = header(headers, b"content-type") or "application/octet-stream"
        inference_id = header(headers, b"x-amzn-sagemaker-inference-id")
        self.add(
            Captured(endpoint, variant, config, time.time(), body, content_type, output, output_type, inference_id)
        )

    def sampled(self, endpoint: str) -> CaptureConfig | None:
        """The endpoint's capture config if this request is to be captured (drawn per request)."""
        config = self.configs.get(endpoint)
        if config is None or (config.percentage < 100 and random.random() * 100 >= config.percentage):
            return None
        return config

    def add(self, rec: Captured) -> None:
        """Buffer one record (dropped, counted, when the buffer is full); call on the event loop."""
        if self._pending_bytes + rec.size > self.buffer_bytes:
            DROPPED.inc()
            return
        self._pending.append(rec)
        self._pending_bytes += rec.size
        if self._pending_bytes > self.buffer_bytes // 2:
            self._wake.set()

    # -- the writer -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # keep capturing whatever one flush hit
                log.exception("data capture flush failed")

    async def flush(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0  # on the loop: no append is lost
        if batch:
            await asyncio.to_thread(self.write, batch)

    def write(self, batch: list[Captured]) -> None:
        groups: dict[tuple[str, str, str, int], list[Captured]] = {}
        for rec in batch:
            groups.setdefault((rec.config.destination, rec.endpoint, rec.variant, int(rec.time // 3600)), []).append(
                rec
            )
        for (_dest, endpoint, variant, _hour), recs in groups.items():
            uri = object_uri(recs[0], recs[0].time)
            try:
                self.blobs.put_bytes(uri, b"".join(to_line(r) for r in recs), "application/jsonl")
            except (BlobError, OSError) as exc:
                FAILED.labels(endpoint, variant).inc()
                log.warning("data capture of %s/%s could not be written to %s: %s", endpoint, variant, uri, exc)
                continue
            CAPTURED.labels(endpoint, variant).inc(len(recs))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
