"""UpdateEndpoint as blue/green: start the new config's fleets (green) beside the running ones
(blue), shift traffic in the policy's steps with baking, watch the rollback alarms, then stop
blue after TerminationWaitInSeconds — or send everything back to blue (resources/rollout.py
holds the steps and the alarm rules)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, Protocol

from modelhost.backends.handle import DeploymentFailed, FleetHandle, ReplicaFailed
from modelhost.config import Settings
from modelhost.controllers.running import Running, RunningEndpoints
from modelhost.hosting.router import EndpointRoute
from modelhost.resources import rollout
from modelhost.resources.endpoint import Deployment, EndpointRecord, EndpointStatus, Snapshot
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog

BAKE_TICK = 0.5  # seconds between alarm evaluations while baking


class Deployer(Protocol):
    """The reconciler's building blocks a blue/green update uses (controllers/reconciler.py)."""

    settings: Settings
    running: RunningEndpoints

    def log(self, endpoint: str) -> EndpointLog: ...

    async def start_fleets(self, endpoint: str, snap: Snapshot) -> dict[str, FleetHandle]: ...

    def route(self, endpoint: str, snap: Snapshot, fleets: dict[str, FleetHandle]) -> EndpointRoute: ...

    def publish(self, running: Running, route: EndpointRoute) -> None: ...

    def set_status(self, record: EndpointRecord, **changes: Any) -> EndpointRecord: ...


class BlueGreen:
    def __init__(self, deployer: Deployer) -> None:
        self.r = deployer

    async def update(self, record: EndpointRecord) -> None:
        r = self.r
        endpoint = record.name
        deployment = record.deployment
        pending, policy = deployment.pending, deployment.pending_policy
        blue = r.running.get(endpoint)
        if blue is None or blue.route is None:
            return  # not running yet (restart in progress); the next pass retries
        if record.status is EndpointStatus.ROLLING_BACK or pending is None:
            await self.finish_rollback(record, blue, "The update was interrupted by a server restart.")
            return
        endpoint_log = r.log(endpoint)
        endpoint_log.write("platform", f"updating to endpoint config {pending.config_name}")
        bg_policy = (policy or {}).get("BlueGreenUpdatePolicy") or {}
        limit = bg_policy.get("MaximumExecutionTimeoutInSeconds")
        deadline = time.monotonic() + float(limit) if limit else None
        green = Running(endpoint, pending.config_name)
        blue.pending = green
        try:
            green.fleets = await r.start_fleets(endpoint, pending)
        except (DeploymentFailed, ReplicaFailed) as exc:
            blue.pending = None
            await self.finish_rollback(record, blue, f"The new endpoint configuration failed to deploy: {exc}")
            return
        except BaseException:
            blue.pending = None
            raise
        green.route = r.route(endpoint, pending, green.fleets)
        live = blue.route
        rules = rollout.alarm_rules(policy)
        production = [v["VariantName"] for v in pending.production_variants]
        steps = rollout.traffic_steps(policy, sum(green.fleets[n].size for n in production))
        green_stats = [green.fleets[n].stats for n in production]
        termination_wait = float(bg_policy.get("TerminationWaitInSeconds", 0))
        try:
            for step in steps:
                now = time.time()
                for n in production:
                    green.statuses[n] = [{"Status": "ActivatingTraffic", "StartTime": now}]
                live.green, live.green_share = green.route, step.share
                endpoint_log.write("platform", f"shifted {step.share:.0%} of traffic to {pending.config_name}")
                for n in production:
                    green.statuses[n] = [{"Status": "Baking", "StartTime": now}]
                tripped = await self.bake(step.bake, rules, green_stats, deadline)
                if tripped:
                    live.green, live.green_share = None, 0.0
                    await self.stop_green(blue, green)
                    await self.finish_rollback(record, blue, tripped)
                    return
            # All traffic is on green: make it the live route, keep blue for the termination wait.
            old_fleets = blue.fleets
            green.statuses.clear()
            r.running.by_key[record.key] = green
            r.publish(green, green.route)
            blue.pending = None
            await asyncio.to_thread(
                r.set_status,
                record,
                status=EndpointStatus.IN_SERVICE,
                failure_reason=None,
                config_name=pending.config_name,
                deployment=Deployment(pending, last_deployment_config=deployment.last_deployment_config),
            )
            try:
                if termination_wait:
                    await asyncio.sleep(termination_wait)
            finally:  # also when shut down during the wait: nothing else still knows the old fleets
                await asyncio.gather(
                    *(f.stop(r.settings.stop_grace) for f in old_fleets.values()), return_exceptions=True
                )
            endpoint_log.write("platform", "update complete; old fleet stopped; endpoint is InService")
        except BaseException:
            if blue.pending is green:  # cancelled mid-shift (shutdown): send everything back to blue
                live.green, live.green_share = None, 0.0
                await self.stop_green(blue, green)
            raise

    async def bake(
        self, seconds: float, rules: list[rollout.AlarmRule], stats: list[FleetStats], deadline: float | None
    ) -> str | None:
        """Watch the alarms for ``seconds``; return why to roll back, or None."""
        since = time.monotonic()
        baseline = {id(s): s.snapshot() for s in stats}
        end = since + seconds
        while True:
            for rule in rules:
                if rule.tripped(stats, baseline, since):
                    return f"Rolled back: alarm {rule.name!r} went into ALARM state while baking the new fleet."
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return "Rolled back: the update exceeded MaximumExecutionTimeoutInSeconds."
            if now >= end:
                return None
            await asyncio.sleep(min(BAKE_TICK, end - now))

    async def stop_green(self, blue: Running, green: Running) -> None:
        blue.pending = None
        await asyncio.gather(
            *(f.stop(self.r.settings.stop_grace) for f in green.fleets.values()), return_exceptions=True
        )

    async def finish_rollback(self, record: EndpointRecord, blue: Running, reason: str) -> None:
        r = self.r
        endpoint = record.name
        r.log(endpoint).write("platform", f"rolling back to {record.config_name}: {reason}")
        record = await asyncio.to_thread(r.set_status, record, status=EndpointStatus.ROLLING_BACK)
        if blue.route is not None:
            blue.route.green, blue.route.green_share = None, 0.0
        deployment = replace(record.deployment, pending=None, pending_policy=None)
        await asyncio.to_thread(
            r.set_status, record, status=EndpointStatus.IN_SERVICE, failure_reason=reason[:1024], deployment=deployment
        )
        r.log(endpoint).write("platform", f"rollback complete; endpoint is InService on {record.config_name}")
