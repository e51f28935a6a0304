"""The serverless gate: a FleetHandle around any backend's fleet that makes it serverless.

Requests are admitted up to MaxConcurrency (beyond: Throttled). An admitted request takes an idle
instance, or waits — held, never refused — while one starts: one start at a time, so requests
arriving during a cold start share it, and more start while requests keep waiting (up to
MaxConcurrency). A start that fails or passes the cold-start limit fails the requests waiting for
it with the reason. The control loop scales an idle fleet back to ProvisionedConcurrency
(``scale_idle``). One request per instance at a time, as a serverless concurrency unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from modelhost.backends.handle import FleetHandle, Replica, ReplicaFailed, ReplicaResponse, StreamedReply
from modelhost.hosting.errors import ColdStartFailed, PayloadTooLarge, Throttled
from modelhost.hosting.serverless.metrics import ServerlessMetrics
from modelhost.resources.serverless import (
    COLD_START_LIMIT,
    FleetLoad,
    ServerlessConfig,
    scale_in_target,
    wants_instance,
)
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog


class ServerlessFleet:
    def __init__(
        self,
        inner: FleetHandle,
        owner: str,
        config: ServerlessConfig,
        *,
        max_payload: int | None,
        cold_start_limit: float = COLD_START_LIMIT,
        log_stream_arn: str = "",
        reserved: bool = True,
    ) -> None:
        self.inner = inner
        self.owner = owner
        self.config = config
        self.max_payload = max_payload
        self.cold_start_limit = cold_start_limit
        self.log_stream_arn = log_stream_arn
        self.reserved = reserved
        self.in_flight = 0  # admitted: waiting for an instance or running on one
        self.waiting = 0
        self.last_activity = time.monotonic()
        self.stopped = False
        self.metrics = ServerlessMetrics.for_variant(owner, inner.variant)
        self._starting: asyncio.Task[None] | None = None
        self._failure: tuple[float, str] | None = None  # (when, why) of the last failed start
        self._waiters: list[asyncio.Future[None]] = []

    # --- FleetHandle pass-through

    @property
    def variant(self) -> str:
        return self.inner.variant

    @variant.setter
    def variant(self, value: str) -> None:
        self.inner.variant = value

    @property
    def desired(self) -> int:
        return self.inner.desired

    @desired.setter
    def desired(self, value: int) -> None:
        self.inner.desired = value

    @property
    def stats(self) -> FleetStats:
        return self.inner.stats

    @stats.setter
    def stats(self, value: FleetStats) -> None:
        self.inner.stats = value

    @property
    def log(self) -> EndpointLog:
        return self.inner.log

    @log.setter
    def log(self, value: EndpointLog) -> None:
        self.inner.log = value

    @property
    def crash_loops(self) -> dict[str, str]:
        return self.inner.crash_loops

    @crash_loops.setter
    def crash_loops(self, value: dict[str, str]) -> None:
        self.inner.crash_loops = value

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def healthy_count(self) -> int:
        return self.inner.healthy_count

    def replicas(self) -> Sequence[Replica]:
        return self.inner.replicas()

    def set_max_concurrency(self, limit: int, reserved: bool = True) -> None:
        """PutFunctionConcurrency: a new limit applies to the next request."""
        self.config = ServerlessConfig(self.config.memory_mb, limit, self.config.provisioned)
        self.reserved = reserved

    async def start(self) -> None:
        await self.inner.start()  # the provisioned instances (none: the variant starts cold)
        self._publish_gauges()

    # --- admission

    def _idle(self) -> Replica | None:
        for r in self.inner.replicas():
            if r.available and r.outstanding == 0:
                return r
        return None

    def _admit(self) -> None:
        if self.in_flight >= self.config.max_concurrency:
            self.metrics.throttled.inc()
            raise Throttled(self.owner, self.variant, self.config.max_concurrency, self.reserved)
        self.in_flight += 1
        self.last_activity = time.monotonic()
        self._publish_gauges()

    def acquire_now(self) -> Replica | None:
        replica = self._idle()
        if replica is None:
            return None  # the router calls acquire(), which admits and waits
        self._admit()
        self.inner.claim(replica)
        return replica

    async def acquire(self, wait: float) -> Replica | None:
        """``wait`` (the router's instance wait) is not used: a serverless request is held until an
        instance is ready, up to the cold-start limit."""
        self._admit()
        deadline = time.monotonic() + self.cold_start_limit
        asked = time.monotonic()
        self.waiting += 1
        try:
            while True:
                if self.stopped:
                    raise ColdStartFailed(self.owner, self.variant, "the variant is being stopped", self.log_stream_arn)
                replica = self._idle()
                if replica is not None:
                    self.inner.claim(replica)
                    return replica
                if self._failure is not None and self._failure[0] >= asked:
                    raise ColdStartFailed(self.owner, self.variant, self._failure[1], self.log_stream_arn)
                self._maybe_grow()
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = (
                        f"The serverless cold start of variant {self.variant} did not complete within "
                        f"{self.cold_start_limit:g} seconds."
                    )
                    self.log.write(f"{self.variant}/serverless", reason)
                    raise ColdStartFailed(self.owner, self.variant, reason, self.log_stream_arn)
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, min(left, 1.0))
        except BaseException:
            self.in_flight -= 1
            self._publish_gauges()
            raise
        finally:
            self.waiting -= 1

    def claim(self, replica: Replica) -> None:
        self.in_flight += 1
        self.inner.claim(replica)

    def release(self, replica: Replica) -> None:
        self.inner.release(replica)
        self.in_flight -= 1
        self.last_activity = time.monotonic()
        self._publish_gauges()
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # --- scaling

    def _maybe_grow(self) -> None:
        idle = sum(1 for r in self.inner.replicas() if r.available and r.outstanding == 0)
        starting = self._starting is not None and not self._starting.done()
        if wants_instance(self.waiting, idle, starting, self.inner.size, self.config.max_concurrency):
            self._starting = asyncio.get_running_loop().create_task(self._grow())

    async def _grow(self) -> None:
        began = time.perf_counter()
        want = self.inner.size + 1
        try:
            await self.inner.scale_to(want, drain_timeout=0)
        except ReplicaFailed as exc:
            reason = f"The serverless cold start of variant {self.variant} failed: {exc}"
            self.log.write(f"{self.variant}/serverless", reason)
            self._failure = (time.monotonic(), reason)
        else:
            setup_us = (time.perf_counter() - began) * 1e6
            self.metrics.setup_time.observe(setup_us)
            self.metrics.cold_starts.inc()
            self.log.write(f"{self.variant}/serverless", f"cold start: instance ready in {setup_us / 1e6:.3f}s")
        finally:
            self._publish_gauges()
            self._wake()
            # Requests may still be waiting beyond what the new instance takes: start the next one.
            if self.waiting and not self.stopped:
                self._starting = None
                self._maybe_grow()

    async def scale_idle(self, idle_seconds: float) -> None:
        """Called by the control loop: back to ProvisionedConcurrency after idle_seconds without requests."""
        if self.stopped or (self._starting is not None and not self._starting.done()):
            return
        load = FleetLoad(
            self.inner.size, self.in_flight, time.monotonic() - self.last_activity, self.config.provisioned
        )
        target = scale_in_target(load, idle_seconds)
        if target is None:
            return
        self.log.write(f"{self.variant}/serverless", f"idle for {load.idle_for:.0f}s: scaling to {target} instances")
        await self.inner.scale_to(target, drain_timeout=30.0)
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        self.metrics.instances.set(self.inner.size)
        if self.config.provisioned:
            self.metrics.utilization.set(self.in_flight / self.config.provisioned)

    # --- the request itself

    async def invoke(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        if self.max_payload is not None and len(body) > self.max_payload:
            raise PayloadTooLarge(self.owner, len(body), self.max_payload)
        return await self.inner.invoke(replica, headers, body, timeout)

    async def invoke_stream(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        return await self.inner.invoke_stream(replica, headers, size, chunks)

    async def scale_to(self, count: int, drain_timeout: float) -> None:
        await self.inner.scale_to(count, drain_timeout)

    def mark_unreachable(self, replica: Replica) -> None:
        self.inner.mark_unreachable(replica)

    def recycle(self, replica: Replica) -> None:
        self.inner.recycle(replica)

    async def stop(self, drain_timeout: float) -> None:
        self.stopped = True
        self._wake()
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        await self.inner.stop(drain_timeout)
        self.metrics.instances.set(0)
