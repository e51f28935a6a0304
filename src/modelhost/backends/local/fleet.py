"""A fleet: the instances of one variant, kept at the desired count.

The fleet restarts crashed instances (with back-off), replaces instances that stop answering
/ping, scales in and out without dropping requests (new instances take traffic only once
healthy; removed ones leave the rotation first, then drain), and hands the router the least
busy healthy instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

from modelhost.backends.handle import (
    Replica,
    ReplicaLost,
    ReplicaResponse,
    ReplicaTimeout,
    ReplicaUnreachable,
    StreamedReply,
    least_outstanding,
)
from modelhost.backends.local.http import ConnectError, ConnectionLost, RequestTimeout, StreamedResponse, stream_request
from modelhost.backends.local.instances import RESTART_BACKOFF, Instance, InstanceFailed, InstanceSpec
from modelhost.backends.local.pipeline import PipelineInstance
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog

UNHEALTHY_PINGS = 3  # consecutive failed pings before an instance is replaced
STABLE_AFTER = 60.0  # seconds up after which a crash no longer counts as part of a crash loop
CRASH_LOOP = 3  # consecutive failed restarts reported as a crash loop in DescribeEndpoint


class Fleet:
    """The local backend's FleetHandle (backends/handle.py): one variant's instance processes."""

    def __init__(self, spec: InstanceSpec, count: int, run_dir: Path, log: EndpointLog, ping_interval: float) -> None:
        self.spec = spec
        self.variant = spec.variant
        self.desired = count
        self.run_dir = run_dir
        self.log = log
        self.ping_interval = ping_interval
        self.instances = [spec.instance(i, run_dir, log) for i in range(count)]
        self._next_index = count
        self._available = asyncio.Event()
        self._supervisors: dict[Instance, asyncio.Task[None]] = {}
        self._scale_lock = asyncio.Lock()
        self.stopping = False
        # Instance name -> why it is crash-looping (shown as a VariantStatus message).
        self.crash_loops: dict[str, str] = {}
        # Instances taken out of rotation by mark_unreachable; the watchdog brings back one whose
        # process still runs and answers /ping (a dead one is the supervisor's).
        self._unreachable: set[Instance] = set()
        self.stats = FleetStats()

    @property
    def healthy_count(self) -> int:
        return sum(1 for i in self.instances if i.healthy)

    @property
    def size(self) -> int:
        return len(self.instances)

    def replicas(self) -> Sequence[Instance]:
        return self.instances

    async def start(self) -> None:
        """Start every instance and wait until all pass /ping; on any failure stop them all."""
        results = await asyncio.gather(*(self._start_one(i) for i in self.instances), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop(drain_timeout=0)
            first = failures[0]
            raise first if isinstance(first, InstanceFailed) else InstanceFailed(f"{type(first).__name__}: {first}")
        self._update_available()
        for inst in self.instances:
            self._supervisors[inst] = asyncio.create_task(self._supervise(inst))

    async def _start_one(self, inst: Instance) -> None:
        await inst.start()
        self._update_available()  # a request waiting in pick() may use it before its siblings are up

    async def scale_to(self, count: int, drain_timeout: float = 30.0) -> None:
        """Change the instance count. Scale-out: new instances join the rotation only once they
        pass /ping (a failure raises InstanceFailed and leaves the fleet as it was). Scale-in:
        the removed instances leave the rotation at once, finish their in-flight requests, stop."""
        async with self._scale_lock:
            self.desired = count
            current = len(self.instances)
            if count > current:
                fresh = [
                    self.spec.instance(self._next_index + i, self.run_dir, self.log) for i in range(count - current)
                ]
                self._next_index += len(fresh)
                results = await asyncio.gather(*(i.start() for i in fresh), return_exceptions=True)
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    await asyncio.gather(*(i.stop(0) for i in fresh), return_exceptions=True)
                    self.desired = current
                    first = failures[0]
                    raise first if isinstance(first, InstanceFailed) else InstanceFailed(str(first))
                self.instances = self.instances + fresh  # one assignment: the router sees all or none
                for inst in fresh:
                    self._supervisors[inst] = asyncio.create_task(self._supervise(inst))
                self._update_available()
            elif count < current:
                # Remove the busiest-last: unhealthy instances first, then the newest.
                ordered = sorted(self.instances, key=lambda i: (i.healthy, -i.index))
                leaving = ordered[: current - count]
                self.instances = [i for i in self.instances if i not in leaving]
                self._update_available()
                for inst in leaving:
                    inst.stopping = True
                    task = self._supervisors.pop(inst, None)
                    if task is not None:
                        task.cancel()
                    self.crash_loops.pop(inst.name, None)
                    self._unreachable.discard(inst)
                await asyncio.gather(*(i.stop(drain_timeout) for i in leaving), return_exceptions=True)

    async def _supervise(self, inst: Instance) -> None:
        """Restart the instance whenever it exits; replace it when it stops answering /ping."""
        failures = 0
        watchdog = asyncio.create_task(self._watch_pings(inst))
        try:
            while not self.stopping:
                assert inst.proc is not None
                up_since = time.monotonic()
                code = await inst.proc.wait()
                inst.healthy = False
                self._unreachable.discard(inst)
                if self.stopping or inst.stopping:
                    return
                self._update_available()
                if time.monotonic() - up_since > STABLE_AFTER:
                    failures = 0  # it ran fine for a while: not a crash loop
                delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                self.log.write(inst.name, f"instance exited with code {code}; restarting in {delay:g}s")
                await asyncio.sleep(delay)
                if self.stopping or inst.stopping:
                    return
                inst.restarts += 1
                failures += 1
                try:
                    await inst.start()
                except InstanceFailed as exc:
                    self.log.write(inst.name, f"restart failed: {exc}")
                    if failures >= CRASH_LOOP:
                        self.crash_loops[inst.name] = (
                            f"Instance {inst.name} is crash-looping ({failures} failed restarts; backing off "
                            f"{RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]:g}s): {exc}"
                        )[:1000]
                    inst.kill()
                    continue
                self.crash_loops.pop(inst.name, None)
                self._update_available()
        finally:
            watchdog.cancel()

    async def _watch_pings(self, inst: Instance) -> None:
        missed = 0
        while not self.stopping and not inst.stopping:
            await asyncio.sleep(self.ping_interval)
            if not inst.healthy or inst.stopping:
                missed = 0
                if inst in self._unreachable:
                    await self._readmit(inst)
                continue
            if await inst.ping():
                missed = 0
                continue
            missed += 1
            if missed >= UNHEALTHY_PINGS:
                self.log.write(inst.name, f"instance failed {missed} consecutive pings; replacing it")
                missed = 0
                inst.kill()

    async def _readmit(self, inst: Instance) -> None:
        proc = inst.proc
        if inst.stopping or proc is None or proc.returncode is not None or not await inst.ping():
            return
        if inst in self._unreachable and inst.proc is proc and proc.returncode is None and not inst.stopping:
            self._unreachable.discard(inst)
            inst.healthy = True
            self.log.write(inst.name, "instance answers /ping again; back in service")
            self._update_available()

    def _update_available(self) -> None:
        if any(i.healthy for i in self.instances):
            self._available.set()
        else:
            self._available.clear()

    def _least_outstanding(self) -> Instance | None:
        return least_outstanding(self.instances, is_healthy)

    def acquire_now(self) -> Instance | None:
        """The healthy instance with the fewest outstanding requests, counted as busy (None if there is none)."""
        inst = self._least_outstanding()
        if inst is not None:
            inst.outstanding += 1
        return inst

    async def acquire(self, wait: float) -> Instance | None:
        inst = self.acquire_now()
        if inst is not None or self.stopping:
            return inst
        # Every instance is restarting: wait a little for one rather than failing at once.
        self._update_available()
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
        client = cast(Instance, replica).client
        if client is None:
            raise ReplicaUnreachable(f"instance {replica.name} is not running")
        try:
            resp = await client.request(b"POST", b"/invocations", headers, body, timeout)
        except ConnectError as exc:
            raise ReplicaUnreachable(str(exc)) from None
        except RequestTimeout as exc:
            raise ReplicaTimeout(str(exc)) from None
        except ConnectionLost as exc:
            raise ReplicaLost(cast(Instance, replica).exit_reason or str(exc)) from None
        return ReplicaResponse(resp.status, resp.headers, resp.body)

    async def invoke_stream(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        path = str(cast(Instance, replica).socket_path)
        try:
            if isinstance(replica, PipelineInstance):  # the chain, streamed at both ends
                return _Reply(await replica.invoke_stream(headers, size, chunks))
            return _Reply(await stream_request(path, b"POST", b"/invocations", headers, size, chunks))
        except ConnectError as exc:
            raise ReplicaUnreachable(str(exc)) from None
        except ConnectionLost as exc:
            raise ReplicaLost(str(exc)) from None

    def mark_unreachable(self, replica: Replica) -> None:
        inst = cast(Instance, replica)
        if inst.healthy:
            inst.healthy = False
            self._unreachable.add(inst)
        self._update_available()

    def recycle(self, replica: Replica) -> None:
        """Kill an instance that timed out on a request (its model may be hung); it is restarted."""
        inst = cast(Instance, replica)
        self.log.write(inst.name, "instance timed out on a request; restarting it")
        inst.kill()
        self._update_available()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        self.stopping = True
        for task in self._supervisors.values():
            task.cancel()
        self._supervisors.clear()
        await asyncio.gather(*(i.stop(drain_timeout) for i in self.instances), return_exceptions=True)


class _Reply:
    """A streamed answer whose body, when the instance goes away while it is read, raises ReplicaLost."""

    def __init__(self, resp: StreamedResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.chunks():
                yield chunk
        except ConnectionLost as exc:
            raise ReplicaLost(str(exc)) from None

    async def read_all(self, limit: int) -> bytes:
        try:
            return await self._resp.read_all(limit)
        except ConnectionLost as exc:
            raise ReplicaLost(str(exc)) from None

    def close(self) -> None:
        self._resp.close()


def is_healthy(inst: Instance) -> bool:
    return inst.healthy
