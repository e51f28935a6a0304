"""The job runner: one transform job from its start to its final status.

It lists the input objects (jobs/inputs.py), checks the output path, skips what a run before a
server restart finished (every finished object is recorded in ``transform_job_objects``,
jobs/state.py), and hands the rest to an executor (jobs/executor.py): local instance processes
(jobs/local_executor.py), or on ``--backend ray`` a Ray Data pipeline (jobs/ray_executor.py). A
failed object gets no output and is named in ``FailureReason``; the others still complete. Progress
is written every second; Stop removes what the job wrote; capture manifests are written at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from modelhost.backends.handle import DeploymentFailed
from modelhost.backends.local.instances import InstanceFailed
from modelhost.config import Settings
from modelhost.jobs.assemble import delete_output
from modelhost.jobs.capture import JobCapture, capture_job
from modelhost.jobs.executor import TransformExecutor, TransformPlan
from modelhost.jobs.filters import DataProcessing
from modelhost.jobs.inputs import InputError, InputObject, list_inputs
from modelhost.jobs.invoke import ObjectFailed
from modelhost.jobs.local_executor import LocalExecutor
from modelhost.jobs.output import ObjectOutput
from modelhost.jobs.params import ExecutionParameters
from modelhost.jobs.state import JobState, Progress
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore
from modelhost.store.db import MetadataStore
from modelhost.store.logs import PLATFORM, JobLog

log = logging.getLogger("modelhost.jobs")

PROGRESS_EVERY = 1.0  # seconds between progress writes


def make_executor(
    settings: Settings, artifacts: ArtifactCache, run_dir: Path, plan: TransformPlan
) -> TransformExecutor:
    """Ray Data on ``--backend ray`` (with a configured S3, which every node reads and writes), for
    single-container models; local instances otherwise (pipelines and multi-model containers)."""
    if settings.backend == "ray":
        from modelhost.jobs.ray_executor import RayDataExecutor, runs_on_ray

        why_not = runs_on_ray(settings, plan)
        if why_not is None:
            return RayDataExecutor(settings, artifacts, plan)
        plan.log.write(PLATFORM, f"the job runs on local instances: {why_not}")
    return LocalExecutor(settings, artifacts, run_dir, plan)


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
        self.executor: TransformExecutor | None = None
        self.log = JobLog(settings.logs_dir, self.name)
        self.failures: list[tuple[str, str]] = []  # (object uri, reason)
        self.pending: deque[InputObject] = deque()
        self.params: ExecutionParameters | None = None
        self.processing: DataProcessing | None = None

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
        executor, self.executor = self.executor, None
        if executor is not None:
            await executor.shutdown(fast)

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
            plan = TransformPlan(self.name, spec, self.row["deployment"]["model"], self.row["model_name"], self.log)
            self.executor = make_executor(self.settings, self.artifacts, self.run_dir, plan)
            try:
                self.params = await self.executor.start()
            except (DeploymentFailed, InstanceFailed) as exc:
                return "Failed", f"ClientError: {exc}"
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
            try:
                await self.executor.run(self.pending, self)
            except DeploymentFailed as exc:  # the model's copies failed once running (Ray: an actor's load)
                return "Failed", f"ClientError: {exc}"
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

    # --- the JobSink the executor reports to (blocking: called from threads)

    def open_output(self, obj: InputObject) -> ObjectOutput:
        return ObjectOutput(self.blobs, self.spec, obj, self.processing)

    def object_completed(self, obj: InputObject, records: int, output: ObjectOutput, where: str) -> None:
        output.commit()
        self.progress.objects_completed += 1
        self.progress.bytes_done += max(obj.size, 0)
        self.state.record_object(obj.uri, "Completed", records, output.uri, None)
        self.log.write(
            PLATFORM,
            f"{obj.uri} -> {output.uri}: {records} records in {time.monotonic() - output.started:.2f}s ({where})",
        )

    def object_failed(self, obj: InputObject, reason: str, records: int) -> None:
        self.failures.append((obj.uri, reason))
        self.progress.objects_failed += 1
        self.log.write(PLATFORM, f"{obj.uri}: FAILED: {reason}")
        self.state.record_object(obj.uri, "Failed", records, None, reason[:1000])
