"""Front doors sharing one machine: a follower calls the leader's instance processes directly.

The leader's instances serve on unix sockets in its run directory; their paths (and whether each
is healthy) are published with the route. A follower's ``AttachedFleet`` holds one ``Instance``
per socket, ``adopt``-ed (connected, never spawned, killed or unlinked), and sends requests the way
the leader's Fleet does (its ``invoke`` / ``invoke_stream``), so both take the same hop. A request
that cannot connect takes that instance out of this door's rotation for a moment (the leader is
restarting it, or a new leader is starting its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

from modelhost.backends.attachment import UNREACHABLE
from modelhost.backends.handle import (
    FleetHandle,
    Replica,
    ReplicaFailed,
    ReplicaResponse,
    StreamedReply,
    least_outstanding,
)
from modelhost.backends.local.fleet import Fleet, is_healthy
from modelhost.backends.local.instances import Instance, InstanceSpec
from modelhost.resources.front_doors import FleetLocator, ReplicaAddress
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog

LOCAL = "local"
UNREACHABLE_FOR = 1.0  # seconds an instance that refused a connection stays out of this door's rotation


class LocalAttachment:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def locate(self, fleet: FleetHandle) -> FleetLocator:
        if not isinstance(fleet, Fleet):
            return UNREACHABLE
        replicas = []
        for inst in fleet.instances:
            # Pipelines (a chain of processes) and multi-model instances (a model cache kept by the
            # leader) are reached through the leader only.
            if type(inst) is not Instance:
                return UNREACHABLE
            replicas.append(ReplicaAddress(inst.name, str(inst.socket_path), inst.available))
        return FleetLocator(LOCAL, tuple(replicas))

    def attach(self, variant: str, locator: FleetLocator, log: EndpointLog) -> AttachedFleet:
        return AttachedFleet(variant, locator, log, self.run_dir)


class AttachedFleet:
    """A FleetHandle over another front door's instances (backends/handle.py)."""

    def __init__(self, variant: str, locator: FleetLocator, log: EndpointLog, run_dir: Path) -> None:
        self.variant = variant
        self.log = log
        self.stats = FleetStats()
        self.crash_loops: dict[str, str] = {}
        self.stopping = False
        self._spec = InstanceSpec(
            endpoint="", variant=variant, model_dir=run_dir, runtime="", environment={}, startup_timeout=0
        )
        self._run_dir = run_dir
        self._hop = Fleet(self._spec, 0, run_dir, log, ping_interval=3600)  # its invoke / invoke_stream only
        self.instances: list[Instance] = []
        self._published: dict[Instance, bool] = {}
        self._refused: dict[Instance, float] = {}  # instance -> until when it stays out of rotation
        self._available = asyncio.Event()
        self.reachable = False
        self.update(locator)

    # --- the view
    @property
    def desired(self) -> int:
        return len(self.instances)

    @desired.setter
    def desired(self, value: int) -> None:  # the FleetHandle protocol's attribute; the leader owns it
        pass

    @property
    def size(self) -> int:
        return len(self.instances)

    @property
    def healthy_count(self) -> int:
        return sum(1 for i in self.instances if self._published.get(i))

    def replicas(self) -> Sequence[Replica]:
        return self.instances

    def update(self, locator: FleetLocator) -> None:
        self.reachable = locator.kind == LOCAL  # else answered as no capacity at once, never waited for
        old = {str(i.socket_path): i for i in self.instances}
        fresh: list[Instance] = []
        for address in locator.replicas if self.reachable else ():
            inst = old.pop(address.address, None)
            if inst is None:
                inst = Instance(self._spec, len(fresh), self._run_dir, self.log)
                inst.name = address.name
                inst.adopt(Path(address.address))
            self._published[inst] = address.healthy
            fresh.append(inst)
        self.instances = fresh
        for gone in old.values():
            self._forget(gone)
        self._refresh()

    def _forget(self, inst: Instance) -> None:
        self._published.pop(inst, None)
        self._refused.pop(inst, None)
        inst.healthy = False
        client = inst.client
        if client is not None:
            asyncio.get_running_loop().create_task(client.close())

    def _refresh(self) -> None:
        now = time.monotonic()
        for inst in self.instances:
            inst.healthy = self._published.get(inst, False) and self._refused.get(inst, 0.0) <= now
        if any(i.healthy for i in self.instances):
            self._available.set()
        else:
            self._available.clear()

    # --- the leader's work: refused here
    async def start(self) -> None:
        raise ReplicaFailed("this front door follows: the leader starts the instances")

    async def scale_to(self, count: int, drain_timeout: float) -> None:
        raise ReplicaFailed("this front door follows: the leader scales the instances")

    # --- the data plane
    def acquire_now(self) -> Instance | None:
        if self._refused:
            self._refresh()
        best = least_outstanding(self.instances, is_healthy)
        if best is not None:
            best.outstanding += 1
        return best

    async def acquire(self, wait: float) -> Instance | None:
        deadline = time.monotonic() + wait
        while True:
            inst = self.acquire_now()
            left = deadline - time.monotonic()
            if inst is not None or self.stopping or not self.reachable or left <= 0:
                return inst
            # Woken by the leader's next publication, or in a moment when a refusal expires.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._available.wait(), min(left, UNREACHABLE_FOR))

    def claim(self, replica: Replica) -> None:
        replica.outstanding += 1

    def release(self, replica: Replica) -> None:
        replica.outstanding -= 1

    async def invoke(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        return await self._hop.invoke(replica, headers, body, timeout)

    async def invoke_stream(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        return await self._hop.invoke_stream(replica, headers, size, chunks)

    def mark_unreachable(self, replica: Replica) -> None:
        self._refused[cast(Instance, replica)] = time.monotonic() + UNREACHABLE_FOR
        self._refresh()

    def recycle(self, replica: Replica) -> None:
        # Only the leader restarts an instance (its watchdog sees the hang too); here: out of rotation.
        self.mark_unreachable(replica)

    async def stop(self, drain_timeout: float) -> None:
        self.stopping = True
        for inst in self.instances:
            self._forget(inst)
        self.instances = []
        self._available.set()  # waiters return None at once
