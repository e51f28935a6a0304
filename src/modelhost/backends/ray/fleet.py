"""A variant's replicas as a Ray Serve application (one deployment of ``ModelReplica``), called through
its Serve handle from modelhost's router; Ray's HTTP proxy is never on the path.

Serve places the replicas, restarts a dead one and drains removed ones; modelhost keeps the count
(``num_replicas`` from the reconciler and the autoscaler, 0 = the application deleted) and sees
health through ``serve.status()``. The router's replica choice is over *slots*, one per desired
replica, each counting its outstanding requests (least-outstanding and the async dispatcher's per-
instance limit work on them); Serve then picks the actual replica behind the handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from modelhost.backends.handle import (
    Replica,
    ReplicaFailed,
    ReplicaLost,
    ReplicaResponse,
    ReplicaTimeout,
    ReplicaUnreachable,
    StreamedReply,
    least_outstanding,
)
from modelhost.backends.ray.replica import LOAD_FAILED, ArtifactSource, ModelReplica
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog

log = logging.getLogger("modelhost.backends.ray")

# serve.run is not safe to call from several threads at once (its pickling of the app races), so
# deployments from this process go one at a time.
_SERVE_RUN = threading.Lock()
MAX_ONGOING = 64  # per replica, in Serve's own queue (its default of 5 would throttle below the router)


@dataclass(frozen=True)
class ServeApp:
    """What a fleet deploys: the application name, the model and the replica options."""

    name: str
    deployment: str
    model_dir: str
    artifact: ArtifactSource | None
    env: dict[str, str]
    actor_options: dict[str, Any]
    startup_timeout: float
    hung_after: float
    drain_timeout: float


class Slot:
    """A replica as the router sees it: a place to count outstanding requests."""

    def __init__(self, fleet: RayFleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.name = f"{fleet.variant}/{index}"
        self.outstanding = 0

    @property
    def available(self) -> bool:
        return self.index < self.fleet.healthy_count and not self.fleet.stopping


class _Reply:
    """An answer already whole (a Serve call returns the whole body) read as a stream."""

    def __init__(self, answer: ReplicaResponse) -> None:
        self.status = answer.status
        self.headers = answer.headers
        self._body = answer.body

    async def chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), 1 << 20):
            yield self._body[i : i + (1 << 20)]

    async def read_all(self, limit: int) -> bytes:
        return self._body[:limit]

    def close(self) -> None:
        self._body = b""


class RayFleet:
    """The Ray backend's FleetHandle (backends/handle.py)."""

    def __init__(self, app: ServeApp, variant: str, count: int, log: EndpointLog, status_interval: float) -> None:
        self.app = app
        self.variant = variant
        self.desired = count
        self.log = log
        self.status_interval = status_interval
        self.stats = FleetStats()
        self.crash_loops: dict[str, str] = {}
        self.stopping = False
        self.slots = [Slot(self, i) for i in range(count)]
        self._running = 0
        self._handle: Any = None
        self._available = asyncio.Event()
        self._scale_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    # -- the view --------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.slots)

    @property
    def healthy_count(self) -> int:
        return min(self._running, len(self.slots))

    def replicas(self) -> Sequence[Slot]:
        return self.slots

    # -- lifecycle -------------------------------------------------------------------------------
    def _deployment(self, count: int) -> Any:
        from ray import serve

        app = self.app
        # A pinned code version: a later serve.run with another num_replicas is a lightweight update
        # (replicas kept), not a rolling restart (Serve picks a random version when none is given).
        version = hashlib.sha256(json.dumps([app.name, app.model_dir, app.env], sort_keys=True).encode()).hexdigest()
        options = {**app.actor_options, "runtime_env": {"env_vars": app.env}}
        deployment: Any = serve.deployment(ModelReplica)
        return deployment.options(
            name=app.deployment,
            num_replicas=count,
            ray_actor_options=options,
            max_ongoing_requests=MAX_ONGOING,
            health_check_period_s=2,
            health_check_timeout_s=30,
            graceful_shutdown_timeout_s=app.drain_timeout,
            graceful_shutdown_wait_loop_s=0.5,
            version=version,
            _internal=True,
        ).bind(app.model_dir, app.artifact, app.hung_after)

    def _run(self, count: int) -> Any:
        """Blocking (run in a thread): deploy ``count`` replicas; returns the handle or raises ReplicaFailed."""
        from ray import serve

        try:
            with _SERVE_RUN:
                return serve.run(self._deployment(count), name=self.app.name, route_prefix=None)
        except Exception as exc:
            raise ReplicaFailed(self._failure_reason(exc)) from None

    def _failure_reason(self, exc: Exception) -> str:
        """The model's load failure as the replica reported it, from Serve's deployment status."""
        from ray import serve

        message = str(exc)
        with contextlib.suppress(Exception):
            app = serve.status().applications.get(self.app.name)
            if app is not None:
                for dep in app.deployments.values():
                    message = dep.message or message
        if LOAD_FAILED in message:
            reason = message.split(LOAD_FAILED, 1)[1]
            return reason.splitlines()[0].strip()[:1000]
        return f"The Ray Serve deployment of variant {self.variant} failed: {message.strip()[-800:]}"

    def _delete(self) -> None:
        from ray import serve

        with contextlib.suppress(Exception):
            serve.delete(self.app.name, _blocking=True)

    async def start(self) -> None:
        await self._deploy(self.desired)
        self._watcher = asyncio.create_task(self._watch())

    async def _deploy(self, count: int) -> None:
        if count == 0:
            await asyncio.to_thread(self._delete)
            self._handle, self._running = None, 0
            self._update_available()
            return
        try:
            handle = await asyncio.wait_for(asyncio.to_thread(self._run, count), self.app.startup_timeout)
        except TimeoutError:
            await asyncio.to_thread(self._delete)
            raise ReplicaFailed(
                f"Variant {self.variant}: the replicas did not become healthy within {self.app.startup_timeout:g}s "
                "(ContainerStartupHealthCheckTimeoutInSeconds); does the Ray cluster have the resources?"
            ) from None
        except ReplicaFailed:
            await asyncio.to_thread(self._delete)
            raise
        self._handle = handle
        self._running = count
        self.log.write(self.variant, f"Ray Serve application {self.app.name}: {count} replica(s) running")
        self._update_available()

    async def scale_to(self, count: int, drain_timeout: float = 30.0) -> None:
        async with self._scale_lock:
            before = self.desired
            self.desired = count
            if count < len(self.slots):
                self.slots = self.slots[:count]  # leave the rotation first; Serve drains the replicas
                self._running = min(self._running, count)
                self._update_available()
            try:
                await self._deploy(count)
            except ReplicaFailed:
                self.desired = before
                if before:
                    with contextlib.suppress(ReplicaFailed):
                        await self._deploy(before)
                raise
            finally:
                self.slots = self.slots + [Slot(self, i) for i in range(len(self.slots), self.desired)]
                self._update_available()

    async def _watch(self) -> None:
        """Follow Serve's view of the replicas: a dead one is replaced by Serve; meanwhile it is not healthy."""
        from ray import serve

        while not self.stopping:
            await asyncio.sleep(self.status_interval)
            if self.desired == 0 or self._scale_lock.locked():
                continue
            try:
                status = await asyncio.to_thread(serve.status)
            except Exception as exc:
                self.log.write(self.variant, f"Ray Serve status unavailable: {exc}")
                continue
            app = status.applications.get(self.app.name)
            dep = app.deployments.get(self.app.deployment) if app is not None else None
            states: dict[Any, int] = dict(dep.replica_states) if dep is not None else {}
            running = states.get("RUNNING", 0)  # ReplicaState is a str enum
            if running < self._running:
                self.log.write(self.variant, f"{self._running - running} replica(s) lost; Ray Serve replaces them")
            elif running > self._running:
                self.crash_loops.clear()
            if dep is not None and str(dep.status).endswith("UNHEALTHY") and dep.message:
                self.crash_loops[self.variant] = f"Variant {self.variant} is unhealthy: {dep.message}"[:1000]
            self._running = running
            self._update_available()

    def _update_available(self) -> None:
        if self.healthy_count > 0:
            self._available.set()
        else:
            self._available.clear()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        self.stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.to_thread(self._delete)
        self._handle, self._running = None, 0

    def adopt(self, handle: Any, count: int, running: int) -> None:
        """Another front door's view of this application (backends/ray/attached.py): called through
        ``handle``, ``count`` slots of which ``running`` are healthy; never deployed or deleted here."""
        self._handle, self.desired, self._running = handle, count, running
        if len(self.slots) != count:
            self.slots = [Slot(self, i) for i in range(count)]
        self._update_available()

    # -- requests --------------------------------------------------------------------------------
    def acquire_now(self) -> Slot | None:
        best = least_outstanding(self.slots, _available)
        if best is not None:
            best.outstanding += 1
        return best

    async def acquire(self, wait: float) -> Slot | None:
        slot = self.acquire_now()
        if slot is not None or self.stopping:
            return slot
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._available.wait(), wait)
        return self.acquire_now()

    def claim(self, replica: Replica) -> None:
        replica.outstanding += 1

    def release(self, replica: Replica) -> None:
        replica.outstanding -= 1

    async def invoke(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        import ray.exceptions

        handle = self._handle
        if handle is None:
            raise ReplicaUnreachable(f"variant {self.variant} has no replicas")
        response = handle.invoke.remote(headers, body)
        try:
            status, out_headers, out = await asyncio.wait_for(_result(response), timeout)
        except TimeoutError:
            response.cancel()
            raise ReplicaTimeout(f"replica {replica.name} did not answer within {timeout:g}s") from None
        except ray.exceptions.ActorUnavailableError as exc:
            raise ReplicaUnreachable(f"replica {replica.name}: {exc}") from None
        except (ray.exceptions.RayError, RuntimeError) as exc:
            raise ReplicaLost(f"replica {replica.name} went away: {type(exc).__name__}: {exc}") from None
        return ReplicaResponse(status, dict(out_headers), out)

    async def invoke_stream(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        # A Serve call carries whole objects: the body is gathered (async payloads sit in memory here).
        body = b"".join([c async for c in chunks])
        return _Reply(await self.invoke(replica, headers, body, 3600.0))

    def mark_unreachable(self, replica: Replica) -> None:
        self._update_available()  # Serve routes around an unreachable replica itself

    def recycle(self, replica: Replica) -> None:
        # The replica's check_health fails while a request is stuck past hung_after: Serve replaces it.
        self.log.write(replica.name, "a request timed out; Ray Serve replaces a hung replica at its health check")


async def _result(response: Any) -> Any:
    return await response


def _available(slot: Slot) -> bool:
    return slot.available
