"""Front doors on one Ray cluster: a follower calls the leader's Serve applications by name.

The leader publishes each fleet's application name and how many of its replicas run; a follower
connects to the same cluster (as a driver, Serve already started by the leader) and gets the
application's handle with ``serve.get_app_handle``. Requests then take the path the leader's take
(``RayFleet.invoke``); only the leader deploys, scales and deletes applications.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from modelhost.backends.attachment import UNREACHABLE
from modelhost.backends.handle import FleetHandle, Replica, ReplicaFailed, ReplicaResponse, StreamedReply
from modelhost.backends.ray.fleet import RayFleet, ServeApp
from modelhost.config import Settings
from modelhost.resources.front_doors import FleetLocator, ReplicaAddress
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog

log = logging.getLogger("modelhost.backends.ray")
RAY = "ray"


class RayAttachment:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connected = False

    def locate(self, fleet: FleetHandle) -> FleetLocator:
        if not isinstance(fleet, RayFleet):
            return UNREACHABLE
        healthy = fleet.healthy_count
        return FleetLocator(
            RAY, tuple(ReplicaAddress(slot.name, fleet.app.name, slot.index < healthy) for slot in fleet.slots)
        )

    def _connect(self) -> None:
        os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")  # as the leader's driver (backends/ray/__init__)
        import ray

        if not ray.is_initialized():
            ray.init(
                address=self.settings.ray_address, log_to_driver=False, namespace="modelhost", configure_logging=False
            )
        self._connected = True

    def attach(self, variant: str, locator: FleetLocator, log: EndpointLog) -> AttachedRayFleet:
        if locator.kind == RAY and not self._connected:
            self._connect()  # once, on this front door's first route
        return AttachedRayFleet(variant, locator, log, self.settings.ping_interval)


class AttachedRayFleet:
    """A FleetHandle over the leader's Serve application (backends/handle.py)."""

    def __init__(self, variant: str, locator: FleetLocator, log: EndpointLog, interval: float) -> None:
        self.variant = variant
        self.log = log
        self.stats = FleetStats()
        self.crash_loops: dict[str, str] = {}
        self._app = ""
        self._handle: Any = None
        self._view = RayFleet(
            ServeApp("", variant, "", None, {}, {}, 0.0, 0.0, 0.0), variant, 0, log, status_interval=interval
        )
        self.update(locator)

    @property
    def desired(self) -> int:
        return self._view.desired

    @desired.setter
    def desired(self, value: int) -> None:  # the leader owns the count
        pass

    @property
    def size(self) -> int:
        return self._view.size

    @property
    def healthy_count(self) -> int:
        return self._view.healthy_count

    def replicas(self) -> Sequence[Replica]:
        return self._view.replicas()

    def update(self, locator: FleetLocator) -> None:
        replicas = locator.replicas if locator.kind == RAY else ()
        app = replicas[0].address if replicas else ""
        if app != self._app:
            self._handle = None
            if app:
                from ray import serve

                try:
                    self._handle = serve.get_app_handle(app)
                except Exception as exc:  # deleted meanwhile: the next publication says what replaced it
                    log.warning("Serve application %s is not reachable: %s", app, exc)
            self._app = app if self._handle is not None else ""
        self._view.adopt(self._handle, len(replicas), sum(1 for r in replicas if r.healthy))

    async def start(self) -> None:
        raise ReplicaFailed("this front door follows: the leader deploys the application")

    async def scale_to(self, count: int, drain_timeout: float) -> None:
        raise ReplicaFailed("this front door follows: the leader scales the application")

    def acquire_now(self) -> Replica | None:
        return self._view.acquire_now()

    async def acquire(self, wait: float) -> Replica | None:
        return await self._view.acquire(wait)

    def claim(self, replica: Replica) -> None:
        self._view.claim(replica)

    def release(self, replica: Replica) -> None:
        self._view.release(replica)

    async def invoke(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        return await self._view.invoke(replica, headers, body, timeout)

    async def invoke_stream(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        return await self._view.invoke_stream(replica, headers, size, chunks)

    def mark_unreachable(self, replica: Replica) -> None:
        self._view.mark_unreachable(replica)

    def recycle(self, replica: Replica) -> None:
        pass  # Serve's health check replaces a hung replica (the leader's fleet logs it)

    async def stop(self, drain_timeout: float) -> None:
        self._view.adopt(None, 0, 0)  # forget the handle; the application stays the leader's
