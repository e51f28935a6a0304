"""One front door among several on one database: leader or follower, and the switch between them.

Every front door serves the data plane and the control-plane API (writes go to the database).
The one holding the Lease (controllers/leadership.py) leads: the control loop runs its reconciler,
autoscaler, schedules and supervisors, and its routes are published for the others every
``interval`` seconds. The others follow: their routing table is refreshed from the published rows
(controllers/route_sharing.py) at the same pace, and each control-loop pass they try to take the
lease. A follower that gets it is promoted: it forgets the leader's fleets and runs ``on_promote``
(the async queue's recovery and dispatcher), and its reconciler then restores every endpoint as a
server restarted after kill -9 does. A leader that loses its lease (its PostgreSQL connection
broke) exits at once: another front door leads by then, and two reconcilers must never act.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Gauge

from modelhost.controllers.leadership import Lease
from modelhost.controllers.route_sharing import RoutePublisher, RouteRefresher
from modelhost.controllers.traffic_sharing import TrafficCollector, TrafficReporter
from modelhost.hosting.metrics import REGISTRY
from modelhost.hosting.router import EndpointRoute
from modelhost.resources.endpoint import EndpointRecord

log = logging.getLogger("modelhost.front_doors")

LEADER = Gauge(
    "modelhost_front_door_leader",
    "1 while this front door leads (runs the control loop's reconciler and supervisors), else 0",
    registry=REGISTRY,
)
LOST_LEASE_EXIT = 75  # EX_TEMPFAIL: a process supervisor restarts it as a follower


def _exit_now() -> None:
    os._exit(LOST_LEASE_EXIT)


Hook = Callable[[], Awaitable[None]]
Watcher = Callable[[list[EndpointRecord]], Awaitable[None]]


class FrontDoors:
    def __init__(
        self,
        lease: Lease,
        publisher: RoutePublisher,
        refresher: RouteRefresher,
        *,
        traffic: tuple[TrafficReporter, TrafficCollector] | None = None,
        on_promote: Sequence[Hook] = (),
        follower_watchers: Sequence[Watcher] = (),
        interval: float = 0.5,
        on_lost: Callable[[], None] = _exit_now,
    ) -> None:
        self.lease = lease
        self.publisher = publisher
        self.refresher = refresher
        self.router = refresher.router
        self.traffic = traffic  # followers' request counts, summed on the leader (controllers/traffic_sharing.py)
        self.on_promote = tuple(on_promote)
        self.follower_watchers = tuple(follower_watchers)
        self.interval = interval
        self.on_lost = on_lost
        self.leader = False
        self._share: asyncio.Task[None] | None = None
        self._kept: list[EndpointRoute] = []  # the old leader's routes, until this one's replace them
        self._switch = asyncio.Lock()  # a refresh in progress finishes before a promotion starts
        LEADER.set(0)

    async def start(self) -> None:
        """Take the lease if free (the first front door leads from its first pass), then share routes.
        A follower reads the routes before it answers its first request (this runs in the lifespan)."""
        if not await self.lead():
            try:
                await self.refresher.refresh()
            except Exception:
                log.exception("could not read the published routes")
        self._share = asyncio.create_task(self._share_routes())

    async def lead(self) -> bool:
        """Each control-loop pass: True when this front door leads (promoted now if the lease was free)."""
        if self.leader:
            if not await asyncio.to_thread(self.lease.still_held):
                log.critical("lost the leader's %s: exiting so that two leaders never act", self.lease.description)
                LEADER.set(0)
                self.on_lost()
                self.leader = False
            return self.leader
        try:
            got = await asyncio.to_thread(self.lease.try_acquire)
        except Exception:
            log.exception("could not try the leader's %s", self.lease.description)
            return False
        if got:
            async with self._switch:
                await self._promote()
        return got

    async def _promote(self) -> None:
        log.warning("this front door (pid %d) now leads (%s)", os.getpid(), self.lease.description)
        self._kept = await self.refresher.detach_all(keep_routes=True)
        if self.traffic is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.traffic[0].forget)
        self.leader = True
        LEADER.set(1)
        for hook in self.on_promote:
            try:
                await hook()
            except Exception:
                log.exception("promotion step failed")
        with contextlib.suppress(Exception):
            await self.publisher.sync(first=True)

    async def leader_pass(self, records: list[EndpointRecord]) -> None:
        """After a promotion: withdraw the old leader's routes of endpoints the reconciler will not restore
        (deleted, failed, still creating); the others it replaces as it deploys them."""
        if not self._kept:
            return
        restorable = {r.name for r in records if r.status.restorable}
        still = []
        for route in self._kept:
            if self.router.routes.get(route.name) is not route:
                continue  # replaced by this leader's own
            if route.name in restorable:
                still.append(route)
            else:
                self.router.withdraw(route.name)
        self._kept = still

    async def follow(self, records: list[EndpointRecord]) -> None:
        """A follower's pass: what the data plane needs from the endpoint rows (async, capture)."""
        for watch in self.follower_watchers:
            try:
                await watch(records)
            except Exception:
                log.exception("follower pass failed")

    async def _share_routes(self) -> None:
        while True:
            try:
                if self.leader:
                    await self.publisher.sync()
                    if self.traffic is not None:
                        await self.traffic[1].collect()
                else:
                    async with self._switch:
                        if not self.leader:
                            await self.refresher.refresh()
                            if self.traffic is not None:
                                await self.traffic[0].report()
            except Exception:  # a database hiccup: the next round retries
                log.exception("route sharing failed")
            await asyncio.sleep(self.interval)

    async def stop_sharing(self) -> None:
        if self._share is not None:
            self._share.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._share
            self._share = None

    async def shutdown(self) -> None:
        await self.stop_sharing()
        if not self.leader:
            await self.refresher.detach_all()
        await asyncio.to_thread(self.lease.release)
        LEADER.set(0)
