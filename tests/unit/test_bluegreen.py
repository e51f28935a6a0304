"""Blue/green UpdateEndpoint (controllers/bluegreen.py) through the reconciler, over a real store,
a real router and a fake backend: the traffic steps of ALL_AT_ONCE / CANARY / LINEAR, baking,
rollback on an alarm, a failed green fleet or the execution timeout, TerminationWaitInSeconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.controllers import bluegreen
from modelhost.resources.endpoint import EndpointRecord, EndpointStatus
from modelhost.resources.stats import FleetStats
from tests.unit import fakes
from tests.unit.fakes import Env

S = EndpointStatus
V = "AllTraffic"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setattr(bluegreen, "BAKE_TICK", 0.01)
    yield from fakes.env_fixture(tmp_path, stop_grace=4.0)


def policy(routing: dict[str, Any], alarms: list[str] = (), **bg: Any) -> dict[str, Any]:  # type: ignore[assignment]
    out: dict[str, Any] = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, **bg}}
    if alarms:
        out["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return out


async def start_update(env: Env, deployment_config: dict[str, Any] | None, green_count: int = 4) -> EndpointRecord:
    """An InService endpoint on cfg-blue (2 x model 'blue'), then UpdateEndpoint to cfg-green."""
    env.insert(fakes.record("ep", fakes.snapshot("cfg-blue", [fakes.variant(V, "blue", count=2)])))
    await env.pass_once()
    rec = env.load("ep")
    assert rec is not None and rec.status is S.IN_SERVICE
    green = fakes.snapshot("cfg-green", [fakes.variant(V, "green", count=green_count)])
    return env.save(
        rec,
        status=S.UPDATING,
        deployment=fakes.with_deployment(
            rec, pending=green, pending_policy=deployment_config, last_deployment_config=deployment_config
        ),
    )


class Shifts:
    """Wraps BlueGreen.bake: records (green_share, bake seconds) at each step and can act while baking."""

    def __init__(self, env: Env, during: Callable[[list[FleetStats]], None] | None = None) -> None:
        self.env = env
        self.steps: list[tuple[float, float]] = []
        self.views: list[dict[str, Any]] = []
        self.during = during
        self.original = env.reconciler.bluegreen.bake
        env.reconciler.bluegreen.bake = self.bake  # type: ignore[method-assign]

    async def bake(self, seconds: float, rules: Any, stats: list[FleetStats], deadline: float | None) -> str | None:
        route = self.env.router.routes["ep"]
        assert route.green is not None
        assert route.green.by_name[V].fleet is self.env.backend.fleet("green", V)
        assert route.by_name[V].fleet is self.env.backend.fleet("blue", V)  # blue stays the live route
        self.steps.append((route.green_share, seconds))
        self.views.append(
            {
                "pending": self.env.reconciler.running.pending_view("ep"),
                "serving_fleet": self.env.reconciler.running.fleet("ep", V),
                "blue_weight": self.env.reconciler.running.variant_view("ep")[V].current_weight,
            }
        )
        if self.during is not None:
            self.during(stats)
        return await self.original(seconds, rules, stats, deadline)

    @property
    def shares(self) -> list[float]:
        return [s for s, _ in self.steps]


def assert_green_live(env: Env, deployment_config: dict[str, Any] | None) -> None:
    blue, green = env.backend.fleet("blue", V), env.backend.fleet("green", V)
    route = env.router.routes["ep"]
    assert route.green is None
    assert route.by_name[V].fleet is green
    running = env.reconciler.running.get("ep")
    assert running is not None and running.pending is None and running.fleets[V] is green
    assert env.reconciler.running.fleet("ep", V) is green
    rec = env.load("ep")
    assert rec is not None
    assert rec.status is S.IN_SERVICE and rec.failure_reason is None
    assert rec.config_name == "cfg-green"
    assert rec.deployment.current.config_name == "cfg-green"
    assert rec.deployment.current.variants[V].count == 4
    assert rec.deployment.pending is None and rec.deployment.pending_policy is None
    assert rec.deployment.last_deployment_config == deployment_config
    assert blue.stop_calls == [4.0]  # drained with settings.stop_grace
    assert not green.stopped


def assert_rolled_back(env: Env, reason: str) -> EndpointRecord:
    blue = env.backend.fleet("blue", V)
    route = env.router.routes["ep"]
    assert route.by_name[V].fleet is blue
    assert route.green is None and route.green_share == 0.0
    assert not blue.stopped
    assert all(f.stopped for f in env.backend.fleets_of("green"))
    running = env.reconciler.running.get("ep")
    assert running is not None and running.pending is None and running.fleets[V] is blue
    rec = env.load("ep")
    assert rec is not None
    assert rec.status is S.IN_SERVICE
    assert rec.failure_reason is not None and reason in rec.failure_reason
    assert rec.config_name == "cfg-blue" and rec.deployment.current.config_name == "cfg-blue"
    assert rec.deployment.pending is None and rec.deployment.pending_policy is None
    return rec


# --- shifting


@pytest.mark.parametrize(
    ("routing", "shares"),
    [
        ({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0.02}, [1.0]),
        (
            {"Type": "CANARY", "WaitIntervalInSeconds": 0.02, "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1}},
            [0.25, 1.0],
        ),
        (
            {"Type": "CANARY", "WaitIntervalInSeconds": 0.02, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}},
            [0.5, 1.0],
        ),
        (
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 0.02,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
            },
            [0.25, 0.5, 0.75, 1.0],
        ),
        (
            {"Type": "LINEAR", "WaitIntervalInSeconds": 0.02, "LinearStepSize": {"Type": "INSTANCE_COUNT", "Value": 2}},
            [0.5, 1.0],
        ),
    ],
    ids=["all-at-once", "canary-count", "canary-percent", "linear-percent", "linear-count"],
)
def test_traffic_shifts_in_steps_then_green_goes_live(env: Env, routing: dict[str, Any], shares: list[float]) -> None:
    async def body() -> None:
        config = policy(routing)
        await start_update(env, config)
        shifts = Shifts(env)
        started = time.monotonic()
        await env.pass_once()
        elapsed = time.monotonic() - started

        assert shifts.shares == pytest.approx(shares)
        assert [b for _, b in shifts.steps] == [0.02] * len(shares)
        assert elapsed >= 0.02 * len(shares) * 0.9  # each step baked
        for view in shifts.views:
            assert view["pending"][V].statuses[0]["Status"] == "Baking"
            assert view["serving_fleet"] is None  # the autoscaler keeps off a fleet mid-update
        # DescribeEndpoint's blue CurrentWeight shrinks by what green receives.
        assert [v["blue_weight"] for v in shifts.views] == pytest.approx([1.0 - s for s in shares])
        assert_green_live(env, config)
        # Green was started with the new config's counts and model.
        green_requests = [r for r in env.backend.requests if fakes.model_name_of(r.model) == "green"]
        assert [r.count for r in green_requests] == [4]

    asyncio.run(body())


def test_update_without_policy_shifts_everything_at_once_without_baking(env: Env) -> None:
    async def body() -> None:
        await start_update(env, None)
        shifts = Shifts(env)
        await env.pass_once()
        assert shifts.steps == [(1.0, 0.0)]
        assert_green_live(env, None)

    asyncio.run(body())


def test_old_fleet_stops_only_after_termination_wait(env: Env) -> None:
    async def body() -> None:
        await start_update(
            env, policy({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, TerminationWaitInSeconds=0.3)
        )
        blue = env.backend.fleet("blue", V)
        env.sync()

        def switched() -> bool:
            rec = env.load("ep")
            return rec is not None and rec.config_name == "cfg-green"

        await fakes.eventually(switched)
        switched_at = time.monotonic()
        # Green serves, blue is kept for the termination wait.
        assert env.router.routes["ep"].by_name[V].fleet is env.backend.fleet("green", V)
        assert not blue.stopped
        await asyncio.sleep(0.1)
        assert not blue.stopped
        await env.reconciler.wait_idle()
        assert blue.stop_calls == [4.0]
        assert time.monotonic() - switched_at >= 0.25

    asyncio.run(body())


# --- rollback


def test_alarm_while_baking_rolls_back_to_blue(env: Env) -> None:
    async def body() -> None:
        routing = {
            "Type": "CANARY",
            "WaitIntervalInSeconds": 5,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        }
        await start_update(env, policy(routing, alarms=["Invocation5XXErrors > 0"]))

        def fail_later(stats: list[FleetStats]) -> None:
            async def bump() -> None:
                await asyncio.sleep(0.05)
                stats[0].requests += 3
                stats[0].errors_5xx += 1

            asyncio.get_running_loop().create_task(bump())

        shifts = Shifts(env, during=fail_later)
        started = time.monotonic()
        await env.pass_once()
        assert time.monotonic() - started < 2.0  # the alarm cut the 5 s bake short
        assert shifts.shares == [0.25]  # never went past the canary
        rec = assert_rolled_back(env, "Invocation5XXErrors > 0")
        assert "alarm" in (rec.failure_reason or "")
        assert env.backend.fleet("green", V).stop_calls == [4.0]

    asyncio.run(body())


def test_alarm_counts_only_green_errors_since_baking_began(env: Env) -> None:
    async def body() -> None:
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0.1}
        await start_update(env, policy(routing, alarms=["Invocation5XXErrors > 0"]))

        def noise(stats: list[FleetStats]) -> None:
            stats[0].errors_5xx += 5  # before the bake takes its baseline: not counted
            env.backend.fleet("blue", V).stats.errors_5xx += 5  # blue's errors are not green's

        shifts = Shifts(env, during=noise)
        await env.pass_once()
        assert shifts.shares == [1.0]
        assert_green_live(env, policy(routing, alarms=["Invocation5XXErrors > 0"]))

    asyncio.run(body())


@pytest.mark.parametrize("failure", ["deploy", "start"])
def test_green_that_fails_to_start_rolls_back(env: Env, failure: str) -> None:
    async def body() -> None:
        if failure == "deploy":
            env.backend.deploy_failures["green"] = "Unsupported image fake.example/green:1"
        else:
            env.backend.start_failures["green"] = "instance AllTraffic/0 failed its health check"
        await start_update(env, policy({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}))
        shifts = Shifts(env)
        await env.pass_once()
        assert shifts.steps == []  # no traffic ever moved
        rec = assert_rolled_back(env, "The new endpoint configuration failed to deploy")
        detail = "Unsupported image" if failure == "deploy" else "failed its health check"
        assert detail in (rec.failure_reason or "")

    asyncio.run(body())


def test_execution_timeout_rolls_back(env: Env) -> None:
    async def body() -> None:
        routing = {
            "Type": "LINEAR",
            "WaitIntervalInSeconds": 0.1,
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        }
        await start_update(env, policy(routing, MaximumExecutionTimeoutInSeconds=0.15))
        shifts = Shifts(env)
        await env.pass_once()
        assert 1 <= len(shifts.steps) < 4 and shifts.shares[0] == 0.25
        assert_rolled_back(env, "MaximumExecutionTimeoutInSeconds")

    asyncio.run(body())


# --- restarts mid-update


def test_restart_while_rolling_back_restores_blue_and_finishes_rollback(env: Env) -> None:
    async def body() -> None:
        blue = fakes.snapshot("cfg-blue", [fakes.variant(V, "blue", count=2)])
        green = fakes.snapshot("cfg-green", [fakes.variant(V, "green", count=4)])
        env.insert(fakes.record("ep", blue, status=S.ROLLING_BACK, pending=green))
        await env.pass_once()  # the old fleet comes back first
        assert env.router.routes["ep"].by_name[V].fleet is env.backend.fleet("blue", V)
        rec = env.load("ep")
        assert rec is not None and rec.status is S.ROLLING_BACK
        await env.pass_once()  # then the rollback completes
        assert env.backend.fleets_of("green") == []
        assert_rolled_back(env, "interrupted by a server restart")

    asyncio.run(body())


def test_restart_while_updating_restores_blue_then_runs_the_update(env: Env) -> None:
    async def body() -> None:
        config = policy({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0})
        blue = fakes.snapshot("cfg-blue", [fakes.variant(V, "blue", count=2)])
        green = fakes.snapshot("cfg-green", [fakes.variant(V, "green", count=4)])
        env.insert(
            fakes.record(
                "ep", blue, status=S.UPDATING, pending=green, pending_policy=config, last_deployment_config=config
            )
        )
        await env.pass_once()
        assert env.backend.fleets_of("green") == []
        await env.pass_once()
        assert_green_live(env, config)

    asyncio.run(body())


def test_shutdown_during_termination_wait_stops_the_old_fleets(env: Env) -> None:
    async def body() -> None:
        await start_update(
            env, policy({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, TerminationWaitInSeconds=30)
        )
        env.sync()

        def switched() -> bool:
            rec = env.load("ep")
            return rec is not None and rec.config_name == "cfg-green"

        await fakes.eventually(switched)
        await env.reconciler.shutdown()
        assert env.backend.fleet("green", V).stopped
        assert env.backend.fleet("blue", V).stopped  # its instances must not outlive the server

    asyncio.run(body())
