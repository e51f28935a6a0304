"""Finishing a request exactly once: the output or failure object, then the row, then the notification.

Commit, in two steps: (1) ``Completing`` is written with the outcome (final status, temp file,
ETag, content type, location, the notification to send); (2) the temp file is installed as the
output (or failure) object through the blob store (``put_file``: atomic, the file is consumed)
and the row becomes ``Completed`` (or ``Failed``). A crash between the steps is finished at the
next start (``finish`` again): the temp file still there means step 2 did not happen (install it,
to the same key, which is harmless if it half did); gone means it did (``repair`` makes sure the
object carries its content type). A small object (a response of at most EMBED_LIMIT bytes, a
failure reason) has no temp file: its bytes are in the outcome (``inrow``), and step 2 writes
them (``put_bytes``, atomic), again after a crash: the same bytes at the same key. The
notification is sent after the row is final.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from modelhost.hosting.asyncq.batches import LoopBatches, ThreadBatches
from modelhost.hosting.asyncq.exchange import Success
from modelhost.hosting.asyncq.items import CHUNK, EMBED_LIMIT, Item, Tasks
from modelhost.hosting.asyncq.metrics import QueueMetrics
from modelhost.hosting.asyncq.notify import Notifier, notification
from modelhost.hosting.asyncq.queue import RequestRows
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore

log = logging.getLogger("modelhost.async")

STORE_ERRORS = (BlobError, BlobNotFound, OSError)
REASON_KEEP = 8192  # characters of a failure reason kept in the row


def row_object(outcome: dict[str, Any], body: bytes | None) -> bytes:
    """The object an ``inrow`` outcome installs: the response (the row's ``body``) or the failure reason."""
    if outcome["status"] == "Completed":
        assert body is not None, "an inrow response without its body"
        return body
    return str(outcome["reason"]).encode("utf-8")


def _unlink(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


class Committer:
    def __init__(
        self,
        rows: RequestRows,
        blobs: BlobStore,
        tmp_dir: Path,
        metrics: QueueMetrics,
        notifier: Notifier,
        region: str,
        tasks: Tasks,
    ) -> None:
        self.rows = rows
        self.blobs = blobs
        self.tmp_dir = tmp_dir
        self.metrics = metrics
        self.notifier = notifier
        self.region = region
        self.tasks = tasks
        # the object writes (step 2): one thread hop and one metadata transaction per batch
        self.batches = ThreadBatches(blobs.batch)
        # a small object kept in the local bucket index: on the loop, no thread hop (batches.py)
        self.now_batches = LoopBatches(blobs.batch_now, self.batches)

    def notification(self, item: Item, outcome: dict[str, Any]) -> dict[str, Any] | None:
        return notification(item, outcome, self.region)

    async def succeed(self, item: Item, variant: str, result: Success) -> None:
        outcome: dict[str, Any] = {
            "status": "Completed",
            "time": round(time.time(), 3),
            "tmp": result.tmp,
            "etag": result.etag,
            "size": result.size,
            "content_type": result.content_type,
            "location": item.spec["output"],
            "variant": variant,
        }
        if result.embedded is not None:
            outcome["embedded"] = base64.b64encode(result.embedded).decode()
        body = None
        if result.tmp is None:  # small: the response goes into the row's body, no temp file
            outcome["inrow"] = True
            body = result.embedded
        note = self.notification(item, outcome)
        if not await self.rows.completing(item.seq, outcome, note, "InProgress", body=body):
            _unlink(result.tmp)  # the lease was lost (cannot happen with one server); drop it
            return
        await self.finish(item, outcome, note, body)

    async def fail(
        self,
        item: Item,
        variant: str,
        reason: str,
        body: bytes | None = None,
        from_status: str = "InProgress",
        any_owner: bool = False,
    ) -> None:
        outcome = await self.failure_outcome(item, variant, reason, body)
        note = self.notification(item, outcome)
        if not await self.rows.completing(item.seq, outcome, note, from_status, any_owner):
            _unlink(outcome.get("tmp"))
            return
        await self.finish(item, outcome, note)

    async def failure_outcome(self, item: Item, variant: str, reason: str, body: bytes | None) -> dict[str, Any]:
        outcome: dict[str, Any] = {
            "status": "Failed",
            "time": round(time.time(), 3),
            "reason": reason[:REASON_KEEP],
            "location": item.spec.get("failure"),
            "content_type": "text/plain",
            "variant": variant,
            "tmp": None,
        }
        if body is not None and len(body) <= EMBED_LIMIT:
            outcome["embedded"] = base64.b64encode(body).decode()
        if outcome["location"]:
            data = reason.encode("utf-8")
            outcome["etag"] = hashlib.md5(data).hexdigest()
            outcome["size"] = len(data)
            if len(reason) <= REASON_KEEP:  # the row's reason is the whole object
                outcome["inrow"] = True
                return outcome

            def write() -> str:
                fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="err-")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return name

            outcome["tmp"] = await asyncio.to_thread(write)
        return outcome

    def install(self, outcome: dict, body: bytes | None = None) -> None:
        """(Blocking) step 2 of the commit: the temp file onto the key, or, if that already
        happened before a crash, make sure the object is described by the outcome; or the bytes
        the row holds (``body``, the response, for an ``inrow`` outcome)."""
        location, tmp = outcome.get("location"), outcome.get("tmp")
        if location and outcome.get("inrow"):
            # Written again after a crash: the same bytes at the same key.
            self.blobs.put_bytes(location, row_object(outcome, body), outcome["content_type"])
            return
        if not location or not tmp:
            return
        if os.path.exists(tmp):
            self.blobs.put_file(location, Path(tmp), outcome["content_type"], outcome.get("etag"))
            _unlink(tmp)  # (consumed by put_file; a store that copied it leaves it to us)
            return
        with contextlib.suppress(*STORE_ERRORS):
            self.repair(location, outcome)

    def repair(self, location: str, outcome: dict) -> None:
        """The object was installed but the crash may have come before its metadata was: install
        the same bytes again with the outcome's content type (only after a crash in that window)."""
        try:
            info = self.blobs.stat(location)
            if info.size == outcome["size"] and (info.etag or "").strip('"') == outcome["etag"]:
                return
        except BlobNotFound:
            pass
        reader = self.blobs.open(location)
        copy: str | None = None
        try:
            if reader.size != outcome["size"]:
                return
            fd, copy = tempfile.mkstemp(dir=self.tmp_dir, prefix="fix-")
            with os.fdopen(fd, "wb") as f:
                while chunk := reader.read(CHUNK):
                    f.write(chunk)
        finally:
            reader.close()
        try:
            self.blobs.put_file(location, Path(copy), outcome["content_type"], outcome["etag"])
        finally:
            _unlink(copy)

    async def finish(self, item: Item, outcome: dict, note: dict | None, body: bytes | None = None) -> None:
        """Commit step 2, then Completed/Failed; then the notification and the inline input."""
        variant = outcome.get("variant", "")
        m = self.metrics.variant(item.endpoint, variant)
        started = time.perf_counter()
        inline = item.spec.get("inline")

        def install_and_drop_input() -> None:
            self.install(outcome, body)
            _unlink(inline)

        # (inrow: the object's bytes are in memory, for the s3:// part; no inline input file to remove)
        location = outcome.get("location")
        quick = not inline and (not location or (outcome.get("inrow") and location.startswith("s3://")))
        try:
            await (self.now_batches if quick else self.batches).run(install_and_drop_input)
            if outcome["status"] == "Completed":
                m.response_upload_latency.observe((time.perf_counter() - started) * 1e6)
        except STORE_ERRORS as exc:
            _unlink(outcome.get("tmp"))
            message = getattr(exc, "message", None) or str(exc)
            if outcome["status"] == "Completed":
                m.response_upload_failures.inc()
                outcome = await self.failure_outcome(
                    item,
                    variant,
                    f"ResponseUploadFailure: Could not upload the response to {outcome['location']}: {message}",
                    None,
                )
                note = self.notification(item, outcome)
                await self.rows.update_outcome(item.seq, outcome, note)
                try:
                    await asyncio.to_thread(self.install, outcome)
                except STORE_ERRORS as exc2:
                    log.warning("async request %s: failure object not written: %s", item.inference_id, exc2)
                    outcome["location"] = None
                    note = self.notification(item, outcome)
                    await self.rows.update_outcome(item.seq, outcome, note)
            else:
                log.warning("async request %s: failure object not written: %s", item.inference_id, message)
                outcome["location"] = None
                note = self.notification(item, outcome)
                await self.rows.update_outcome(item.seq, outcome, note)
        await self.rows.done(item.seq, outcome["status"])
        if outcome["status"] == "Completed":
            m.invocations_processed.inc()
        m.total_processing_time.observe((outcome["time"] - item.received) * 1000)
        if inline and os.path.exists(inline):  # (normally gone with the install)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, inline)
        if note is not None:
            self.tasks.spawn(self.deliver(item.seq, item.endpoint, variant, note))

    async def deliver(self, seq: int, endpoint: str, variant: str, note: dict) -> None:
        delivered = await self.notifier.send(note["topic"], note["message"])
        if not delivered:
            self.metrics.variant(endpoint, variant).notification_failures.inc()
        # Delivered or given up: either way not sent again at the next start.
        await self.rows.notified(seq)
