"""Blue/green policy as pure functions (resources/rollout.py): the traffic steps of a
DeploymentConfig, its validation, and the rollback alarm rules on FleetStats."""

from __future__ import annotations

from typing import Any

import pytest

from modelhost.resources.rollout import (
    AlarmRule,
    InvalidAlarm,
    TrafficStep,
    alarm_rules,
    traffic_steps,
    validate_deployment_config,
)
from modelhost.resources.stats import FleetStats


def bg(routing: dict[str, Any], alarms: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing}}
    if alarms is not None:
        out["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return out


def canary(kind: str, value: float, wait: float = 0) -> dict[str, Any]:
    return bg({"Type": "CANARY", "WaitIntervalInSeconds": wait, "CanarySize": {"Type": kind, "Value": value}})


def linear(kind: str, value: float, wait: float = 0) -> dict[str, Any]:
    return bg({"Type": "LINEAR", "WaitIntervalInSeconds": wait, "LinearStepSize": {"Type": kind, "Value": value}})


def shares(steps: list[TrafficStep]) -> list[float]:
    return [s.share for s in steps]


# --- traffic steps


@pytest.mark.parametrize("config", [None, {}, {"AutoRollbackConfiguration": {"Alarms": []}}])
def test_no_policy_is_all_at_once_without_baking(config: dict[str, Any] | None) -> None:
    assert traffic_steps(config, 4) == [TrafficStep(1.0, 0.0)]


def test_all_at_once_bakes_for_the_wait_interval() -> None:
    assert traffic_steps(bg({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}), 2) == [TrafficStep(1.0, 600.0)]
    assert traffic_steps(bg({"Type": "ALL_AT_ONCE"}), 2) == [TrafficStep(1.0, 0.0)]


@pytest.mark.parametrize(
    ("config", "green", "expected"),
    [
        (canary("INSTANCE_COUNT", 1), 4, [0.25, 1.0]),
        (canary("INSTANCE_COUNT", 2), 4, [0.5, 1.0]),
        (canary("INSTANCE_COUNT", 9), 4, [1.0, 1.0]),  # more than the fleet: capped at all of it
        (canary("INSTANCE_COUNT", 1), 0, [0.0, 1.0]),  # an empty green fleet does not divide by zero
        (canary("CAPACITY_PERCENT", 10), 4, [0.1, 1.0]),
        (canary("CAPACITY_PERCENT", 150), 4, [1.0, 1.0]),
    ],
)
def test_canary_steps(config: dict[str, Any], green: int, expected: list[float]) -> None:
    steps = traffic_steps(config, green)
    assert shares(steps) == pytest.approx(expected)


def test_every_step_bakes_for_the_wait_interval() -> None:
    assert [s.bake for s in traffic_steps(canary("CAPACITY_PERCENT", 20, wait=30), 5)] == [30.0, 30.0]
    assert [s.bake for s in traffic_steps(linear("CAPACITY_PERCENT", 25, wait=7), 5)] == [7.0] * 4


@pytest.mark.parametrize(
    ("config", "green", "expected"),
    [
        (linear("CAPACITY_PERCENT", 25), 4, [0.25, 0.5, 0.75, 1.0]),
        (linear("CAPACITY_PERCENT", 50), 4, [0.5, 1.0]),  # exactly two steps, not three
        (linear("CAPACITY_PERCENT", 30), 4, [0.3, 0.6, 0.9, 1.0]),  # the last step is capped at 100%
        (linear("CAPACITY_PERCENT", 10), 4, [0.1 * i for i in range(1, 11)]),
        (linear("INSTANCE_COUNT", 1), 3, [1 / 3, 2 / 3, 1.0]),
        (linear("INSTANCE_COUNT", 2), 4, [0.5, 1.0]),
    ],
)
def test_linear_steps(config: dict[str, Any], green: int, expected: list[float]) -> None:
    steps = traffic_steps(config, green)
    assert shares(steps) == pytest.approx(expected)
    assert steps[-1].share == 1.0  # always ends with everything on green
    assert shares(steps) == sorted(shares(steps))


# --- validation


@pytest.mark.parametrize(
    "config",
    [
        None,
        {},
        bg({"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}),
        canary("CAPACITY_PERCENT", 50),
        canary("INSTANCE_COUNT", 2),  # 2 of 4 = 50%
        linear("CAPACITY_PERCENT", 10),
        linear("CAPACITY_PERCENT", 50),
        linear("INSTANCE_COUNT", 1),  # 1 of 4 = 25%
        bg({"Type": "ALL_AT_ONCE"}, alarms=["Invocation5XXErrors > 0", "ModelLatency.p99 > 500000"]),
    ],
)
def test_valid_deployment_configs(config: dict[str, Any] | None) -> None:
    assert validate_deployment_config(config, 4) is None


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (bg({"Type": "CANARY"}), "CanarySize is required"),
        (canary("CAPACITY_PERCENT", 51), "CanarySize must be at most 50%"),
        (canary("INSTANCE_COUNT", 3), "CanarySize must be at most 50%"),
        (bg({"Type": "LINEAR"}), "LinearStepSize is required"),
        (linear("CAPACITY_PERCENT", 5), "between 10% and 50%"),
        (linear("CAPACITY_PERCENT", 60), "between 10% and 50%"),
        (linear("INSTANCE_COUNT", 3), "between 10% and 50%"),  # 3 of 4
        (bg({"Type": "ALL_AT_ONCE"}, alarms=["CPUUtilization > 80"]), "CPUUtilization > 80"),
    ],
)
def test_invalid_deployment_configs(config: dict[str, Any], fragment: str) -> None:
    reason = validate_deployment_config(config, 4)
    assert reason is not None and fragment in reason


def test_alarms_are_validated_even_without_a_blue_green_policy() -> None:
    reason = validate_deployment_config({"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "nope"}]}}, 1)
    assert reason is not None and "'nope'" in reason


def test_linear_step_relative_to_a_small_fleet() -> None:
    # One instance of 20 is 5%: too small a step; of 10 it is 10%: allowed.
    assert validate_deployment_config(linear("INSTANCE_COUNT", 1), 20) is not None
    assert validate_deployment_config(linear("INSTANCE_COUNT", 1), 10) is None


# --- alarm rules


@pytest.mark.parametrize(
    ("name", "metric", "stat", "op", "threshold"),
    [
        ("Invocation5XXErrors > 0", "Invocation5XXErrors", "avg", ">", 0.0),
        ("Invocation4XXErrors >= 10", "Invocation4XXErrors", "avg", ">=", 10.0),
        ("Invocation5XXErrorRate > 0.05", "Invocation5XXErrorRate", "avg", ">", 0.05),
        ("Invocations < 1", "Invocations", "avg", "<", 1.0),
        ("ModelLatency.p99 > 500000", "ModelLatency", "p99", ">", 500000.0),
        ("ModelLatency.p99.9<=2000", "ModelLatency", "p99.9", "<=", 2000.0),
        ("ModelLatency.max > 1", "ModelLatency", "max", ">", 1.0),
        ("  ModelLatency > 7  ", "ModelLatency", "avg", ">", 7.0),
    ],
)
def test_alarm_rule_parse(name: str, metric: str, stat: str, op: str, threshold: float) -> None:
    rule = AlarmRule.parse(name)
    assert (rule.metric, rule.stat, rule.op, rule.threshold) == (metric, stat, op, threshold)
    assert rule.name == name


@pytest.mark.parametrize(
    "name",
    [
        "CPUUtilization > 80",
        "Invocation5XXErrors = 0",
        "Invocation5XXErrors > -1",
        "Invocation5XXErrors >",
        "Invocation5XXErrors > 0 and more",
        "ModelLatency.p100 > 1",
        "ModelLatency.median > 1",
        "my-cloudwatch-alarm",
        "",
    ],
)
def test_alarm_rule_parse_refuses_what_it_cannot_evaluate(name: str) -> None:
    with pytest.raises(InvalidAlarm) as exc:
        AlarmRule.parse(name)
    assert repr(name) in str(exc.value)


def test_alarm_rules_of_a_deployment_config() -> None:
    assert alarm_rules(None) == []
    assert alarm_rules({"AutoRollbackConfiguration": {}}) == []
    rules = alarm_rules(bg({"Type": "ALL_AT_ONCE"}, alarms=["Invocations < 1", "Invocation5XXErrors > 2"]))
    assert [(r.metric, r.threshold) for r in rules] == [("Invocations", 1.0), ("Invocation5XXErrors", 2.0)]


def stats(requests: int = 0, e4: int = 0, e5: int = 0, latencies: list[tuple[float, float]] = ()) -> FleetStats:  # type: ignore[assignment]
    s = FleetStats(requests=requests, errors_4xx=e4, errors_5xx=e5)
    s.latencies.extend(latencies)
    return s


def test_counts_are_relative_to_the_baseline_and_summed_over_fleets() -> None:
    a, b = stats(requests=100, e5=10), stats(requests=50, e5=1)
    baseline = {id(a): (90, 0, 9)}  # b has no baseline: counted from zero
    rule = AlarmRule.parse("Invocation5XXErrors > 1")
    assert rule.value([a, b], baseline, 0.0) == 2.0
    assert rule.tripped([a, b], baseline, 0.0)
    assert not rule.tripped([a], baseline, 0.0)  # 1 is not > 1
    assert AlarmRule.parse("Invocations < 1").value([a, b], baseline, 0.0) == 60.0


def test_threshold_comparison_operators() -> None:
    s = stats(requests=10, e4=10)
    assert AlarmRule.parse("Invocation4XXErrors >= 10").tripped([s], {}, 0.0)
    assert not AlarmRule.parse("Invocation4XXErrors > 10").tripped([s], {}, 0.0)
    assert AlarmRule.parse("Invocation4XXErrors <= 10").tripped([s], {}, 0.0)
    assert not AlarmRule.parse("Invocation4XXErrors < 10").tripped([s], {}, 0.0)


def test_rates_need_requests() -> None:
    rule = AlarmRule.parse("Invocation5XXErrorRate > 0.05")
    idle = stats()
    assert rule.value([idle], {}, 0.0) is None
    assert not rule.tripped([idle], {}, 0.0)
    assert rule.value([stats(requests=20, e5=2)], {}, 0.0) == pytest.approx(0.1)
    assert rule.tripped([stats(requests=20, e5=2)], {}, 0.0)
    assert not rule.tripped([stats(requests=100, e5=5)], {}, 0.0)  # 0.05 is not > 0.05
    assert AlarmRule.parse("Invocation4XXErrorRate > 0.2").value([stats(requests=10, e4=3)], {}, 0.0) == 0.3


def test_no_traffic_trips_an_invocations_alarm() -> None:
    assert AlarmRule.parse("Invocations < 1").tripped([stats()], {}, 0.0)
    assert not AlarmRule.parse("Invocations < 1").tripped([stats(requests=1)], {}, 0.0)


def test_latency_statistics_over_the_baking_period() -> None:
    since = 1000.0
    old = [(since - 1, 1e9)]  # before the bake began: ignored
    values = [(since + i, float(i)) for i in range(1, 101)]  # 1..100 µs
    s = stats(latencies=old + values)
    assert AlarmRule.parse("ModelLatency > 0").value([s], {}, since) == pytest.approx(50.5)
    assert AlarmRule.parse("ModelLatency.avg > 0").value([s], {}, since) == pytest.approx(50.5)
    assert AlarmRule.parse("ModelLatency.max > 0").value([s], {}, since) == 100.0
    assert AlarmRule.parse("ModelLatency.p50 > 0").value([s], {}, since) == 50.0
    assert AlarmRule.parse("ModelLatency.p99 > 0").value([s], {}, since) == 99.0
    assert AlarmRule.parse("ModelLatency.p99.9 > 0").value([s], {}, since) == 100.0
    assert AlarmRule.parse("ModelLatency.p99 > 98").tripped([s], {}, since)
    assert not AlarmRule.parse("ModelLatency.p99 > 99").tripped([s], {}, since)


def test_latency_alarm_without_samples_does_not_trip() -> None:
    s = stats(latencies=[(1.0, 1e9)])
    rule = AlarmRule.parse("ModelLatency.max > 0")
    assert rule.value([s], {}, 2.0) is None
    assert not rule.tripped([s], {}, 2.0)
