"""Target-tracking autoscaling of variant instance counts (Application Auto Scaling).

Every ``MODELHOST_AUTOSCALE_INTERVAL`` seconds each registered target's metric is computed over
the last ``MODELHOST_AUTOSCALE_WINDOW`` seconds from the fleet's in-memory counters:

    SageMakerVariantInvocationsPerInstance / InvocationsPerInstance  invocations per minute per instance
    Invocations                                                      invocations per minute
    ModelLatency                                                     average model latency (µs)
    Invocation5XXErrors / Invocation4XXErrors                        errors per minute

and the desired count is ``ceil(current * metric / target)``, clamped to [MinCapacity, MaxCapacity].
Scale-out happens when any policy asks for more; scale-in only when every policy asks for less
and the metric is under 90% of the target (as CloudWatch's low alarm), honouring the cooldowns
and DisableScaleIn. The change is applied through UpdateEndpointWeightsAndCapacities, so it
follows the same drain-safe path, and each one is recorded as a scaling activity.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from modelhost.backends.handle import FleetHandle
from modelhost.control import autoscaling, endpoints
from modelhost.control.context import ControlContext
from modelhost.controllers.running import RunningEndpoints
from modelhost.errors import ApiError
from modelhost.store import tables

log = logging.getLogger("modelhost.autoscaler")
SCALE_IN_MARGIN = 0.9


@dataclass
class _History:
    samples: collections.deque[tuple[float, int, int, int]] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )
    last_scale_out: float = -math.inf
    last_scale: float = -math.inf
    fleet_id: int = 0


class Autoscaler:
    def __init__(
        self,
        ctx: ControlContext,
        running: RunningEndpoints,
        window: float,
        backlog: Callable[[str], int | None] = lambda _endpoint: None,
    ) -> None:
        self.ctx = ctx
        self.running = running
        self.window = window
        self._history: dict[str, _History] = collections.defaultdict(_History)
        # Asynchronous inference: endpoint -> queued plus in-flight requests (None: not async).
        self.backlog = backlog

    def _load(self) -> list[tuple[dict, list[dict]]]:
        with self.ctx.store.begin() as conn:
            targets = [autoscaling.decode_row(r) for r in conn.execute(select(tables.scalable_targets))]
            policies = [autoscaling.decode_row(r) for r in conn.execute(select(tables.scaling_policies))]
        by_target: dict[str, list[dict]] = collections.defaultdict(list)
        for p in policies:
            by_target[p["resource_id"]].append(p)
        return [(t, by_target[t["resource_id"]]) for t in targets]

    def _fleet(self, resource_id: str) -> FleetHandle | None:
        m = autoscaling.RESOURCE.fullmatch(resource_id)
        if m is None:
            return None
        return self.running.fleet(m["endpoint"], m["variant"])  # None while not running or mid-update

    async def evaluate_once(self) -> None:
        now = time.monotonic()
        for target, policies in await asyncio.to_thread(self._load):
            fleet = self._fleet(target["resource_id"])
            if fleet is None or not policies:
                continue
            hist = self._history[target["resource_id"]]
            if hist.fleet_id != id(fleet):  # a new fleet (update, restart): start over
                hist.samples.clear()
                hist.fleet_id = id(fleet)
            if await self._wake_from_zero(target, policies, fleet):
                hist.last_scale = hist.last_scale_out = now
                continue
            s = fleet.stats
            hist.samples.append((now, s.requests, s.errors_4xx, s.errors_5xx))
            while hist.samples and now - hist.samples[0][0] > self.window:
                hist.samples.popleft()
            if len(hist.samples) < 2 or now - hist.samples[0][0] < self.window * 0.5:
                continue  # not enough data yet
            current = fleet.desired
            decisions = [self._desired(p, fleet, hist, now, current) for p in policies]
            spec = target["spec"]
            suspended = spec.get("SuspendedState") or {}
            wants_out = [d for d in decisions if d[0] > current]
            wants_in = all(d[0] < current and d[2] for d in decisions)
            new = None
            if wants_out and not suspended.get("DynamicScalingOutSuspended"):
                best = max(wants_out, key=lambda d: d[0])
                if now - hist.last_scale_out >= best[1].get("ScaleOutCooldown", 300):
                    new, reason = best[0], best
            elif wants_in and not suspended.get("DynamicScalingInSuspended"):
                best = max(decisions, key=lambda d: d[0])
                if now - hist.last_scale >= best[1].get("ScaleInCooldown", 300):
                    new, reason = best[0], best
            if new is None:
                continue
            new = max(int(spec["MinCapacity"]), min(int(spec["MaxCapacity"]), new))
            if new == current:
                continue
            if not await self._apply(target, fleet, current, new, reason):
                continue  # deferred: try again next pass, no cooldown
            hist.last_scale = now
            if new > current:
                hist.last_scale_out = now

    def _desired(
        self, policy: dict, fleet: FleetHandle, hist: _History, now: float, current: int
    ) -> tuple[int, dict, bool, str, float]:
        """(desired count, policy config, scale-in allowed, policy name, metric value)."""
        config = policy["spec"]["TargetTrackingScalingPolicyConfiguration"]
        custom = config.get("CustomizedMetricSpecification")
        metric = custom["MetricName"] if custom else "InvocationsPerInstance"
        t0, r0, a0, b0 = hist.samples[0]
        _, r1, a1, b1 = hist.samples[-1]
        minutes = max(now - t0, 1e-6) / 60.0
        instances = max(fleet.healthy_count, 1)
        if metric == "InvocationsPerInstance":
            value = (r1 - r0) / minutes / instances
        elif metric == "Invocations":
            value = (r1 - r0) / minutes
        elif metric == "Invocation5XXErrors":
            value = (b1 - b0) / minutes
        elif metric == "Invocation4XXErrors":
            value = (a1 - a0) / minutes
        elif metric in ("ApproximateBacklogSizePerInstance", "ApproximateBacklogSize"):
            m = autoscaling.RESOURCE.fullmatch(policy["resource_id"])
            backlog = (self.backlog(m["endpoint"]) if m is not None else None) or 0
            value = backlog / max(fleet.desired, 1) if metric == "ApproximateBacklogSizePerInstance" else backlog
        else:  # ModelLatency
            lat = [v for t, v in fleet.stats.latencies if t >= t0]
            value = sum(lat) / len(lat) if lat else 0.0
        target = float(config["TargetValue"])
        want = math.ceil(max(current, 1) * value / target - 1e-9) if value > 0 else 0
        can_scale_in = not config.get("DisableScaleIn", False) and value < target * SCALE_IN_MARGIN
        return want, config, can_scale_in, policy["name"], value

    async def _wake_from_zero(self, target: dict, policies: list[dict], fleet: FleetHandle) -> bool:
        """HasBacklogWithoutCapacity: an async variant at zero instances with requests waiting
        scales out at once (to max(1, MinCapacity)), without waiting for a metric window."""
        m = autoscaling.RESOURCE.fullmatch(target["resource_id"])
        if m is None or fleet.desired != 0 or not self.backlog(m["endpoint"]):
            return False
        spec = target["spec"]
        if (spec.get("SuspendedState") or {}).get("DynamicScalingOutSuspended"):
            return False
        new = min(int(spec["MaxCapacity"]), max(1, int(spec["MinCapacity"])))
        if new <= 0:
            return False
        name = policies[0]["name"]
        return await self._apply(target, fleet, 0, new, (new, {}, False, name, float(self.backlog(m["endpoint"]) or 0)))

    async def _apply(self, target: dict, fleet: FleetHandle, current: int, new: int, reason: tuple) -> bool:
        """Apply a decision through UpdateEndpointWeightsAndCapacities; False when it was deferred."""
        resource_id = target["resource_id"]
        m = autoscaling.RESOURCE.fullmatch(resource_id)
        assert m is not None
        _, _, _, policy_name, value = reason
        kind = "High" if new > current else "Low"
        started = time.time()
        activity: dict[str, Any] = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": autoscaling.DIMENSION,
            "Description": f"Setting desired instance count to {new}.",
            "Cause": (
                f"monitor alarm TargetTracking-{resource_id}-Alarm{kind} in state ALARM triggered policy "
                f"{policy_name} (metric {value:.2f})"
            ),
            "StartTime": started,
        }
        try:
            await asyncio.to_thread(
                endpoints.update_endpoint_weights_and_capacities,
                self.ctx,
                {
                    "EndpointName": m["endpoint"],
                    "DesiredWeightsAndCapacities": [{"VariantName": m["variant"], "DesiredInstanceCount": new}],
                },
            )
        except ApiError as exc:  # e.g. the endpoint is being updated: try again next pass
            log.info("autoscaling %s to %d deferred: %s", resource_id, new, exc.message)
            return False
        activity.update(
            EndTime=time.time(),
            StatusCode="Successful",
            StatusMessage=(
                f"Successfully set desired instance count to {new}. Change successfully fulfilled by sagemaker."
            ),
            Details=f"Resource {resource_id}: desired instance count {current} -> {new}.",
        )
        fleet.log.write("autoscaling", f"{activity['Description']} Cause: {activity['Cause']}")
        await asyncio.to_thread(autoscaling.record_activity, self.ctx, resource_id, activity)
        return True
