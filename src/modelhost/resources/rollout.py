"""Blue/green traffic shifting: the steps of a DeploymentConfig and the rollback alarms.

SageMaker's auto-rollback watches CloudWatch alarms. modelhost has no CloudWatch, so an alarm
*name* is a rule on our own metrics of the new (green) fleet, evaluated over the requests it
served since the current baking period began:

    Invocation5XXErrors > 0          count of 5xx (or no answer) from the model
    Invocation4XXErrors >= 10        count of 4xx from the model
    Invocation5XXErrorRate > 0.05    5xx / invocations
    Invocation4XXErrorRate > 0.2     4xx / invocations
    Invocations < 1                  invocations served by the green fleet
    ModelLatency.p99 > 500000        model latency in µs; stat p<NN>, avg or max (default avg)

An alarm name that is not such a rule is refused by UpdateEndpoint with a ValidationException.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from modelhost.resources.stats import FleetStats

ALARM_RULE = re.compile(
    r"^(?P<metric>Invocation5XXErrors|Invocation4XXErrors|Invocation5XXErrorRate|Invocation4XXErrorRate"
    r"|Invocations|ModelLatency)(?:\.(?P<stat>p\d{1,2}(?:\.\d+)?|avg|max))?\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<threshold>\d+(?:\.\d+)?)$"
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class InvalidAlarm(ValueError):
    pass


@dataclass(frozen=True)
class AlarmRule:
    name: str
    metric: str
    stat: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, name: str) -> AlarmRule:
        m = ALARM_RULE.match(name.strip())
        if m is None:
            raise InvalidAlarm(
                f"Alarm {name!r} is not a rule modelhost can evaluate. Use '<metric>[.<stat>] <op> <threshold>' "
                "with metric Invocation5XXErrors, Invocation4XXErrors, Invocation5XXErrorRate, "
                "Invocation4XXErrorRate, Invocations or ModelLatency (e.g. 'Invocation5XXErrors > 0', "
                "'ModelLatency.p99 > 500000')."
            )
        return cls(name, m["metric"], m["stat"] or "avg", m["op"], float(m["threshold"]))

    def value(
        self, stats: Iterable[FleetStats], baseline: dict[int, tuple[int, int, int]], since: float
    ) -> float | None:
        """The metric over the fleets since ``since`` (counts relative to ``baseline``)."""
        stats = list(stats)
        requests = e4 = e5 = 0
        for s in stats:
            r0, a0, b0 = baseline.get(id(s), (0, 0, 0))
            requests += s.requests - r0
            e4 += s.errors_4xx - a0
            e5 += s.errors_5xx - b0
        if self.metric == "Invocations":
            return float(requests)
        if self.metric == "Invocation5XXErrors":
            return float(e5)
        if self.metric == "Invocation4XXErrors":
            return float(e4)
        if self.metric == "Invocation5XXErrorRate":
            return e5 / requests if requests else None
        if self.metric == "Invocation4XXErrorRate":
            return e4 / requests if requests else None
        values = sorted(v for s in stats for t, v in s.latencies if t >= since)
        if not values:
            return None
        if self.stat == "avg":
            return sum(values) / len(values)
        if self.stat == "max":
            return values[-1]
        q = float(self.stat[1:]) / 100
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def tripped(self, stats: Iterable[FleetStats], baseline: dict[int, tuple[int, int, int]], since: float) -> bool:
        value = self.value(stats, baseline, since)
        return value is not None and OPERATORS[self.op](value, self.threshold)


def alarm_rules(deployment_config: dict | None) -> list[AlarmRule]:
    alarms = ((deployment_config or {}).get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    return [AlarmRule.parse(a["AlarmName"]) for a in alarms]


@dataclass(frozen=True)
class TrafficStep:
    share: float  # of all requests, sent to the green fleet
    bake: float  # seconds to watch the alarms after the shift


def _size_share(size: dict, green_instances: int) -> float:
    if size["Type"] == "INSTANCE_COUNT":
        return min(float(size["Value"]), float(green_instances)) / max(green_instances, 1)
    return min(float(size["Value"]), 100.0) / 100.0


def traffic_steps(deployment_config: dict | None, green_instances: int) -> list[TrafficStep]:
    """The shifts of a blue/green update. No policy means all at once with no baking."""
    policy = (deployment_config or {}).get("BlueGreenUpdatePolicy")
    if not policy:
        return [TrafficStep(1.0, 0.0)]
    routing = policy["TrafficRoutingConfiguration"]
    wait = float(routing.get("WaitIntervalInSeconds", 0))
    kind = routing["Type"]
    if kind == "CANARY":
        share = _size_share(routing["CanarySize"], green_instances)
        return [TrafficStep(share, wait), TrafficStep(1.0, wait)]
    if kind == "LINEAR":
        step = _size_share(routing["LinearStepSize"], green_instances)
        count = max(1, math.ceil(1.0 / step - 1e-9))
        return [TrafficStep(min(1.0, step * (i + 1)), wait) for i in range(count)]
    return [TrafficStep(1.0, wait)]


def validate_deployment_config(deployment_config: dict | None, green_instances: int) -> str | None:
    """A reason the policy cannot run, or None."""
    try:
        alarm_rules(deployment_config)
    except InvalidAlarm as exc:
        return str(exc)
    policy = (deployment_config or {}).get("BlueGreenUpdatePolicy")
    if not policy:
        return None
    routing = policy["TrafficRoutingConfiguration"]
    kind = routing["Type"]
    if kind == "CANARY":
        if "CanarySize" not in routing:
            return "TrafficRoutingConfiguration.CanarySize is required for CANARY traffic routing."
        if _size_share(routing["CanarySize"], green_instances) > 0.5:
            return "CanarySize must be at most 50% of the new fleet's capacity."
    if kind == "LINEAR":
        if "LinearStepSize" not in routing:
            return "TrafficRoutingConfiguration.LinearStepSize is required for LINEAR traffic routing."
        share = _size_share(routing["LinearStepSize"], green_instances)
        if not 0.1 - 1e-9 <= share <= 0.5 + 1e-9:
            return "LinearStepSize must be between 10% and 50% of the new fleet's capacity."
    return None


def now() -> float:
    return time.monotonic()
