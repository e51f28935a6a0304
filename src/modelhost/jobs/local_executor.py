"""Batch transform on local instance processes: ``InstanceCount`` instances of the model (the job's
``Environment`` over the model's, plus ``SAGEMAKER_BATCH`` and the batch variables the user set);
``GET /execution-parameters`` for what the user left unset (jobs/params.py); then each instance takes
whole objects, one at a time, with ``MaxConcurrentTransforms`` requests in flight (jobs/invoke.py) and
the responses written in input order. Reading, splitting and packing run in a thread per object that
stays a few batches ahead (jobs/reader.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.http import HttpResponse
from modelhost.backends.local.instances import Instance
from modelhost.backends.local.specs import instance_spec
from modelhost.config import Settings
from modelhost.jobs.batching import Batch
from modelhost.jobs.errors import OBJECT_ERRORS
from modelhost.jobs.executor import JobSink, TransformPlan
from modelhost.jobs.inputs import InputObject
from modelhost.jobs.invoke import invoke, request_headers
from modelhost.jobs.output import ObjectOutput
from modelhost.jobs.params import ExecutionParameters, batch_env, execution_parameters
from modelhost.jobs.reader import Reader
from modelhost.jobs.records import object_batches
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.logs import PLATFORM

BIG_WRITE = 256 * 1024  # bytes written in a thread rather than on the loop


class LocalExecutor:
    def __init__(self, settings: Settings, artifacts: ArtifactCache, run_dir: Path, plan: TransformPlan) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self.run_dir = run_dir
        self.plan = plan
        self.fleet: Fleet | None = None
        self.params: ExecutionParameters | None = None
        self.headers = request_headers(plan.spec)

    async def start(self) -> ExecutionParameters:
        plan = self.plan
        ispec = await instance_spec(
            self.settings,
            self.artifacts,
            owner=plan.name,
            variant="instance",
            model=plan.model,
            label=f"Transform job {plan.name}",
            extra_env=batch_env(plan.spec),
        )
        count = int(plan.spec["TransformResources"]["InstanceCount"])
        self.fleet = Fleet(ispec, count, self.run_dir, plan.log, self.settings.ping_interval)
        plan.log.write(PLATFORM, f"starting {count} instance(s) of model {plan.model_name}")
        await self.fleet.start()
        self.params = await execution_parameters(plan.spec, self.fleet.instances[0], plan.log)
        return self.params

    async def run(self, pending: deque[InputObject], sink: JobSink) -> None:
        assert self.fleet is not None
        async with asyncio.TaskGroup() as group:
            for inst in self.fleet.instances:
                group.create_task(self._worker(inst, pending, sink))

    async def shutdown(self, fast: bool) -> None:
        fleet, self.fleet = self.fleet, None
        if fleet is None:
            return
        if fast:
            fleet.stopping = True
            for inst in fleet.instances:
                inst.kill()
        await fleet.stop(drain_timeout=0)

    # --- per instance: whole objects, in order

    async def _worker(self, inst: Instance, pending: deque[InputObject], sink: JobSink) -> None:
        while pending:
            await self._transform_object(inst, pending.popleft(), sink)

    async def _transform_object(self, inst: Instance, obj: InputObject, sink: JobSink) -> None:
        params = self.params
        assert params is not None
        window: deque[tuple[asyncio.Task[HttpResponse], Batch]] = deque()
        output: ObjectOutput | None = None
        reader: Reader | None = None
        records = 0
        try:
            output = await asyncio.to_thread(sink.open_output, obj)
            reader = Reader(
                lambda: object_batches(sink.blobs, self.plan.spec, obj, params, sink.processing),
                ahead=max(2, params.concurrency),
            )
            async for chunk in reader.chunks():
                for batch in chunk:
                    while len(window) >= params.concurrency:
                        records += await self._complete(window, output, sink)
                    window.append((asyncio.create_task(self._invoke(inst, batch)), batch))
            while window:
                records += await self._complete(window, output, sink)
            await asyncio.to_thread(sink.object_completed, obj, records, output, inst.name)
            output = None
        except asyncio.CancelledError:
            self._abandon(window, output, reader)
            raise
        except OBJECT_ERRORS as exc:
            self._abandon(window, output, reader)
            await asyncio.to_thread(sink.object_failed, obj, str(exc) or type(exc).__name__, records)

    @staticmethod
    def _abandon(window: deque, output: ObjectOutput | None, reader: Reader | None) -> None:
        for task, _batch in window:
            task.cancel()
        window.clear()
        if reader is not None:
            reader.stop()
        if output is not None:
            output.discard()

    async def _complete(self, window: deque, output: ObjectOutput, sink: JobSink) -> int:
        task, batch = window.popleft()
        response: HttpResponse = await task
        ctype = response.headers.get(b"content-type", b"").decode("latin-1") or None
        if output.processing is not None:
            data = await asyncio.to_thread(
                output.render, batch.count, batch.first, batch.originals, response.body, ctype
            )
        else:
            data = response.body
        if len(data) > BIG_WRITE:
            await asyncio.to_thread(output.write, data)
        else:
            output.write(data)
        sink.progress.records += batch.count
        return batch.count

    async def _invoke(self, inst: Instance, batch: Batch) -> HttpResponse:
        assert self.params is not None and self.fleet is not None
        return await invoke(self.fleet, inst, batch, self.headers, self.params, self.plan.log)
