"""The job runner: one transform job from its instances' start to its final status.

Start ``InstanceCount`` instances of the model (the job's ``Environment`` over the model's, plus
``SAGEMAKER_BATCH`` and the batch variables the user set), ask ``GET /execution-parameters`` for
what the user left unset (``jobs/params.py``), then give each instance whole objects, one at a time,
with ``MaxConcurrentTransforms`` requests in flight (``jobs/invoke.py``) and the responses written
in input order. Reading, splitting and packing run in a thread per object that stays a few batches
ahead (``jobs/reader.py``). Inputs and outputs go through the BlobStore (``jobs/inputs.py``,
``jobs/assemble.py``), whatever serves ``s3://``.

Every finished object is recorded in ``transform_job_objects`` (``jobs/state.py``); a job resumed
after a server restart skips those. A failed object gets no output and is named in
``FailureReason``; the others still complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.http import HttpResponse
from modelhost.backends.local.instances import Instance, InstanceFailed
from modelhost.backends.local.specs import DeploymentFailed, instance_spec
from modelhost.config import Settings
from modelhost.jobs.assemble import OutputWriter, delete_output, output_uri
from modelhost.jobs.batching import Batch, batches
from modelhost.jobs.capture import JobCapture, capture_job
from modelhost.jobs.filters import DataProcessing, FilterError
from modelhost.jobs.inputs import InputError, InputObject, list_inputs, open_input
from modelhost.jobs.invoke import ObjectFailed, invoke, request_headers
from modelhost.jobs.params import ExecutionParameters, batch_env, execution_parameters
from modelhost.jobs.reader import Reader
from modelhost.jobs.splitters import SplitError, split
from modelhost.jobs.state import JobState, Progress
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore
from modelhost.store.db import MetadataStore
from modelhost.store.logs import PLATFORM, JobLog

log = logging.getLogger("modelhost.jobs")

PROGRESS_EVERY = 1.0  # seconds between progress writes
# What fails one object (and not the job): its reasons are the FailureReason texts.
OBJECT_ERRORS = (
    ObjectFailed,
    SplitError,
    InputError,
    FilterError,
    BlobError,
    BlobNotFound,
    UnicodeDecodeError,
    OSError,
    EOFError,
)


class TransformRunner:
    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        blobs: BlobStore,
        artifacts: ArtifactCache,
        run_dir: Path,
        row: dict,
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.artifacts = artifacts
        self.run_dir = run_dir
        self.row = row
        self.name: str = row["name"]
        self.spec: dict = row["spec"]
        self.state = JobState(store, self.name)
        self.progress = Progress()
        self.stop_requested = False
        self.fleet: Fleet | None = None
        self.log = JobLog(settings.logs_dir, self.name)
        self.failures: list[tuple[str, str]] = []  # (object uri, reason)
        self.pending: deque[InputObject] = deque()
        self.params: ExecutionParameters | None = None
        self.processing: DataProcessing | None = None
        self.headers = request_headers(self.spec)

    def _write_progress(self) -> None:
        self.state.write_progress(self.progress)

    def _capture(self) -> JobCapture:
        start = self.row.get("start_time") or self.row.get("creation_time") or time.time()
        return JobCapture(
            name=self.name,
            arn=self.row.get("arn") or self.name,
            spec=self.spec,
            start=float(start),
            blobs=self.blobs,
            log=self.log,
            finished_objects=self.state.finished_objects,
            stop_requested=lambda: self.stop_requested,
        )

    # --- the job

    async def run(self) -> None:
        reporter = asyncio.create_task(self._report())
        try:
            status, reason = await self._execute()
        except asyncio.CancelledError:
            reporter.cancel()
            await self._shutdown(fast=True)
            if self.stop_requested:
                await asyncio.shield(self.finish_stopped())
            else:
                self.log.write(PLATFORM, "the server is shutting down; the job resumes when it restarts")
            self.log.close()
            raise
        except Exception as exc:  # a bug must not leave the job InProgress
            log.exception("transform job %s failed", self.name)
            status, reason = "Failed", f"InternalServerError: {type(exc).__name__}: {exc}"
        reporter.cancel()
        await self._shutdown(fast=False)
        if self.stop_requested:
            await self.finish_stopped()
        else:
            await asyncio.to_thread(self._write_progress)
            status, reason = await capture_job(self._capture(), status, reason)
            end = round(time.time(), 3)
            await asyncio.to_thread(self.state.set, status=status, failure_reason=reason, end_time=end)
            self.log.write(PLATFORM, f"transform job {status}" + (f": {reason}" if reason else ""))
        self.log.close()

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._write_progress)

    async def _shutdown(self, fast: bool) -> None:
        fleet, self.fleet = self.fleet, None
        if fleet is None:
            return
        if fast:
            fleet.stopping = True
            for inst in fleet.instances:
                inst.kill()
        await fleet.stop(drain_timeout=0)

    async def finish_stopped(self) -> None:
        """End a stopped job: remove the outputs it wrote, then record ``Stopped``."""

        def undo() -> None:
            for info in self.state.finished_objects().values():
                if info["output_uri"]:
                    delete_output(self.blobs, info["output_uri"])
            self.state.forget_objects()
            self._write_progress()
            self.state.set(status="Stopped", end_time=round(time.time(), 3))

        await asyncio.to_thread(undo)
        self.log.write(PLATFORM, "transform job Stopped; its output was removed")

    async def _execute(self) -> tuple[str, str | None]:
        spec = self.spec
        attempt = self.row.get("attempts") or 1
        self.log.write(
            PLATFORM,
            f"transform job {self.name} started"
            if attempt <= 1
            else f"transform job {self.name} resumed after a server restart (attempt {attempt})",
        )
        tin, tout = spec["TransformInput"], spec["TransformOutput"]
        try:
            found = await asyncio.to_thread(list_inputs, self.blobs, tin["DataSource"])
        except InputError as exc:
            return "Failed", f"ClientError: {exc}"
        try:
            await asyncio.to_thread(self._check_output, tout["S3OutputPath"])
        except ObjectFailed as exc:
            return "Failed", f"ClientError: {exc}"
        done = await asyncio.to_thread(self.state.finished_objects)
        self._plan(found, done)
        self.log.write(
            PLATFORM,
            f"{len(found)} input object(s); {len(self.pending)} to transform"
            + (f" ({len(found) - len(self.pending)} finished before the restart)" if done else ""),
        )
        if self.pending:
            try:
                await self._start_fleet()
            except (DeploymentFailed, InstanceFailed) as exc:
                return "Failed", f"ClientError: {exc}"
            assert self.fleet is not None
            self.params = await execution_parameters(spec, self.fleet.instances[0], self.log)
            self.log.write(PLATFORM, self.params.describe())
            capture = spec.get("DataCaptureConfig") or {}
            start = self.row.get("start_time") or time.time()
            self.processing = DataProcessing(
                spec.get("DataProcessing"),
                tin.get("ContentType"),
                tout.get("Accept"),
                tin.get("SplitType", "None"),
                generate_inference_id=bool(capture.get("GenerateInferenceId")),
                job_start=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            )
            async with asyncio.TaskGroup() as group:
                for inst in self.fleet.instances:
                    group.create_task(self._worker(inst))
        if self.failures:
            uri, reason = self.failures[0]
            total = self.progress.objects_total
            more = f" ({len(self.failures)} of {total} objects failed)" if len(self.failures) > 1 else ""
            return "Failed", f"ClientError: Failed to transform {uri}: {reason}{more}"[:1024]
        return "Completed", None

    def _plan(self, found: list[InputObject], done: dict[str, dict[str, Any]]) -> None:
        """Queue the objects not finished before a restart; count the others."""
        p = self.progress
        p.objects_total = len(found)
        p.bytes_total = sum(max(o.size, 0) for o in found)
        for obj in found:
            info = done.get(obj.uri)
            if info is None:
                self.pending.append(obj)
            elif info["status"] == "Completed":
                p.objects_completed += 1
                p.records += info["records"]
                p.bytes_done += max(obj.size, 0)
            else:
                p.objects_failed += 1
                self.failures.append((obj.uri, info["reason"] or "failed"))
        p.resumed_records = p.records

    def _check_output(self, path: str) -> None:
        try:
            self.blobs.check_writable(path.rstrip("/") + "/")
        except (BlobError, BlobNotFound) as exc:
            raise ObjectFailed(f"S3OutputPath {path} cannot be written: {exc}") from None

    async def _start_fleet(self) -> None:
        ispec = await instance_spec(
            self.settings,
            self.artifacts,
            owner=self.name,
            variant="instance",
            model=self.row["deployment"]["model"],
            label=f"Transform job {self.name}",
            extra_env=batch_env(self.spec),
        )
        count = int(self.spec["TransformResources"]["InstanceCount"])
        self.fleet = Fleet(ispec, count, self.run_dir, self.log, self.settings.ping_interval)
        self.log.write(PLATFORM, f"starting {count} instance(s) of model {self.row['model_name']}")
        await self.fleet.start()

    # --- per instance: whole objects, in order

    async def _worker(self, inst: Instance) -> None:
        while self.pending:
            obj = self.pending.popleft()
            await self._transform_object(inst, obj)

    def _batches(self, obj: InputObject) -> Iterator[Batch]:
        assert self.params is not None
        tin = self.spec["TransformInput"]
        split_type = tin.get("SplitType", "None")
        stream = open_input(self.blobs, obj, tin.get("CompressionType"))
        with stream:
            yield from batches(
                split(stream, split_type, self.params.limit),
                self.params.strategy,
                split_type,
                self.params.limit,
                self.processing,
            )

    async def _transform_object(self, inst: Instance, obj: InputObject) -> None:
        assert self.params is not None
        tout = self.spec["TransformOutput"]
        out_uri = output_uri(tout["S3OutputPath"], obj.rel)
        window: deque[tuple[asyncio.Task[HttpResponse], Batch]] = deque()
        writer: OutputWriter | None = None
        reader: Reader | None = None
        records = 0
        started = time.monotonic()
        try:
            writer = await asyncio.to_thread(
                OutputWriter, self.blobs, out_uri, tout.get("AssembleWith", "None"), tout.get("Accept")
            )
            reader = Reader(lambda: self._batches(obj), ahead=max(2, self.params.concurrency))
            async for chunk in reader.chunks():
                for batch in chunk:
                    while len(window) >= self.params.concurrency:
                        records += await self._complete(window, writer)
                    window.append((asyncio.create_task(self._invoke(inst, batch)), batch))
            while window:
                records += await self._complete(window, writer)
            await asyncio.to_thread(writer.commit)
            writer = None
        except asyncio.CancelledError:
            self._abandon(window, writer, reader)
            raise
        except OBJECT_ERRORS as exc:
            self._abandon(window, writer, reader)
            reason = str(exc) or type(exc).__name__
            self.failures.append((obj.uri, reason))
            self.progress.objects_failed += 1
            self.log.write(PLATFORM, f"{obj.uri}: FAILED: {reason}")
            await asyncio.to_thread(self.state.record_object, obj.uri, "Failed", records, None, reason[:1000])
            return
        self.progress.objects_completed += 1
        self.progress.bytes_done += max(obj.size, 0)
        await asyncio.to_thread(self.state.record_object, obj.uri, "Completed", records, out_uri, None)
        self.log.write(
            PLATFORM, f"{obj.uri} -> {out_uri}: {records} records in {time.monotonic() - started:.2f}s ({inst.name})"
        )

    @staticmethod
    def _abandon(window: deque, writer: OutputWriter | None, reader: Reader | None) -> None:
        for task, _batch in window:
            task.cancel()
        window.clear()
        if reader is not None:
            reader.stop()
        if writer is not None:
            writer.discard()

    async def _complete(self, window: deque, writer: OutputWriter) -> int:
        task, batch = window.popleft()
        response: HttpResponse = await task
        processing = self.processing
        if processing is not None and processing.active:
            data = await asyncio.to_thread(self._process_output, batch, response)
        else:
            data = response.body
        if len(data) > 256 * 1024:
            await asyncio.to_thread(writer.write, data)
        else:
            writer.write(data)
        self.progress.records += batch.count
        return batch.count

    def _process_output(self, batch: Batch, response: HttpResponse) -> bytes:
        processing = self.processing
        assert processing is not None
        ctype = response.headers.get(b"content-type", b"").decode("latin-1") or None
        try:
            outputs = processing.output_records(response.body, batch.count, ctype)
            originals = batch.originals or [None] * batch.count
            lines = [processing.output_record(o, out, ctype) for o, out in zip(originals, outputs, strict=True)]
        except (FilterError, ValueError, UnicodeDecodeError) as exc:
            raise ObjectFailed(f"records {batch.first + 1}-{batch.first + batch.count}: {exc}") from None
        if self.spec["TransformOutput"].get("AssembleWith", "None") == "Line":
            return b"".join(line + b"\n" for line in lines)
        return b"".join(lines)

    async def _invoke(self, inst: Instance, batch: Batch) -> HttpResponse:
        assert self.params is not None and self.fleet is not None
        return await invoke(self.fleet, inst, batch, self.headers, self.params, self.log)
