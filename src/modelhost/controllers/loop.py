"""The one control loop: desired state (the metadata store) -> what runs.

Each pass reads the endpoints table once and hands the typed records to everything that follows
endpoints — the reconciler (fleets and routes) and the async queue (which endpoints take
InvokeEndpointAsync) — then lets the transform supervisor look at its jobs, and every
``autoscale_interval`` seconds runs the autoscaler. A pass runs when woken (every control-plane
change calls ``wake``) or every ``tick`` seconds; one failing part never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from modelhost.controllers.autoscaler import Autoscaler
from modelhost.controllers.reconciler import Reconciler
from modelhost.controllers.transforms import TransformSupervisor
from modelhost.resources.endpoint import EndpointRecord
from modelhost.store import endpoints as rows
from modelhost.store.db import MetadataStore

if TYPE_CHECKING:
    from modelhost.controllers.front_doors import FrontDoors

log = logging.getLogger("modelhost.controllers")

EndpointWatcher = Callable[[list[EndpointRecord]], Awaitable[None]]


class JobSupervisor(Protocol):
    """Something that looks at its own table every pass (monitoring schedules, processing jobs)."""

    async def scan(self) -> None: ...

    async def shutdown(self) -> None: ...


class Wakeup:
    """Asks the control loop for a pass now; safe to call from any thread (the control plane runs in
    worker threads). Made before the loop so the control plane can be built first."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.event.set)


class ControlLoop:
    def __init__(
        self,
        store: MetadataStore,
        reconciler: Reconciler,
        transforms: TransformSupervisor,
        autoscaler: Autoscaler,
        *,
        tick: float,
        autoscale_interval: float,
        endpoint_watchers: tuple[EndpointWatcher, ...] = (),
        wakeup: Wakeup | None = None,
        supervisors: tuple[JobSupervisor, ...] = (),
        doors: FrontDoors | None = None,
    ) -> None:
        # Front doors sharing one database (controllers/front_doors.py): only the leader runs the passes.
        self.doors = doors
        self.supervisors = supervisors  # after the transform supervisor, in order
        self.store = store
        self.reconciler = reconciler
        self.transforms = transforms
        self.autoscaler = autoscaler
        self.tick = tick
        self.autoscale_interval = autoscale_interval
        self.endpoint_watchers = endpoint_watchers
        self.wake = wakeup or Wakeup()  # thread-safe: ask for a pass now
        self._main: asyncio.Task[None] | None = None
        self._next_autoscale = 0.0

    async def start(self) -> None:
        self.wake.loop = asyncio.get_running_loop()
        self._next_autoscale = time.monotonic() + self.autoscale_interval
        if self.doors is not None:
            await self.doors.start()
        self._main = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.run_once()
            # Sleep until woken, the next tick, or the autoscaler's next turn, whichever comes first.
            wait = max(0.0, min(self.tick, self._next_autoscale - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.event.wait(), wait)
            self.wake.event.clear()

    def _load(self) -> list[EndpointRecord]:
        with self.store.begin() as conn:
            return rows.load_all(self.store, conn)

    async def run_once(self) -> None:
        if self.doors is not None and not await self.doors.lead():
            try:
                await self.doors.follow(await asyncio.to_thread(self._load))
            except Exception:
                log.exception("follower pass failed")
            return
        try:
            records = await asyncio.to_thread(self._load)
            self.reconciler.sync(records)
            for watch in self.endpoint_watchers:
                await watch(records)
        except Exception:  # keep reconciling whatever one pass hit
            log.exception("endpoint pass failed")
        try:
            await self.transforms.scan()
        except Exception:
            log.exception("transform supervisor pass failed")
        for supervisor in self.supervisors:
            try:
                await supervisor.scan()
            except Exception:
                log.exception("%s pass failed", type(supervisor).__name__)
        if time.monotonic() >= self._next_autoscale:
            self._next_autoscale = time.monotonic() + self.autoscale_interval
            try:
                await self.autoscaler.evaluate_once()
            except Exception:
                log.exception("autoscaling pass failed")

    async def shutdown(self) -> None:
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if self.doors is not None:
            await self.doors.stop_sharing()  # followers keep the last routes while this one stops
        await self.transforms.shutdown()
        for supervisor in self.supervisors:
            await supervisor.shutdown()
        await self.reconciler.shutdown()
        if self.doors is not None:
            await self.doors.shutdown()  # the lease last: a successor starts once this one's instances are gone
