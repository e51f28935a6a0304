"""The reconciler: drives what runs toward what the metadata store says should run.

Creating -> start every variant's fleet, wait for /ping -> publish routes -> InService (or
Failed with a FailureReason). InService with nothing running (after a restart) -> start it
again. Updating -> either new weights and instance counts applied in place, or a blue/green
deployment of a new config (resources/rollout.py: traffic steps, baking, rollback alarms).
Deleting -> withdraw routes, drain, stop, forget the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.instances import InstanceFailed, InstanceSpec
from modelhost.backends.local.specs import DEFAULT_DOWNLOAD_TIMEOUT, DeploymentFailed, instance_spec
from modelhost.config import Settings
from modelhost.control import tags
from modelhost.control.endpoints import desired
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.resources import rollout as bluegreen
from modelhost.store import tables
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.db import MetadataStore
from modelhost.store.logs import EndpointLog

log = logging.getLogger("modelhost.reconciler")

DEFAULT_MODEL_TIMEOUT = 60.0
RESTORABLE = ("InService", "Updating", "RollingBack")  # statuses whose current fleet must be running


@dataclass
class Running:
    """What runs for one endpoint: its fleets (one per variant, shadows included) and its route."""

    name: str
    config_name: str
    fleets: dict[str, Fleet] = field(default_factory=dict)
    route: EndpointRoute | None = None
    # variant -> VariantStatus entries shown by DescribeEndpoint (Updating, ActivatingTraffic, ...)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pending: Running | None = None  # the green side of a blue/green update


class Reconciler:
    def __init__(self, settings: Settings, store: MetadataStore, artifacts: ArtifactCache, router: Router) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.router = router
        self.running: dict[str, Running] = {}
        self.logs: dict[str, EndpointLog] = {}
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to ~107 bytes, so sockets live in a short temp dir.
        self.run_dir = Path(tempfile.mkdtemp(prefix="mh-"))

    # --- the view the control plane reads (from its worker threads; plain reads only)

    def variant_view(self, endpoint: str) -> dict[str, dict[str, Any]]:
        return self._view(self.running.get(endpoint.lower()))

    def pending_view(self, endpoint: str) -> dict[str, dict[str, Any]]:
        running = self.running.get(endpoint.lower())
        return self._view(running.pending if running else None)

    @staticmethod
    def _view(running: Running | None) -> dict[str, dict[str, Any]]:
        if running is None:
            return {}
        route = running.route
        weights = {v.name: v.weight for v in route.variants} if route else {}
        if route is not None and route.green is not None:
            # During a traffic shift the blue fleet's weights scale by what it still receives.
            weights = {k: w * (1.0 - route.green_share) for k, w in weights.items()}
        out: dict[str, dict[str, Any]] = {}
        for name, fleet in list(running.fleets.items()):
            statuses = list(running.statuses.get(name, []))
            for message in list(fleet.crash_loops.values()):
                statuses.append({"Status": "Updating", "StatusMessage": message, "StartTime": time.time()})
            out[name] = {
                "current_weight": weights.get(name, 0.0),
                "current_count": fleet.healthy_count,
                "statuses": statuses,
            }
        return out

    # --- loop

    def wake(self) -> None:
        """Thread-safe: ask for a reconcile pass now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:  # keep reconciling whatever one pass hit
                log.exception("reconcile pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval)
            self._wake.clear()

    async def reconcile_once(self) -> None:
        rows = await asyncio.to_thread(self._load_rows)
        for row in rows:
            key = row["name_key"]
            if key in self._busy:
                continue
            status = row["status"]
            if status == "Creating" or (status in RESTORABLE and key not in self.running):
                # (after a restart, an endpoint caught mid-update first gets its old fleet back)
                self._spawn(key, self._deploy(row))
            elif status == "Updating" and row["deployment"].get("capacity_change"):
                self._spawn(key, self._apply_capacity(row))
            elif status in ("Updating", "RollingBack"):
                self._spawn(key, self._update(row))
            elif status == "Deleting":
                self._spawn(key, self._delete(row))
            elif status == "Failed" and key in self.running:
                self._spawn(key, self._teardown(key))

    def _spawn(self, key: str, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._busy[key] = task
        task.add_done_callback(lambda _t: self._busy.pop(key, None))

    async def shutdown(self) -> None:
        if self._main:
            self._main.cancel()
        busy = list(self._busy.values())
        for task in busy:
            task.cancel()
        # Let them clean up (a deployment cancelled while its instances load stops them) before the
        # server exits; otherwise those instances outlive a graceful stop.
        await asyncio.gather(*busy, return_exceptions=True)
        for key in list(self.running):
            await self._teardown(key, drain_timeout=5)
        for endpoint_log in self.logs.values():
            endpoint_log.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.run_dir)

    # --- store access (in worker threads)

    def _load_rows(self) -> list[dict]:
        with self.store.begin() as conn:
            return self.store.all(conn, tables.endpoints)

    def _set(self, name: str, **values: Any) -> None:
        values.setdefault("last_modified_time", round(time.time(), 3))
        with self.store.begin() as conn:
            self.store.update(conn, tables.endpoints, name, values)

    def _forget(self, row: dict) -> None:
        with self.store.begin() as conn:
            self.store.delete(conn, tables.endpoints, row["name"])
            tags.drop_all(conn, row["arn"])

    # --- steps

    def _log(self, endpoint: str) -> EndpointLog:
        if endpoint not in self.logs:
            self.logs[endpoint] = EndpointLog(self.settings.logs_dir, endpoint)
        return self.logs[endpoint]

    async def _start_fleets(
        self, row: dict, snap: dict, on_created: Callable[[dict[str, Fleet]], None] | None = None
    ) -> dict[str, Fleet]:
        """Start every production variant of a deployment snapshot; all or nothing.

        ``on_created`` gets the fleets before their instances start (to route to them as they come up)."""
        endpoint = row["name"]
        fleets: dict[str, Fleet] = {}
        try:
            config = snap["config"]
            for v in config["ProductionVariants"] + config.get("ShadowProductionVariants", []):
                spec = await self._variant_spec(endpoint, snap, v)
                count = desired(snap, v)["count"]
                fleets[spec.variant] = Fleet(
                    spec, count, self.run_dir, self._log(endpoint), self.settings.ping_interval
                )
            if on_created is not None:
                on_created(fleets)
            await asyncio.gather(*(f.start() for f in fleets.values()))
        except BaseException:
            await asyncio.gather(*(f.stop(drain_timeout=0) for f in fleets.values()), return_exceptions=True)
            raise
        return fleets

    async def _variant_spec(self, endpoint: str, snap: dict, variant: dict) -> InstanceSpec:
        name = variant["VariantName"]
        startup = variant.get("ContainerStartupHealthCheckTimeoutInSeconds")
        return await instance_spec(
            self.settings,
            self.artifacts,
            owner=endpoint,
            variant=name,
            model=snap["models"][variant["ModelName"]],
            label=f"Variant {name}",
            extra_env={"SAGEMAKER_ENDPOINT_NAME": endpoint, "SAGEMAKER_VARIANT_NAME": name},
            startup_timeout=float(startup) if startup is not None else None,
            download_timeout=float(variant.get("ModelDataDownloadTimeoutInSeconds", DEFAULT_DOWNLOAD_TIMEOUT)),
        )

    def _route(self, endpoint: str, snap: dict, fleets: dict[str, Fleet]) -> EndpointRoute:
        config = snap["config"]
        variants = [self._variant_route(endpoint, snap, v, fleets) for v in config["ProductionVariants"]]
        route = EndpointRoute(endpoint, variants)
        shadows = config.get("ShadowProductionVariants") or []
        if shadows:
            shadow = self._variant_route(endpoint, snap, shadows[0], fleets)
            live_weight = sum(v.weight for v in variants) or 1.0
            # SageMaker samples the shadow's share of requests as its weight relative to production.
            route.shadow, route.shadow_share = shadow, min(1.0, shadow.weight / live_weight)
        return route

    def _variant_route(self, endpoint: str, snap: dict, v: dict, fleets: dict[str, Fleet]) -> VariantRoute:
        model = snap["models"][v["ModelName"]]
        container = model.get("PrimaryContainer") or model["Containers"][0]
        env = container.get("Environment") or {}
        timeout = float(
            env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS")
            or env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT")
            or DEFAULT_MODEL_TIMEOUT
        )
        return VariantRoute(
            name=v["VariantName"],
            weight=desired(snap, v)["weight"],
            fleet=fleets[v["VariantName"]],
            timeout=timeout,
            log_stream_arn=(
                f"arn:aws:logs:{self.settings.region}:{self.settings.account_id}:log-group:"
                f"/aws/sagemaker/Endpoints/{endpoint}"
            ),
            metrics=VariantMetrics.for_variant(endpoint, v["VariantName"]),
        )

    def _publish(self, running: Running, route: EndpointRoute) -> None:
        running.route = route
        self.router.publish(route)

    async def _deploy(self, row: dict) -> None:
        key, endpoint = row["name_key"], row["name"]
        snap = row["deployment"]["current"]
        endpoint_log = self._log(endpoint)
        endpoint_log.write("platform", f"deploying endpoint config {snap['config_name']} ({row['status']})")
        # An endpoint that is already InService (the server restarted) stays routable while its instances
        # start: requests wait briefly for a healthy instance (ServiceUnavailable) instead of "not found".
        recovering = row["status"] in RESTORABLE
        running = Running(endpoint, snap["config_name"])

        def publish_early(fleets: dict[str, Fleet]) -> None:
            running.fleets = fleets
            self._publish(running, self._route(endpoint, snap, fleets))

        self.running[key] = running
        try:
            running.fleets = await self._start_fleets(row, snap, publish_early if recovering else None)
        except (DeploymentFailed, InstanceFailed) as exc:
            self.running.pop(key, None)
            if recovering:
                self.router.withdraw(endpoint)
            endpoint_log.write("platform", f"deployment failed: {exc}")
            await asyncio.to_thread(self._set, endpoint, status="Failed", failure_reason=str(exc)[:1024])
            return
        except BaseException:
            self.running.pop(key, None)
            if recovering:
                self.router.withdraw(endpoint)
            raise
        self._publish(running, self._route(endpoint, snap, running.fleets))
        if row["status"] == "Creating":
            await asyncio.to_thread(self._set, endpoint, status="InService", failure_reason=None)
        endpoint_log.write("platform", "endpoint is InService")

    async def _apply_capacity(self, row: dict) -> None:
        """UpdateEndpointWeightsAndCapacities (and autoscaling): scale fleets in place, then move
        the weights. New instances take traffic only once healthy; removed ones drain first."""
        key, endpoint = row["name_key"], row["name"]
        deployment = dict(row["deployment"])
        snap = deployment["current"]
        running = self.running.get(key)
        endpoint_log = self._log(endpoint)
        if running is None or running.route is None:
            return  # not running yet (restart in progress); the next pass retries
        failure = None
        started = time.time()
        for v in snap["config"]["ProductionVariants"]:
            fleet = running.fleets[v["VariantName"]]
            want = desired(snap, v)["count"]
            if want != len(fleet.instances):
                running.statuses[v["VariantName"]] = [{"Status": "Updating", "StartTime": started}]
                endpoint_log.write("platform", f"scaling {v['VariantName']} from {len(fleet.instances)} to {want}")
                try:
                    await fleet.scale_to(want, drain_timeout=self.settings.stop_grace)
                except InstanceFailed as exc:
                    failure = f"Failed to scale variant {v['VariantName']} to {want} instances: {exc}"
                    endpoint_log.write("platform", failure)
                    snap.setdefault("variants", {}).setdefault(v["VariantName"], dict(desired(snap, v)))
                    snap["variants"][v["VariantName"]]["count"] = len(fleet.instances)
                running.statuses.pop(v["VariantName"], None)
        self._publish(running, self._route(endpoint, snap, running.fleets))
        deployment.pop("capacity_change", None)
        deployment["current"] = snap
        await asyncio.to_thread(self._set, endpoint, status="InService", failure_reason=failure, deployment=deployment)
        endpoint_log.write("platform", "weights and capacities updated; endpoint is InService")

    async def _update(self, row: dict) -> None:
        """Blue/green: start the new config's fleets beside the old, shift traffic in the policy's
        steps with baking, watch the alarms, then stop the old fleets (or roll back to them)."""
        key, endpoint = row["name_key"], row["name"]
        deployment = dict(row["deployment"])
        pending, policy = deployment["pending"], deployment.get("pending_policy")
        endpoint_log = self._log(endpoint)
        blue = self.running.get(key)
        if blue is None or blue.route is None:
            return  # not running yet (restart in progress); the next pass retries
        if row["status"] == "RollingBack":
            await self._finish_rollback(row, deployment, blue, "The update was interrupted by a server restart.")
            return
        endpoint_log.write("platform", f"updating to endpoint config {pending['config_name']}")
        limit = ((policy or {}).get("BlueGreenUpdatePolicy") or {}).get("MaximumExecutionTimeoutInSeconds")
        deadline = time.monotonic() + float(limit) if limit else None
        green = Running(endpoint, pending["config_name"])
        blue.pending = green
        try:
            green.fleets = await self._start_fleets(row, pending)
        except (DeploymentFailed, InstanceFailed) as exc:
            blue.pending = None
            await self._finish_rollback(
                row, deployment, blue, f"The new endpoint configuration failed to deploy: {exc}"
            )
            return
        except BaseException:
            blue.pending = None
            raise
        green.route = self._route(endpoint, pending, green.fleets)
        live = blue.route
        rules = bluegreen.alarm_rules(policy)
        production = [v["VariantName"] for v in pending["config"]["ProductionVariants"]]
        steps = bluegreen.traffic_steps(policy, sum(len(green.fleets[n].instances) for n in production))
        green_stats = [green.fleets[n].stats for n in production]
        termination_wait = float(((policy or {}).get("BlueGreenUpdatePolicy") or {}).get("TerminationWaitInSeconds", 0))
        try:
            for step in steps:
                now = time.time()
                for n in production:
                    green.statuses[n] = [{"Status": "ActivatingTraffic", "StartTime": now}]
                live.green, live.green_share = green.route, step.share
                endpoint_log.write("platform", f"shifted {step.share:.0%} of traffic to {pending['config_name']}")
                for n in production:
                    green.statuses[n] = [{"Status": "Baking", "StartTime": now}]
                tripped = await self._bake(step.bake, rules, green_stats, deadline)
                if tripped:
                    live.green, live.green_share = None, 0.0
                    await self._stop_green(blue, green)
                    await self._finish_rollback(row, deployment, blue, tripped)
                    return
            # All traffic is on green: make it the live route, keep blue for the termination wait.
            old_fleets = blue.fleets
            green.statuses.clear()
            self.running[key] = green
            self._publish(green, green.route)
            blue.pending = None
            deployment["current"], deployment["pending"] = pending, None
            deployment.pop("pending_policy", None)
            await asyncio.to_thread(
                self._set,
                endpoint,
                status="InService",
                failure_reason=None,
                config_name=pending["config_name"],
                deployment=deployment,
            )
            if termination_wait:
                await asyncio.sleep(termination_wait)
            await asyncio.gather(
                *(f.stop(self.settings.stop_grace) for f in old_fleets.values()), return_exceptions=True
            )
            endpoint_log.write("platform", "update complete; old fleet stopped; endpoint is InService")
        except BaseException:
            if blue.pending is green:  # cancelled mid-shift (shutdown): send everything back to blue
                live.green, live.green_share = None, 0.0
                blue.pending = None
                await self._stop_green(blue, green)
            raise

    async def _bake(
        self, seconds: float, rules: list[bluegreen.AlarmRule], stats: list, deadline: float | None
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
            await asyncio.sleep(min(0.5, end - now))

    async def _stop_green(self, blue: Running, green: Running) -> None:
        blue.pending = None
        await asyncio.gather(*(f.stop(self.settings.stop_grace) for f in green.fleets.values()), return_exceptions=True)

    async def _finish_rollback(self, row: dict, deployment: dict, blue: Running, reason: str) -> None:
        endpoint = row["name"]
        self._log(endpoint).write("platform", f"rolling back to {row['config_name']}: {reason}")
        await asyncio.to_thread(self._set, endpoint, status="RollingBack")
        if blue.route is not None:
            blue.route.green, blue.route.green_share = None, 0.0
        deployment["pending"] = None
        deployment.pop("pending_policy", None)
        await asyncio.to_thread(
            self._set, endpoint, status="InService", failure_reason=reason[:1024], deployment=deployment
        )
        self._log(endpoint).write("platform", f"rollback complete; endpoint is InService on {row['config_name']}")

    async def _teardown(self, key: str, drain_timeout: float = 30.0) -> None:
        running = self.running.pop(key, None)
        if running is None:
            return
        self.router.withdraw(running.name)
        fleets = list(running.fleets.values()) + (list(running.pending.fleets.values()) if running.pending else [])
        await asyncio.gather(*(f.stop(drain_timeout) for f in fleets), return_exceptions=True)

    async def _delete(self, row: dict) -> None:
        self._log(row["name"]).write("platform", "deleting endpoint")
        await self._teardown(row["name_key"])
        await asyncio.to_thread(self._forget, row)
        endpoint_log = self.logs.pop(row["name"], None)
        if endpoint_log is not None:
            endpoint_log.write("platform", "endpoint deleted")
            endpoint_log.close()
