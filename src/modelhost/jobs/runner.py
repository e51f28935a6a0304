"""The job runner: one transform job from its instances' start to its final status.

Start ``InstanceCount`` instances of the model (the job's ``Environment`` over the model's, plus
``SAGEMAKER_BATCH`` and the batch variables the user set), ask ``GET /execution-parameters`` for
what the user left unset (request > container > defaults: MultiRecord, 6 MB, 1), then give each
instance whole objects, one at a time, with ``MaxConcurrentTransforms`` requests in flight and the
responses written in input order. Reading, splitting and packing run in a thread per object that
stays a few batches ahead (memory is bounded by the batches in flight, not the object size).

Every finished object is recorded in ``transform_job_objects``; a job resumed after a server
restart skips those. A failed object gets no output and is named in ``FailureReason``; the others
still complete.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import delete, select

from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.http import ConnectError, ConnectionLost, HttpResponse, RequestTimeout
from modelhost.backends.local.instances import Instance, InstanceFailed
from modelhost.backends.local.specs import DeploymentFailed, instance_spec
from modelhost.config import Settings
from modelhost.jobs.assemble import OutputWriter, delete_output, output_uri
from modelhost.jobs.batching import MB, Batch, batches
from modelhost.jobs.capture import capture_job
from modelhost.jobs.filters import DataProcessing, FilterError
from modelhost.jobs.inputs import InputError, InputObject, list_inputs, open_input
from modelhost.jobs.splitters import SplitError, split
from modelhost.store import tables
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.buckets import BucketStore, S3StoreError
from modelhost.store.db import MetadataStore
from modelhost.store.logs import EndpointLog
from modelhost.store.objects import ObjectNotFound, ObjectStore

log = logging.getLogger("modelhost.jobs")

DEFAULT_PAYLOAD_MB = 6
DEFAULT_CONCURRENCY = 1
DEFAULT_STRATEGY = "MultiRecord"
DEFAULT_TIMEOUT = 600
DEFAULT_RETRIES = 3
PROGRESS_EVERY = 1.0  # seconds between progress writes
CHUNK_ITEMS = 64  # batches handed from the reader thread at once (small records: fewer thread hops)
CHUNK_BYTES = 1024 * 1024
STRATEGY_ENV = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}
STRATEGY_FROM_ENV = {v: k for k, v in STRATEGY_ENV.items()}
PLATFORM = "transform"  # log source of the runner's own lines


def job_log_path(logs_dir: Path, job: str) -> Path:
    return logs_dir / "transform-jobs" / f"{job}.log"


class JobLog(EndpointLog):
    """The job's log stream: its instances' output and the runner's lines (CloudWatch's
    ``/aws/sagemaker/TransformJobs`` streams are read from this file)."""

    def __init__(self, logs_dir: Path, job: str) -> None:  # noqa: D107 - same format as endpoint logs
        self.path = job_log_path(logs_dir, job)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115


class ObjectFailed(Exception):
    """One input object cannot be transformed; the message names the cause (not the object)."""


@dataclass
class Progress:
    objects_total: int = 0
    objects_completed: int = 0
    objects_failed: int = 0
    records: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.time)
    resumed_records: int = 0  # records done before a restart (not counted in the rate)

    def to_json(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-6)
        return {
            "ObjectsTotal": self.objects_total,
            "ObjectsCompleted": self.objects_completed,
            "ObjectsFailed": self.objects_failed,
            "RecordsProcessed": self.records,
            "BytesTotal": self.bytes_total,
            "BytesProcessed": self.bytes_done,
            "ElapsedSeconds": round(elapsed, 3),
            "RecordsPerSecond": round((self.records - self.resumed_records) / elapsed, 1),
        }


@dataclass
class ExecutionParameters:
    strategy: str
    payload_mb: int
    concurrency: int
    timeout: float
    retries: int

    @property
    def limit(self) -> int | None:
        return self.payload_mb * MB if self.payload_mb > 0 else None


class _End:
    pass


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Reader:
    """Reads, splits and packs one object in a thread, a bounded number of chunks ahead."""

    def __init__(self, make: Callable[[], Iterator[Batch]], ahead: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue(max(ahead, 2))
        self.make = make
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="transform-reader", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                fut.result(timeout=0.2)
                return True
            except concurrent.futures.TimeoutError:
                if self._stop.is_set():
                    fut.cancel()
                    return False
            except (concurrent.futures.CancelledError, RuntimeError):
                return False

    def _run(self) -> None:
        it = self.make()
        try:
            chunk: list[Batch] = []
            size = 0
            for batch in it:
                chunk.append(batch)
                size += len(batch.body)
                if len(chunk) >= CHUNK_ITEMS or size >= CHUNK_BYTES:
                    if not self._put(chunk):
                        return
                    chunk, size = [], 0
            if (chunk and not self._put(chunk)) or not self._put(_End()):
                return
        except BaseException as exc:  # reported to the consumer: the object fails with it
            self._put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    async def chunks(self) -> Any:
        while True:
            item = await self.queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def stop(self) -> None:
        self._stop.set()


class TransformRunner:
    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        objects: ObjectStore,
        buckets: BucketStore | None,
        artifacts: ArtifactCache,
        run_dir: Path,
        row: dict,
    ) -> None:
        self.settings = settings
        self.store = store
        self.objects = objects
        self.buckets = buckets
        self.artifacts = artifacts
        self.run_dir = run_dir
        self.row = row
        self.name: str = row["name"]
        self.spec: dict = row["spec"]
        self.progress = Progress()
        self.stop_requested = False
        self.fleet: Fleet | None = None
        self.log = JobLog(settings.logs_dir, self.name)
        self.failures: list[tuple[str, str]] = []  # (object uri, reason)
        self.pending: deque[InputObject] = deque()
        self.params: ExecutionParameters | None = None
        self.processing: DataProcessing | None = None

    # --- store access (threads)

    def _set(self, **values: Any) -> None:
        values.setdefault("last_modified_time", round(time.time(), 3))
        with self.store.begin() as conn:
            self.store.update(conn, tables.transform_jobs, self.name, values)

    def _status(self) -> str | None:
        with self.store.begin() as conn:
            row = self.store.get(conn, tables.transform_jobs, self.name)
        return row["status"] if row else None

    def _finished_objects(self) -> dict[str, dict]:
        t = tables.transform_job_objects
        with self.store.begin() as conn:
            rows = conn.execute(select(t).where(t.c.job_key == self.name.lower())).all()
        return {r.key: dict(r._mapping) for r in rows}

    def _record_object(self, key: str, status: str, records: int, output: str | None, reason: str | None) -> None:
        t = tables.transform_job_objects
        with self.store.begin() as conn:
            conn.execute(delete(t).where(t.c.job_key == self.name.lower(), t.c.key == key))
            conn.execute(
                t.insert().values(
                    job_key=self.name.lower(), key=key, status=status, records=records, output_uri=output, reason=reason
                )
            )

    def _write_progress(self) -> None:
        with self.store.begin() as conn:
            conn.execute(
                tables.transform_jobs.update()
                .where(tables.transform_jobs.c.name_key == self.name.lower())
                .values(progress=json.dumps(self.progress.to_json()))
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
                await asyncio.shield(self._finish_stopped())
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
            await self._finish_stopped()
        else:
            await asyncio.to_thread(self._write_progress)
            status, reason = await capture_job(self, status, reason)
            end = round(time.time(), 3)
            await asyncio.to_thread(self._set, status=status, failure_reason=reason, end_time=end)
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

    async def _finish_stopped(self) -> None:
        def undo() -> None:
            for info in self._finished_objects().values():
                if info["output_uri"]:
                    delete_output(self.objects, self.buckets, info["output_uri"])
            t = tables.transform_job_objects
            with self.store.begin() as conn:
                conn.execute(delete(t).where(t.c.job_key == self.name.lower()))
            self._write_progress()
            self._set(status="Stopped", end_time=round(time.time(), 3))

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
            found = await asyncio.to_thread(list_inputs, self.objects, self.buckets, tin["DataSource"])
        except InputError as exc:
            return "Failed", f"ClientError: {exc}"
        try:
            await asyncio.to_thread(self._check_output, tout["S3OutputPath"])
        except ObjectFailed as exc:
            return "Failed", f"ClientError: {exc}"
        done = await asyncio.to_thread(self._finished_objects)
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
            self.params = await self._execution_parameters(self.fleet.instances[0])
            prm = self.params
            self.log.write(
                PLATFORM,
                f"BatchStrategy={prm.strategy} MaxPayloadInMB={prm.payload_mb} MaxConcurrentTransforms="
                f"{prm.concurrency} InvocationsTimeoutInSeconds={prm.timeout:g} InvocationsMaxRetries={prm.retries}",
            )
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
            more = f" ({len(self.failures)} of {p.objects_total} objects failed)" if len(self.failures) > 1 else ""
            return "Failed", f"ClientError: Failed to transform {uri}: {reason}{more}"[:1024]
        return "Completed", None

    def _check_output(self, path: str) -> None:
        if path.startswith("s3://") and self.buckets is not None:
            bucket = path.removeprefix("s3://").split("/", 1)[0]
            try:
                self.buckets.bucket_dir(bucket)
            except S3StoreError:
                raise ObjectFailed(f"The output bucket {bucket} of S3OutputPath {path} does not exist.") from None
        else:
            try:
                self.objects.local_path(path)
            except ObjectNotFound as exc:
                raise ObjectFailed(str(exc)) from None

    async def _start_fleet(self) -> None:
        spec = self.spec
        env = dict(spec.get("Environment") or {})
        env["SAGEMAKER_BATCH"] = "true"
        if spec.get("MaxPayloadInMB") is not None:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(spec["MaxPayloadInMB"])
        if spec.get("BatchStrategy"):
            env["SAGEMAKER_BATCH_STRATEGY"] = STRATEGY_ENV[spec["BatchStrategy"]]
        if spec.get("MaxConcurrentTransforms"):
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(spec["MaxConcurrentTransforms"])
        ispec = await instance_spec(
            self.settings,
            self.artifacts,
            owner=self.name,
            variant="instance",
            model=self.row["deployment"]["model"],
            label=f"Transform job {self.name}",
            extra_env=env,
        )
        count = int(spec["TransformResources"]["InstanceCount"])
        self.fleet = Fleet(ispec, count, self.run_dir, self.log, self.settings.ping_interval)
        self.log.write(PLATFORM, f"starting {count} instance(s) of model {self.row['model_name']}")
        await self.fleet.start()

    async def _execution_parameters(self, inst: Instance) -> ExecutionParameters:
        spec = self.spec
        strategy = spec.get("BatchStrategy")
        payload_mb = spec.get("MaxPayloadInMB")
        concurrency = spec.get("MaxConcurrentTransforms") or None
        if strategy is None or payload_mb is None or concurrency is None:
            container = await self._ask_container(inst)
            if strategy is None:
                strategy = STRATEGY_FROM_ENV.get(str(container.get("BatchStrategy", "")).upper())
            if payload_mb is None and isinstance(container.get("MaxPayloadInMB"), int):
                payload_mb = container["MaxPayloadInMB"]
            if concurrency is None and isinstance(container.get("MaxConcurrentTransforms"), int):
                concurrency = container["MaxConcurrentTransforms"]
        strategy = strategy or DEFAULT_STRATEGY
        payload_mb = DEFAULT_PAYLOAD_MB if payload_mb is None else max(0, min(int(payload_mb), 100))
        concurrency = max(1, int(concurrency or DEFAULT_CONCURRENCY))
        if payload_mb and concurrency * payload_mb > 100:
            concurrency = max(1, 100 // payload_mb)
        mcc = spec.get("ModelClientConfig") or {}
        return ExecutionParameters(
            strategy,
            payload_mb,
            concurrency,
            float(mcc.get("InvocationsTimeoutInSeconds", DEFAULT_TIMEOUT)),
            int(mcc.get("InvocationsMaxRetries", DEFAULT_RETRIES)),
        )

    async def _ask_container(self, inst: Instance) -> dict:
        assert inst.client is not None
        try:
            response = await inst.client.request(b"GET", b"/execution-parameters", [], b"", 5.0)
        except (ConnectError, ConnectionLost, RequestTimeout):
            return {}
        if response.status != 200:
            return {}
        try:
            doc = json.loads(response.body)
        except ValueError:
            return {}
        if isinstance(doc, dict):
            self.log.write(PLATFORM, f"/execution-parameters: {json.dumps(doc)}")
            return doc
        return {}

    # --- per instance: whole objects, in order

    async def _worker(self, inst: Instance) -> None:
        while self.pending:
            obj = self.pending.popleft()
            await self._transform_object(inst, obj)

    def _batches(self, obj: InputObject) -> Iterator[Batch]:
        assert self.params is not None
        tin = self.spec["TransformInput"]
        split_type = tin.get("SplitType", "None")
        stream = open_input(self.objects, obj, tin.get("CompressionType"))
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
                OutputWriter, self.objects, self.buckets, out_uri, tout.get("AssembleWith", "None"), tout.get("Accept")
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
        except (ObjectFailed, SplitError, InputError, FilterError, UnicodeDecodeError, OSError, EOFError) as exc:
            self._abandon(window, writer, reader)
            reason = str(exc) or type(exc).__name__
            self.failures.append((obj.uri, reason))
            self.progress.objects_failed += 1
            self.log.write(PLATFORM, f"{obj.uri}: FAILED: {reason}")
            await asyncio.to_thread(self._record_object, obj.uri, "Failed", records, None, reason[:1000])
            return
        self.progress.objects_completed += 1
        self.progress.bytes_done += max(obj.size, 0)
        await asyncio.to_thread(self._record_object, obj.uri, "Completed", records, out_uri, None)
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
        tin, tout = self.spec["TransformInput"], self.spec["TransformOutput"]
        headers: list[tuple[bytes, bytes]] = []
        if tin.get("ContentType"):
            headers.append((b"content-type", tin["ContentType"].encode("latin-1")))
        if tout.get("Accept"):
            headers.append((b"accept", tout["Accept"].encode("latin-1")))
        what = (
            f"record {batch.first + 1}"
            if batch.count == 1
            else f"records {batch.first + 1}-{batch.first + batch.count}"
        )
        error = ""
        for attempt in range(self.params.retries + 1):
            if attempt:
                self.log.write(PLATFORM, f"{what}: retrying ({attempt}/{self.params.retries}) after: {error[:300]}")
            await self._wait_healthy(inst)
            assert inst.client is not None
            inst.outstanding += 1
            try:
                response = await inst.client.request(b"POST", b"/invocations", headers, batch.body, self.params.timeout)
            except RequestTimeout:
                error = f"the model did not answer within InvocationsTimeoutInSeconds ({self.params.timeout:g})"
                self.fleet.recycle(inst)
                continue
            except (ConnectError, ConnectionLost) as exc:
                error = f"the instance failed: {exc}"
                continue
            finally:
                inst.outstanding -= 1
            if 200 <= response.status < 300:
                return response
            body = response.body.decode("utf-8", "replace").strip()
            error = f"the model returned HTTP {response.status}: {body[:500]}"
        raise ObjectFailed(f"{what}: {error}")

    async def _wait_healthy(self, inst: Instance) -> None:
        if inst.healthy:
            return
        deadline = time.monotonic() + inst.spec.startup_timeout
        while not inst.healthy:
            if time.monotonic() > deadline:
                raise ObjectFailed(f"instance {inst.name} did not become healthy again after a failure")
            await asyncio.sleep(0.1)
