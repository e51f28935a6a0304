"""The routing table shared through the database by front doors on one database.

``RoutePublisher`` (the leader): every live route of its router, each fleet located by the
backend's Attachment, written to ``front_door_routes`` when it changed. ``RouteRefresher`` (every
other front door): reads those rows and keeps its own router (and its DescribeEndpoint view) in step,
attached to the leader's replicas.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select

from modelhost.backends.attachment import AttachedHandle, Attachment
from modelhost.backends.handle import FleetHandle
from modelhost.controllers.running import Running, RunningEndpoints
from modelhost.hosting.affinity import ModelAffinity
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.hosting.serverless import ServerlessFleet
from modelhost.hosting.targets import VariantTargets
from modelhost.resources.front_doors import PublishedRoute, PublishedVariant
from modelhost.store import tables
from modelhost.store.db import MetadataStore
from modelhost.store.logs import EndpointLog


class RoutePublisher:
    def __init__(self, store: MetadataStore, router: Router, attachment: Attachment, running: RunningEndpoints) -> None:
        self.store = store
        self.router = router
        self.attachment = attachment
        self.running = running
        self.written: dict[str, str] = {}  # endpoint key -> the route JSON last written

    def published(self, route: EndpointRoute, config_name: str = "") -> PublishedRoute:
        return PublishedRoute(
            endpoint=route.name,
            variants=tuple(self._variant(v) for v in route.variants),
            shadow=self._variant(route.shadow) if route.shadow is not None else None,
            shadow_share=route.shadow_share,
            green=self.published(route.green) if route.green is not None else None,
            green_share=route.green_share,
            config_name=config_name,
        )

    def _variant(self, v: VariantRoute) -> PublishedVariant:
        fleet: FleetHandle = v.fleet.inner if isinstance(v.fleet, ServerlessFleet) else v.fleet
        return PublishedVariant(
            name=v.name,
            weight=v.weight,
            timeout=v.timeout,
            log_stream_arn=v.log_stream_arn,
            locator=self.attachment.locate(fleet),
            multi_model=v.targets.multi_model,
            pipeline=v.targets.pipeline,
            direct_hostnames=v.targets.direct_hostnames,
        )

    async def sync(self, first: bool = False) -> None:
        """Write what changed since the last call; ``first`` (just promoted): also remove the rows of
        endpoints that no longer exist (the rows of live ones are replaced as this leader routes them)."""
        now = {}
        for key, route in list(self.router.routes.items()):
            running = self.running.get(key)
            now[key.lower()] = self.published(route, running.config_name if running else "").to_json()
        changed = {k: v for k, v in now.items() if self.written.get(k) != v}
        gone = set(self.written) - set(now)
        if changed or gone or first:
            await asyncio.to_thread(self._write, changed, gone, first)
        self.written = now

    def _write(self, changed: dict[str, str], gone: set[str], first: bool) -> None:
        t = tables.front_door_routes
        stamp = time.time()
        with self.store.begin() as conn:
            versions = {key: version for key, version in conn.execute(select(t.c.name_key, t.c.version))}
            if first:
                live = {row[0] for row in conn.execute(select(tables.endpoints.c.name_key))}
                gone = gone | (set(versions) - live)
            if gone:
                conn.execute(delete(t).where(t.c.name_key.in_(sorted(gone))))
            for key, text in changed.items():
                conn.execute(delete(t).where(t.c.name_key == key))
                conn.execute(
                    t.insert().values(name_key=key, version=versions.get(key, 0) + 1, route=text, updated=stamp)
                )


@dataclass
class _Attached:
    text: str
    route: EndpointRoute
    fleets: dict[str, AttachedHandle] = field(default_factory=dict)  # "<level>:<variant>" -> handle


class RouteRefresher:
    def __init__(
        self,
        store: MetadataStore,
        router: Router,
        attachment: Attachment,
        running: RunningEndpoints,
        logs_dir: Path,
    ) -> None:
        self.store = store
        self.router = router
        self.attachment = attachment
        self.running = running
        self.logs_dir = logs_dir
        self.attached: dict[str, _Attached] = {}
        self._logs: dict[str, EndpointLog] = {}

    def _read(self) -> dict[str, str]:
        t = tables.front_door_routes
        with self.store.begin() as conn:
            return {key: route for key, route in conn.execute(select(t.c.name_key, t.c.route))}

    async def refresh(self) -> None:
        rows = await asyncio.to_thread(self._read)
        for key, text in rows.items():
            known = self.attached.get(key)
            if known is not None and known.text == text:
                continue
            pub = PublishedRoute.from_json(text)
            fleets = known.fleets if known is not None else {}
            used: dict[str, AttachedHandle] = {}
            route = self._route(pub, fleets, used, "live")
            for level_name, fleet in fleets.items():
                if level_name not in used:
                    await fleet.stop(0)
            self.attached[key] = _Attached(text, route, used)
            self.router.publish(route)
            self.running.by_key[key] = self._running(pub, route, used)
        for key in set(self.attached) - set(rows):
            await self._drop(key)

    def _route(
        self, pub: PublishedRoute, old: dict[str, AttachedHandle], used: dict[str, AttachedHandle], level: str
    ) -> EndpointRoute:
        route = EndpointRoute(pub.endpoint, [self._variant(pub, v, old, used, level) for v in pub.variants])
        if pub.shadow is not None:
            route.shadow = self._variant(pub, pub.shadow, old, used, "shadow")
            route.shadow_share = pub.shadow_share
        if pub.green is not None:
            route.green = self._route(pub.green, old, used, "green")
            route.green_share = pub.green_share
        return route

    def _variant(
        self,
        pub: PublishedRoute,
        v: PublishedVariant,
        old: dict[str, AttachedHandle],
        used: dict[str, AttachedHandle],
        level: str,
    ) -> VariantRoute:
        slot = f"{level}:{v.name}"
        fleet = old.get(slot)
        if fleet is not None:
            fleet.update(v.locator)
        else:
            fleet = self.attachment.attach(v.name, v.locator, self._log(pub.endpoint))
        used[slot] = fleet
        targets = VariantTargets(v.multi_model, v.pipeline, v.direct_hostnames)
        return VariantRoute(
            name=v.name,
            weight=v.weight,
            fleet=fleet,
            timeout=v.timeout,
            log_stream_arn=v.log_stream_arn,
            metrics=VariantMetrics.for_variant(pub.endpoint, v.name),
            targets=targets,
            affinity=ModelAffinity() if v.multi_model else None,
        )

    def _running(self, pub: PublishedRoute, route: EndpointRoute, used: dict[str, AttachedHandle]) -> Running:
        """DescribeEndpoint on this front door shows the leader's counts and weights."""
        live: dict[str, FleetHandle] = {s.split(":", 1)[1]: f for s, f in used.items() if not s.startswith("green:")}
        running = Running(pub.endpoint, pub.config_name, fleets=live, route=route)
        green = {s.split(":", 1)[1]: f for s, f in used.items() if s.startswith("green:")}
        if green and route.green is not None:
            running.pending = Running(pub.endpoint, "", fleets=dict(green), route=route.green)
        return running

    def _log(self, endpoint: str) -> EndpointLog:
        if endpoint not in self._logs:
            self._logs[endpoint] = EndpointLog(self.logs_dir, endpoint)
        return self._logs[endpoint]

    async def _drop(self, key: str) -> None:
        known = self.attached.pop(key)
        self.router.withdraw(known.route.name)
        running = self.running.by_key.get(key)
        if running is not None and running.route is known.route:
            self.running.by_key.pop(key, None)
        for fleet in known.fleets.values():
            await fleet.stop(0)

    async def detach_all(self, keep_routes: bool = False) -> list[EndpointRoute]:
        """Forget the leader's fleets. ``keep_routes`` (this front door was promoted and starts its own):
        the routes stay in the router, their fleets stopped (a request there is answered as no capacity,
        not as an unknown endpoint) until the reconciler publishes the new ones; returns them."""
        kept = []
        for key in list(self.attached):
            if keep_routes:
                known = self.attached.pop(key)
                self.running.by_key.pop(key, None)  # the reconciler restores what it finds not running
                for fleet in known.fleets.values():
                    await fleet.stop(0)
                kept.append(known.route)
            else:
                await self._drop(key)
        for endpoint_log in self._logs.values():
            endpoint_log.close()
        self._logs.clear()
        return kept
