"""Requests served by followers, counted on the leader: its autoscaler, rollback alarms and
serverless idle timer act on every front door's traffic, not only on its own.

``TrafficReporter`` (a follower, each sharing round): the request and error counters of each fleet
it is attached to, cumulative, one row per (front door, endpoint, slot) in ``front_door_traffic``.
``TrafficCollector`` (the leader, each round): how much every row grew since it last read it, added
to the counters of its own fleet in that slot; a serverless variant used through a follower counts
as active (it is not scaled to zero under the follower's requests). Latency samples stay per door.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

from sqlalchemy import delete, select

from modelhost.backends.handle import FleetHandle
from modelhost.controllers.route_sharing import RouteRefresher
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.hosting.serverless import ServerlessFleet
from modelhost.store import tables
from modelhost.store.db import MetadataStore

STALE_SECONDS = 300.0  # rows of a front door gone this long are removed by the leader
Counts = tuple[int, int, int]  # requests, 4xx, 5xx


class TrafficReporter:
    def __init__(self, store: MetadataStore, refresher: RouteRefresher) -> None:
        self.store = store
        self.refresher = refresher
        self.door = uuid.uuid4().hex  # a new id per process: a restarted door's counters start at 0
        self.written: dict[tuple[str, str], Counts] = {}

    async def report(self) -> None:
        now = {
            (key, slot): fleet.stats.snapshot()
            for key, attached in self.refresher.attached.items()
            for slot, fleet in attached.fleets.items()
        }
        if now != self.written:
            await asyncio.to_thread(self._write, now)
            self.written = now

    def _write(self, counts: dict[tuple[str, str], Counts]) -> None:
        t = tables.front_door_traffic
        stamp = time.time()
        with self.store.begin() as conn:
            conn.execute(delete(t).where(t.c.door == self.door))
            for (key, slot), (requests, e4, e5) in counts.items():
                conn.execute(
                    t.insert().values(
                        door=self.door,
                        name_key=key,
                        slot=slot,
                        requests=requests,
                        errors_4xx=e4,
                        errors_5xx=e5,
                        updated=stamp,
                    )
                )

    def forget(self) -> None:
        """Promoted: this door's own counters now live in its own fleets; its rows go."""
        self.written = {}
        with self.store.begin() as conn:
            conn.execute(delete(tables.front_door_traffic).where(tables.front_door_traffic.c.door == self.door))


class TrafficCollector:
    def __init__(self, store: MetadataStore, router: Router) -> None:
        self.store = store
        self.router = router
        self.seen: dict[tuple[str, str, str], Counts] = {}  # (door, endpoint key, slot) -> counts last read
        self.purged = 0.0

    async def collect(self) -> None:
        rows = await asyncio.to_thread(self._read)
        for door, key, slot, counts in rows:
            last = self.seen.get((door, key, slot))
            self.seen[(door, key, slot)] = counts
            if last is None:  # first read (or this door just became leader): a baseline, not a burst
                continue
            # a counter that went down belongs to a fleet the follower attached anew
            grown = tuple(c - p if c >= p else c for c, p in zip(counts, last, strict=True))
            if any(grown):
                fleet = _fleet(self.router.routes.get(key), slot)
                if fleet is not None:
                    add(fleet, grown[0], grown[1], grown[2])

    def _read(self) -> list[tuple[str, str, str, Counts]]:
        t = tables.front_door_traffic
        with self.store.begin() as conn:
            if time.monotonic() - self.purged > 60:  # a write, so rarely (a lone door reads an empty table)
                self.purged = time.monotonic()
                conn.execute(delete(t).where(t.c.updated < time.time() - STALE_SECONDS))
            return [
                (door, key, slot, (int(r), int(e4), int(e5)))
                for door, key, slot, r, e4, e5 in conn.execute(
                    select(t.c.door, t.c.name_key, t.c.slot, t.c.requests, t.c.errors_4xx, t.c.errors_5xx)
                )
            ]


def add(fleet: FleetHandle, requests: int, errors_4xx: int, errors_5xx: int) -> None:
    fleet.stats.requests += requests
    fleet.stats.errors_4xx += errors_4xx
    fleet.stats.errors_5xx += errors_5xx
    if requests and isinstance(fleet, ServerlessFleet):
        fleet.last_activity = time.monotonic()


def _fleet(route: EndpointRoute | None, slot: str) -> FleetHandle | None:
    """The leader's fleet in a follower's slot ("live:<variant>", "shadow:<variant>", "green:<variant>")."""
    if route is None or ":" not in slot:
        return None
    level, name = slot.split(":", 1)
    for variant in _level(route, level):
        if variant.name == name:
            return variant.fleet
    return None


def _level(route: EndpointRoute, level: str) -> Iterator[VariantRoute]:
    if level == "live":
        yield from route.variants
    elif level == "shadow" and route.shadow is not None:
        yield route.shadow
    elif level == "green" and route.green is not None:
        yield from route.green.variants
