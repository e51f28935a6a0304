"""Front doors on one database: the lease, promotion and lease loss, and the routes a leader publishes
as a follower rebuilds them (a real SQLite store; fakes of the backend's Attachment)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from modelhost.backends.attachment import UNREACHABLE
from modelhost.backends.handle import FleetHandle, FleetRequest
from modelhost.controllers.front_doors import FrontDoors
from modelhost.controllers.leadership import FileLease, lease_for
from modelhost.controllers.route_sharing import RoutePublisher, RouteRefresher
from modelhost.controllers.running import Running, RunningEndpoints
from modelhost.controllers.traffic_sharing import TrafficCollector, TrafficReporter
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.hosting.serverless import ServerlessFleet
from modelhost.resources.front_doors import FleetLocator, PublishedRoute, ReplicaAddress
from modelhost.resources.serverless import ServerlessConfig
from modelhost.resources.stats import FleetStats
from modelhost.store import tables
from modelhost.store.logs import EndpointLog
from tests.unit.fakes import FakeFleet, make_store


class FakeAttachment:
    """Locates a FakeFleet by its replica names; attaches a FakeFleet with those replicas."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.attached: list[FakeFleet] = []

    def locate(self, fleet: FleetHandle) -> FleetLocator:
        if not isinstance(fleet, FakeFleet):
            return UNREACHABLE
        return FleetLocator("fake", tuple(ReplicaAddress(r.name, f"sock-{r.name}", True) for r in fleet.replicas()))

    def attach(self, variant: str, locator: FleetLocator, log: EndpointLog) -> AttachedFake:
        fleet = AttachedFake(fake_request(variant, len(locator.replicas), log))
        fleet.locators.append(locator)
        self.attached.append(fleet)
        return fleet


class AttachedFake(FakeFleet):
    def __init__(self, request: FleetRequest) -> None:
        super().__init__(request)
        self.locators: list[FleetLocator] = []

    def update(self, locator: FleetLocator) -> None:
        self.locators.append(locator)


def fake_request(variant: str, count: int, log: EndpointLog) -> FleetRequest:
    return FleetRequest(owner="ep", variant=variant, model={}, count=count, log=log, label=variant)


def variant(name: str, weight: float, fleet: FleetHandle) -> VariantRoute:
    return VariantRoute(name, weight, fleet, 60.0, "arn:log", VariantMetrics.for_variant("ep", name))


class FakeLease:
    def __init__(self, free: bool = False) -> None:
        self.free = free
        self.held = False
        self.description = "fake lease"
        self.released = False

    def try_acquire(self) -> bool:
        self.held = self.held or self.free
        return self.held

    def still_held(self) -> bool:
        return self.held

    def release(self) -> None:
        self.released = True


def test_file_lease_is_exclusive_until_released(tmp_path: Path) -> None:
    first, second = FileLease(tmp_path / "db.leader"), FileLease(tmp_path / "db.leader")
    assert first.try_acquire() and first.try_acquire()  # held: asking again is fine
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire() and second.still_held()
    second.release()
    assert not second.still_held()


def test_lease_kind_follows_the_database_url(tmp_path: Path) -> None:
    lease = lease_for(f"sqlite:///{tmp_path / 'modelhost.db'}")
    assert isinstance(lease, FileLease) and lease.path == tmp_path / "modelhost.db.leader"
    pg = lease_for("postgresql://u@127.0.0.1:1/db")  # no connection until asked
    assert "advisory lock" in pg.description


@pytest.fixture
def parts(tmp_path: Path) -> tuple[RoutePublisher, RouteRefresher, Router, Router, FakeAttachment, list[FakeFleet]]:
    store = make_store(tmp_path)
    log = EndpointLog(tmp_path / "logs", "ep")
    attachment = FakeAttachment(tmp_path / "logs")
    leader_router, follower_router = Router(0.05), Router(0.05)
    leader_running = RunningEndpoints()
    fleets = [FakeFleet(fake_request("blue", 2, log)), FakeFleet(fake_request("red", 1, log))]
    leader_running.by_key["ep"] = Running("ep", "cfg-1")
    publisher = RoutePublisher(store, leader_router, attachment, leader_running)
    refresher = RouteRefresher(store, follower_router, attachment, RunningEndpoints(), tmp_path / "logs")
    return publisher, refresher, leader_router, follower_router, attachment, fleets


def test_a_follower_rebuilds_the_leaders_routes(parts: tuple) -> None:
    asyncio.run(_a_follower_rebuilds_the_leaders_routes(parts))


async def _a_follower_rebuilds_the_leaders_routes(parts: tuple) -> None:
    publisher, refresher, leader_router, follower_router, attachment, fleets = parts
    blue, red = fleets
    route = EndpointRoute("ep", [variant("blue", 3.0, blue), variant("red", 1.0, red)])
    route.green, route.green_share = EndpointRoute("ep", [variant("blue", 1.0, blue)]), 0.25
    leader_router.publish(route)
    await publisher.sync(first=True)
    await refresher.refresh()

    got = follower_router.routes["ep"]
    assert [(v.name, v.weight) for v in got.variants] == [("blue", 3.0), ("red", 1.0)]
    assert got.green is not None and got.green_share == 0.25
    first = attachment.attached[0]
    assert [r.address for r in first.locators[0].replicas] == ["sock-blue/0", "sock-blue/1"]
    view = refresher.running.by_key["ep"]
    assert view.config_name == "cfg-1" and view.pending is not None  # DescribeEndpoint's view here
    assert view.fleets["blue"] is first

    # A weight change: the same attached fleets are kept and updated, not attached again.
    leader_router.publish(EndpointRoute("ep", [variant("blue", 1.0, blue), variant("red", 1.0, red)]))
    await publisher.sync()
    await refresher.refresh()
    assert [v.weight for v in follower_router.routes["ep"].variants] == [1.0, 1.0]
    assert len(attachment.attached) == 3  # blue, red, green:blue; nothing new
    assert len(first.locators) == 2
    green_side = attachment.attached[2]
    assert green_side.stop_calls == [0]  # the finished blue/green's fleet let go

    # Withdrawn on the leader: gone from the follower too.
    leader_router.withdraw("ep")
    await publisher.sync()
    await refresher.refresh()
    assert "ep" not in follower_router.routes and "ep" not in refresher.running.by_key
    assert first.stop_calls == [0]


def test_unchanged_routes_are_not_written_again(parts: tuple) -> None:
    asyncio.run(_unchanged_routes_are_not_written_again(parts))


async def _unchanged_routes_are_not_written_again(parts: tuple) -> None:
    publisher, refresher, leader_router, _, _, fleets = parts
    leader_router.publish(EndpointRoute("ep", [variant("blue", 1.0, fleets[0])]))
    await publisher.sync()
    before = rows(publisher)
    await publisher.sync()
    assert rows(publisher) == before
    assert PublishedRoute.from_json(before["ep"][1]).variants[0].locator.kind == "fake"
    leader_router.publish(EndpointRoute("ep", [variant("blue", 2.0, fleets[0])]))
    await publisher.sync()
    assert rows(publisher)["ep"][0] == before["ep"][0] + 1  # the version moves on a change


def rows(publisher: RoutePublisher) -> dict[str, tuple[int, str]]:
    t = tables.front_door_routes
    with publisher.store.begin() as conn:
        return {k: (v, r) for k, v, r in conn.execute(select(t.c.name_key, t.c.version, t.c.route))}


def test_promotion_keeps_routes_until_replaced_and_runs_the_hooks(parts: tuple) -> None:
    asyncio.run(_promotion_keeps_routes_until_replaced_and_runs_the_hooks(parts))


async def _promotion_keeps_routes_until_replaced_and_runs_the_hooks(parts: tuple) -> None:
    publisher, refresher, leader_router, follower_router, _, fleets = parts
    leader_router.publish(EndpointRoute("ep", [variant("blue", 1.0, fleets[0])]))
    await publisher.sync()
    lease = FakeLease(free=False)
    promoted: list[str] = []

    async def hook() -> None:
        promoted.append("async queue")

    doors = FrontDoors(lease, publisher, refresher, on_promote=(hook,), interval=0.01)
    await doors.start()
    try:
        assert not doors.leader and "ep" in follower_router.routes  # read before the first request
        assert not await doors.lead()
        lease.free = True  # the leader died
        assert await doors.lead() and promoted == ["async queue"]
        kept = follower_router.routes["ep"]  # still routed (answered as no capacity, not unknown)
        assert "ep" not in refresher.running.by_key  # so the reconciler restores it
        assert isinstance(kept.variants[0].fleet, AttachedFake) and kept.variants[0].fleet.stop_calls == [0]
    finally:
        await doors.shutdown()
    assert lease.released


def test_a_leader_that_loses_its_lease_stops(parts: tuple) -> None:
    asyncio.run(_a_leader_that_loses_its_lease_stops(parts))


async def _a_leader_that_loses_its_lease_stops(parts: tuple) -> None:
    publisher, refresher, *_ = parts
    lease = FakeLease(free=True)
    lost: list[bool] = []
    doors = FrontDoors(lease, publisher, refresher, on_lost=lambda: lost.append(True), interval=0.01)
    await doors.start()
    try:
        assert doors.leader
        lease.held = False  # its PostgreSQL connection broke
        assert not await doors.lead()
        assert lost == [True]
    finally:
        await doors.shutdown()


def test_follower_pass_runs_the_data_plane_watchers(parts: tuple) -> None:
    asyncio.run(_follower_pass_runs_the_data_plane_watchers(parts))


async def _follower_pass_runs_the_data_plane_watchers(parts: tuple) -> None:
    publisher, refresher, *_ = parts
    seen: list[Sequence[object]] = []

    async def watch(records: list) -> None:
        seen.append(records)

    doors = FrontDoors(FakeLease(), publisher, refresher, follower_watchers=(watch,))
    await doors.follow([])
    await asyncio.sleep(0)
    assert seen == [[]]


def test_followers_requests_count_on_the_leaders_fleets(parts: tuple, tmp_path: Path) -> None:
    asyncio.run(_followers_requests_count_on_the_leaders_fleets(parts, tmp_path))


async def _followers_requests_count_on_the_leaders_fleets(parts: tuple, tmp_path: Path) -> None:
    publisher, refresher, leader_router, follower_router, _, fleets = parts
    blue, red = fleets
    log = EndpointLog(tmp_path / "logs", "ep")
    idle = ServerlessFleet(
        FakeFleet(fake_request("idle", 1, log)), "ep", ServerlessConfig(1024, 2, 0), max_payload=None
    )
    route = EndpointRoute("ep", [variant("blue", 1.0, blue), variant("red", 1.0, red)])
    route.shadow = variant("idle", 1.0, idle)
    leader_router.publish(route)
    await publisher.sync(first=True)
    await refresher.refresh()
    reporter, collector = TrafficReporter(publisher.store, refresher), TrafficCollector(publisher.store, leader_router)
    attached = refresher.attached["ep"].fleets
    await reporter.report()
    await collector.collect()  # the first read of a row is its baseline
    attached["live:blue"].stats.requests += 5  # what the follower's router counts as it serves
    attached["live:blue"].stats.errors_4xx += 1
    attached["shadow:idle"].stats.requests += 2
    blue.stats.requests += 3  # the leader's own requests
    idle.last_activity -= 100
    await reporter.report()
    await collector.collect()
    assert blue.stats.snapshot() == (8, 1, 0) and red.stats.snapshot() == (0, 0, 0)
    assert idle.stats.requests == 2 and time.monotonic() - idle.last_activity < 5  # not idle: used over there
    await collector.collect()  # nothing new: nothing added twice
    assert blue.stats.snapshot() == (8, 1, 0)

    # The follower attached anew (its counters restart): only what it counts from then on is added.
    attached["live:blue"].stats = FleetStats(requests=2)
    await reporter.report()
    await collector.collect()
    assert blue.stats.requests == 10

    # A new leader meets the rows for the first time: a baseline, not a burst for the autoscaler.
    fresh = TrafficCollector(publisher.store, leader_router)
    await fresh.collect()
    assert blue.stats.requests == 10
    # Promoted, the follower's rows go (its own requests are then counted by its own fleets).
    await asyncio.to_thread(reporter.forget)
    with publisher.store.begin() as conn:
        assert conn.execute(select(tables.front_door_traffic)).fetchall() == []
    log.close()
