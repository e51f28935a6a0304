"""Target-tracking autoscaling (controllers/autoscaler.py) over a real metadata store holding the
scalable targets and policies (registered through control/autoscaling.py), with a fake fleet's
counters as the metric source and a fake clock. A decision is written as
UpdateEndpointWeightsAndCapacities (the reconciler then scales the fleet) plus a scaling activity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelhost.control import autoscaling
from modelhost.controllers import autoscaler as autoscaler_module
from modelhost.controllers.autoscaler import Autoscaler
from modelhost.controllers.running import Running
from modelhost.resources.endpoint import EndpointStatus
from tests.unit import fakes
from tests.unit.fakes import Env, FakeFleet

S = EndpointStatus
V = "AllTraffic"
RESOURCE = f"endpoint/ep/variant/{V}"
WINDOW = 60.0


class Clock:
    def __init__(self) -> None:
        self.t = 10_000.0

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    # Only the autoscaler's view of time: the event loop keeps the real clock.
    monkeypatch.setattr(autoscaler_module, "time", SimpleNamespace(monotonic=c.monotonic, time=time.time))
    return c


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from fakes.env_fixture(tmp_path)


def ref(**extra: Any) -> dict[str, Any]:
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": RESOURCE,
        "ScalableDimension": autoscaling.DIMENSION,
        **extra,
    }


def tracking(target: float, metric: str | None = None, **config: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"TargetValue": target, **config}
    if metric is None:
        spec["PredefinedMetricSpecification"] = {"PredefinedMetricType": autoscaling.PREDEFINED}
    else:
        spec["CustomizedMetricSpecification"] = {
            "MetricName": metric,
            "Namespace": "AWS/SageMaker",
            "Statistic": "Sum",
        }
    return spec


class Scaling:
    """An InService endpoint 'ep' with one variant, its target and policies, and an Autoscaler."""

    def __init__(self, env: Env, clock: Clock) -> None:
        self.env = env
        self.clock = clock
        self.ctx = env.ctx()
        self.backlog: int | None = None
        self.scaler = Autoscaler(self.ctx, env.reconciler.running, WINDOW, backlog=lambda _e: self.backlog)

    async def deploy(self, count: int, min_capacity: int, max_capacity: int, **target: Any) -> FakeFleet:
        self.env.insert(fakes.record("ep", fakes.snapshot("cfg", [fakes.variant(V, "model", count=count)])))
        await self.env.pass_once()
        rec = self.env.load("ep")
        assert rec is not None and rec.status is S.IN_SERVICE
        autoscaling.register_scalable_target(
            self.ctx, ref(MinCapacity=min_capacity, MaxCapacity=max_capacity, **target)
        )
        return self.fleet

    @property
    def fleet(self) -> FakeFleet:
        return self.env.backend.fleets[-1]

    def policy(self, name: str, config: dict[str, Any]) -> None:
        autoscaling.put_scaling_policy(
            self.ctx,
            ref(PolicyName=name, PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration=config),
        )

    async def tick(self, requests: int = 0, errors_5xx: int = 0, dt: float = WINDOW) -> None:
        """``requests`` more invocations over the next ``dt`` seconds, then one evaluation."""
        stats = self.fleet.stats
        stats.requests += requests
        stats.errors_5xx += errors_5xx
        self.clock.t += dt
        await self.scaler.evaluate_once()

    async def first(self) -> None:
        await self.scaler.evaluate_once()  # the first sample of the window

    def desired(self) -> tuple[EndpointStatus, int, bool]:
        rec = self.env.load("ep")
        assert rec is not None
        return rec.status, rec.deployment.current.variants[V].count, rec.deployment.capacity_change

    def activities(self) -> list[dict[str, Any]]:
        out = autoscaling.describe_scaling_activities(
            self.ctx, {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE}
        )
        return out["ScalingActivities"]

    async def apply(self) -> None:
        """The reconciler applies the change (as the control loop's next pass would)."""
        await self.env.pass_once()
        status, count, _ = self.desired()
        assert status is S.IN_SERVICE
        assert self.fleet.size == count


@pytest.fixture
def scaling(env: Env, clock: Clock) -> Scaling:
    return Scaling(env, clock)


def run(coro: Any) -> None:
    asyncio.run(coro)


# --- scale out


def test_scale_out_over_target_is_written_as_a_capacity_update_and_activity(scaling: Scaling) -> None:
    async def body() -> None:
        fleet = await scaling.deploy(count=1, min_capacity=1, max_capacity=4)
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=250)  # 250 invocations per minute on one instance

        assert scaling.desired() == (S.UPDATING, 3, True)  # ceil(1 * 250 / 100)
        (activity,) = scaling.activities()
        assert activity["StatusCode"] == "Successful"
        assert activity["Description"] == "Setting desired instance count to 3."
        assert "AlarmHigh" in activity["Cause"] and "ipi" in activity["Cause"]
        assert "1 -> 3" in activity["Details"]
        assert activity["ResourceId"] == RESOURCE
        assert fleet.scale_calls == []  # the autoscaler only writes desired state

        await scaling.apply()
        assert fleet.scale_calls == [(3, scaling.env.settings.stop_grace)]

    run(body())


def test_scale_out_is_clamped_to_max_capacity(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=4)
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=5000)
        assert scaling.desired() == (S.UPDATING, 4, True)

    run(body())


def test_at_max_capacity_nothing_is_written(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=2, min_capacity=1, max_capacity=2)
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=5000)
        assert scaling.desired() == (S.IN_SERVICE, 2, False)
        assert scaling.activities() == []

    run(body())


@pytest.mark.parametrize(("requests", "expected"), [(100, 1), (101, 2)])
def test_scale_out_only_when_strictly_over_target(scaling: Scaling, requests: int, expected: int) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=4)
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=requests)
        assert scaling.desired()[1] == expected

    run(body())


def test_any_policy_over_target_scales_out_to_the_largest_ask(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=2, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0))  # 50 per instance: wants fewer
        scaling.policy("errors", tracking(2.0, "Invocation5XXErrors"))  # 6 per minute: wants 2 * 6 / 2 = 6
        await scaling.first()
        await scaling.tick(requests=100, errors_5xx=6)
        assert scaling.desired() == (S.UPDATING, 6, True)
        (activity,) = scaling.activities()
        assert "errors" in activity["Cause"]

    run(body())


# --- scale in


@pytest.mark.parametrize(
    ("per_instance", "expected"),
    [(92, 20), (85, 17)],  # 92 is under the target but not under 90% of it: no scale-in
)
def test_scale_in_only_under_ninety_percent_of_target(scaling: Scaling, per_instance: int, expected: int) -> None:
    async def body() -> None:
        await scaling.deploy(count=20, min_capacity=1, max_capacity=20)
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=20 * per_instance)
        assert scaling.desired()[1] == expected
        if expected < 20:
            (activity,) = scaling.activities()
            assert "AlarmLow" in activity["Cause"]

    run(body())


def test_scale_in_is_clamped_to_min_capacity(scaling: Scaling) -> None:
    async def body() -> None:
        fleet = await scaling.deploy(count=4, min_capacity=2, max_capacity=4)
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=0)
        assert scaling.desired() == (S.UPDATING, 2, True)
        await scaling.apply()
        assert fleet.scale_calls == [(2, scaling.env.settings.stop_grace)]
        assert fleet.size == 2

    run(body())


def test_scale_in_needs_every_policy_to_agree(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=4, min_capacity=1, max_capacity=8)
        scaling.policy("ipi", tracking(100.0))  # 40 per instance: would go to 2
        scaling.policy("errors", tracking(10.0, "Invocation5XXErrors"))  # 10 per minute: at target
        await scaling.first()
        await scaling.tick(requests=160, errors_5xx=10)
        assert scaling.desired() == (S.IN_SERVICE, 4, False)
        assert scaling.activities() == []
        # Once the second policy is under its target too, the most conservative ask wins.
        await scaling.tick(requests=160, errors_5xx=0)
        assert scaling.desired() == (S.UPDATING, 2, True)

    run(body())


def test_scale_in_takes_the_largest_count_any_policy_asks_for(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=6, min_capacity=1, max_capacity=8)
        scaling.policy("ipi", tracking(100.0))  # 10 per instance: ceil(6 * 10 / 100) = 1
        scaling.policy("invocations", tracking(100.0, "Invocations"))  # 60 per minute: ceil(6 * 60 / 100) = 4
        await scaling.first()
        await scaling.tick(requests=60)
        assert scaling.desired()[1] == 4

    run(body())


def test_disable_scale_in(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=3, min_capacity=1, max_capacity=6)
        scaling.policy("ipi", tracking(100.0, DisableScaleIn=True))
        await scaling.first()
        await scaling.tick(requests=0)
        assert scaling.desired() == (S.IN_SERVICE, 3, False)
        await scaling.tick(requests=3 * 150)  # scaling out still works
        assert scaling.desired() == (S.UPDATING, 5, True)

    run(body())


@pytest.mark.parametrize("suspended", ["DynamicScalingOutSuspended", "DynamicScalingInSuspended"])
def test_suspended_state(scaling: Scaling, suspended: str) -> None:
    async def body() -> None:
        await scaling.deploy(count=2, min_capacity=1, max_capacity=6, SuspendedState={suspended: True})
        scaling.policy("ipi", tracking(100.0))
        await scaling.first()
        await scaling.tick(requests=2 * 200)  # over target
        if suspended == "DynamicScalingOutSuspended":
            assert scaling.desired() == (S.IN_SERVICE, 2, False)
            await scaling.tick(requests=0)  # scale-in is not suspended
            assert scaling.desired() == (S.UPDATING, 1, True)
        else:
            assert scaling.desired() == (S.UPDATING, 4, True)
            await scaling.apply()
            await scaling.tick(requests=0)
            assert scaling.desired() == (S.IN_SERVICE, 4, False)

    run(body())


# --- cooldowns and data


def test_scale_out_cooldown(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0, ScaleOutCooldown=120))
        await scaling.first()
        await scaling.tick(requests=200)
        assert scaling.desired()[1] == 2
        await scaling.apply()
        await scaling.tick(requests=2 * 200)  # 60 s after the scale-out: still cooling down
        assert scaling.desired() == (S.IN_SERVICE, 2, False)
        await scaling.tick(requests=2 * 200)  # 120 s after
        assert scaling.desired() == (S.UPDATING, 4, True)
        assert [a["Description"] for a in scaling.activities()] == [
            "Setting desired instance count to 4.",
            "Setting desired instance count to 2.",
        ]

    run(body())


def test_scale_in_cooldown_counts_from_the_last_scaling_of_either_kind(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0, ScaleOutCooldown=0, ScaleInCooldown=100))
        await scaling.first()
        await scaling.tick(requests=300)
        assert scaling.desired()[1] == 3
        await scaling.apply()
        await scaling.tick(requests=0)  # 60 s after the scale-out
        assert scaling.desired() == (S.IN_SERVICE, 3, False)
        await scaling.tick(requests=0)  # 120 s after
        assert scaling.desired() == (S.UPDATING, 1, True)

    run(body())


def test_no_decision_without_half_a_window_of_samples(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0))
        await scaling.tick(requests=10_000, dt=0)  # a single sample
        await scaling.tick(requests=10_000, dt=WINDOW * 0.4)  # two, but under half the window
        assert scaling.desired() == (S.IN_SERVICE, 1, False)
        await scaling.tick(requests=10_000, dt=WINDOW * 0.2)
        assert scaling.desired() == (S.UPDATING, 10, True)

    run(body())


def test_model_latency_policy(scaling: Scaling) -> None:
    async def body() -> None:
        fleet = await scaling.deploy(count=2, min_capacity=1, max_capacity=10)
        scaling.policy("latency", tracking(100_000.0, "ModelLatency"))
        await scaling.first()
        t = scaling.clock.t
        fleet.stats.latencies.extend([(t - 1, 10_000_000.0), (t + 1, 200_000.0), (t + 2, 300_000.0)])
        await scaling.tick(requests=2)
        # Average of the window's latencies (the older one is not in it): 250 ms vs 100 ms target.
        assert scaling.desired()[1] == 5

    run(body())


def test_endpoint_not_running_or_mid_update_is_skipped(scaling: Scaling) -> None:
    async def body() -> None:
        fleet = await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0))
        running = scaling.env.reconciler.running.get("ep")
        assert running is not None
        running.pending = Running("ep", "cfg-next")  # a blue/green update is in progress
        await scaling.first()
        await scaling.tick(requests=1000)
        assert scaling.desired() == (S.IN_SERVICE, 1, False)
        running.pending = None
        scaling.env.reconciler.running.by_key.clear()  # not running at all
        await scaling.tick(requests=1000)
        assert scaling.desired() == (S.IN_SERVICE, 1, False)
        assert scaling.activities() == []
        assert fleet.scale_calls == []

    run(body())


def test_a_target_without_policies_never_scales(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        await scaling.first()
        await scaling.tick(requests=1000)
        assert scaling.desired() == (S.IN_SERVICE, 1, False)

    run(body())


def test_decision_is_deferred_while_the_endpoint_is_being_updated(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0))
        rec = scaling.env.load("ep")
        assert rec is not None
        scaling.env.save(rec, status=S.UPDATING)
        await scaling.first()
        await scaling.tick(requests=300)
        status, count, _ = scaling.desired()
        assert (status, count) == (S.UPDATING, 1)  # nothing written
        assert scaling.activities() == []

    run(body())


def test_a_deferred_decision_is_retried_on_the_next_pass(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=1, min_capacity=1, max_capacity=10)
        scaling.policy("ipi", tracking(100.0, ScaleOutCooldown=300))
        rec = scaling.env.load("ep")
        assert rec is not None
        busy = scaling.env.save(rec, status=S.UPDATING)
        await scaling.first()
        await scaling.tick(requests=300)  # deferred: the endpoint is being updated
        scaling.env.save(busy, status=S.IN_SERVICE)
        await scaling.tick(requests=150, dt=WINDOW / 2)  # "try again next pass": 300 a minute
        assert scaling.desired()[1] == 3

    run(body())


def test_async_backlog_wakes_a_variant_at_zero_instances(scaling: Scaling) -> None:
    async def body() -> None:
        await scaling.deploy(count=0, min_capacity=0, max_capacity=3)
        scaling.policy("backlog", tracking(5.0, "ApproximateBacklogSizePerInstance"))
        await scaling.first()
        assert scaling.desired() == (S.IN_SERVICE, 0, False)  # nothing waiting
        scaling.backlog = 7
        await scaling.tick(dt=1)  # at once, without a metric window
        assert scaling.desired() == (S.UPDATING, 1, True)
        (activity,) = scaling.activities()
        assert activity["Description"] == "Setting desired instance count to 1."

    run(body())
