"""Batch transform on Ray Data (``--backend ray``): the pending input objects become a dataset of
one row per object; ``flat_map(read_object)`` reads each through the configured S3 and splits and
packs it exactly as the local backend does; ``map_batches(TransformActor)`` runs the model on an
actor pool of ``InstanceCount`` actors (sized from the InstanceType like Serve replicas) with
``MaxConcurrentTransforms`` concurrent calls each; the answers come back here in input order
(``preserve_order``) and go through the same DataProcessing and assembly as on the local backend
(jobs/output.py), each output object written through the blob store when it is whole.

A dead actor is restarted by Ray and its calls retried (Ray Data's actor pool: unbounded restarts
and task retries), so the job survives the loss of a worker process or node with every record
answered exactly once. Stop ends the iteration (Ray Data then stops the pipeline).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
from collections import deque
from typing import Any

from modelhost.backends.handle import DeploymentFailed, FleetRequest
from modelhost.backends.local.specs import single_container
from modelhost.backends.ray.replica import LOAD_FAILED, container_execution_parameters, worker_threads
from modelhost.backends.ray.setup import ReplicaSetup, aws_env, init_ray, node_cache_dir, replica_setup
from modelhost.config import Settings
from modelhost.jobs.errors import OBJECT_ERRORS
from modelhost.jobs.executor import JobSink, TransformPlan
from modelhost.jobs.inputs import InputObject
from modelhost.jobs.invoke import request_headers
from modelhost.jobs.output import ObjectOutput
from modelhost.jobs.params import ExecutionParameters, batch_env, needs_container, resolve
from modelhost.jobs.ray_stages import Answered, RemoteStore, TransformActor, read_object
from modelhost.jobs.reader import CHUNK_BYTES
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.logs import PLATFORM

READ_CPUS = 0.1  # a read task's CPU reservation: reading and splitting must never wait for the model's actors


def runs_on_ray(settings: Settings, plan: TransformPlan) -> str | None:
    """None when the job can run on Ray Data, else why it runs on local instances."""
    if not settings.s3_endpoint_url:
        return "Ray Data reads and writes the job's data through a configured S3 (--s3-endpoint-url)"
    try:
        single_container(plan.model, "the model")
    except DeploymentFailed as exc:
        return str(exc)
    return None


class _Object:
    """One object's output being assembled here."""

    def __init__(self, obj: InputObject) -> None:
        self.obj = obj
        self.output: ObjectOutput | None = None
        self.failed = False
        self.records = 0


class RayDataExecutor:
    def __init__(self, settings: Settings, artifacts: ArtifactCache, plan: TransformPlan) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self.plan = plan
        self.setup: ReplicaSetup | None = None
        self.params: ExecutionParameters | None = None
        self.count = int(plan.spec["TransformResources"]["InstanceCount"])
        self._stop = threading.Event()
        self._commit = threading.Lock()  # no object is committed once shutdown has returned
        self._consumer: asyncio.Future[None] | None = None

    async def start(self) -> ExecutionParameters:
        plan = self.plan
        resources = plan.spec["TransformResources"]
        request = FleetRequest(
            owner=plan.name,
            variant="instance",
            model=plan.model,
            count=self.count,
            log=plan.log,
            label=f"Transform job {plan.name}",
            extra_env=batch_env(plan.spec),
            volume_size_gb=resources.get("VolumeSizeInGB"),
            instance_type=resources.get("InstanceType", ""),
        )
        self.setup = await replica_setup(self.settings, self.artifacts, request)
        try:
            await asyncio.to_thread(init_ray, self.settings)
        except Exception as exc:
            raise DeploymentFailed(
                f"The Ray cluster at {self.settings.ray_address} is not reachable: {type(exc).__name__}: {exc}"
            ) from None
        container: dict[str, Any] = {}
        if needs_container(plan.spec):  # what the instance would answer on GET /execution-parameters
            container = container_execution_parameters(worker_threads(self.setup.env))
            plan.log.write(PLATFORM, f"/execution-parameters: {json.dumps(container)}")
        self.params = resolve(plan.spec, container)
        plan.log.write(
            PLATFORM,
            f"running on Ray Data: {self.count} actor(s) of model {plan.model_name} "
            f"({self.setup.actor_options}), {self.params.concurrency} concurrent call(s) each",
        )
        return self.params

    async def run(self, pending: deque[InputObject], sink: JobSink) -> None:
        objects = list(pending)
        pending.clear()
        # Its own thread, not the loop's default executor: a job holds it from start to end.
        loop = asyncio.get_running_loop()
        self._consumer = consumer = loop.create_future()

        def consume() -> None:
            try:
                self._consume(objects, sink)
            except BaseException as exc:  # handed to the awaiting task
                loop.call_soon_threadsafe(_settle, consumer, exc)
            else:
                loop.call_soon_threadsafe(_settle, consumer, None)

        threading.Thread(target=consume, name=f"ray-data-{self.plan.name}", daemon=True).start()
        try:
            await asyncio.shield(self._consumer)
        except asyncio.CancelledError:
            self._stop.set()  # shutdown() follows and waits for the commit lock
            raise

    async def shutdown(self, fast: bool) -> None:
        await asyncio.to_thread(self._halt)
        if self._consumer is not None:
            # The consumer sees the stop at its next answer and ends the pipeline (its actors go);
            # nothing it still receives is committed.
            await asyncio.wait([self._consumer], timeout=10)

    def _halt(self) -> None:
        with self._commit:
            self._stop.set()

    # --- the pipeline (blocking: in a thread)

    def _dataset(self, objects: list[InputObject], sink: JobSink) -> Any:
        import ray.data

        setup, params = self.setup, self.params
        assert setup is not None and params is not None and self.settings.s3_endpoint_url
        store = RemoteStore(self.settings.s3_endpoint_url, self.settings.region, node_cache_dir())
        items = [{"obj": i, "uri": o.uri, "rel": o.rel, "size": o.size} for i, o in enumerate(objects)]
        runtime_env = {"env_vars": setup.env}
        ds = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(
            read_object,  # type: ignore[arg-type]  # its keyword arguments come from fn_kwargs
            fn_kwargs={"store": store, "spec": self.plan.spec, "params": params, "processing": sink.processing},
            num_cpus=READ_CPUS,
            # a few readers stay ahead of the actors (each reader is a worker process to start)
            concurrency=max(1, min(self.count, len(objects))),
            runtime_env={"env_vars": aws_env()},
        )
        options = setup.actor_options
        ds = ds.map_batches(
            TransformActor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=self.count,
                max_concurrent_calls_per_actor=params.concurrency,
                max_tasks_in_flight_per_actor=params.concurrency,
                enable_true_multi_threading=params.concurrency > 1,
            ),
            fn_constructor_kwargs={
                "model_dir": setup.model_dir,
                "artifact": setup.artifact,
                "headers": request_headers(self.plan.spec),
                "timeout": params.timeout,
                "retries": params.retries,
            },
            num_cpus=options.get("num_cpus", 1),
            num_gpus=options.get("num_gpus"),
            memory=options.get("memory"),
            runtime_env=runtime_env,
        )
        ctx = ds.context
        ctx.execution_options.preserve_order = True  # answers in input order, object after object
        # About a chunk per block: chunks stream to the actors (and answers back) one by one, so the
        # actors share a large object, progress is live and Stop takes effect at once.
        ctx.target_max_block_size = CHUNK_BYTES
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.wait_for_min_actors_s = int(setup.startup_timeout)
        return ds

    def _consume(self, objects: list[InputObject], sink: JobSink) -> None:
        open_objects: dict[int, _Object] = {}
        began, answered = time.monotonic(), False
        try:
            for row in self._dataset(objects, sink).iter_rows():
                if self._stop.is_set():
                    break
                if not answered:  # the pipeline's start-up (actors starting, the model loading) is over
                    answered = True
                    self.plan.log.write(PLATFORM, f"Ray Data: first answers after {time.monotonic() - began:.2f}s")
                done: Answered = pickle.loads(row["chunk"])
                state = open_objects.get(done.obj)
                if state is None:
                    state = open_objects[done.obj] = _Object(objects[done.obj])
                self._take(state, done, sink)
                if done.last:
                    del open_objects[done.obj]
        except Exception as exc:
            message = str(exc)
            if LOAD_FAILED in message:
                raise DeploymentFailed(message.split(LOAD_FAILED, 1)[1].splitlines()[0].strip()[:1000]) from None
            raise DeploymentFailed(f"the Ray Data pipeline failed: {type(exc).__name__}: {message[-800:]}") from None
        finally:
            for state in open_objects.values():
                if state.output is not None:
                    state.output.discard()

    def _take(self, state: _Object, done: Answered, sink: JobSink) -> None:
        for note in done.notes:
            self.plan.log.write(PLATFORM, note)
        if not state.failed:
            try:
                if state.output is None:
                    state.output = sink.open_output(state.obj)
                if done.error is not None:
                    raise _Failed(done.error)
                for answer in done.answers:
                    out = state.output
                    out.write(
                        out.render(answer.count, answer.first, answer.originals, answer.body, answer.content_type)
                    )
                    state.records += answer.count
                    sink.progress.records += answer.count
            except (_Failed, *OBJECT_ERRORS) as exc:
                state.failed = True
                if state.output is not None:
                    state.output.discard()
                sink.object_failed(state.obj, str(exc) or type(exc).__name__, state.records)
        if done.last and not state.failed:
            assert state.output is not None
            with self._commit:
                if self._stop.is_set():
                    state.output.discard()
                    return
                sink.object_completed(state.obj, state.records, state.output, "Ray Data")


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


class _Failed(Exception):
    """The object failed in a Ray stage (the message says why)."""
