"""The endpoint reconciler: drives what runs toward what the endpoints table says should run.

Creating -> start every variant's fleet, wait until healthy -> publish routes -> InService (or
Failed with a FailureReason). InService with nothing running (after a restart) -> start it
again. Updating -> either new weights and instance counts applied in place, or a blue/green
deployment of a new config (controllers/bluegreen.py). Deleting -> withdraw routes, drain, stop,
forget the row. It reaches instances only through the Backend / FleetHandle interface.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from modelhost.backends.handle import Backend, DeploymentFailed, FleetHandle, FleetRequest, ReplicaFailed
from modelhost.config import Settings
from modelhost.control import tags
from modelhost.controllers.bluegreen import BlueGreen
from modelhost.controllers.running import Running, RunningEndpoints
from modelhost.hosting.affinity import ModelAffinity
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.multimodel import MultiModelMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.hosting.targets import VariantTargets
from modelhost.resources.containers import model_definition
from modelhost.resources.endpoint import EndpointRecord, EndpointStatus, Snapshot
from modelhost.resources.serverless import ServerlessConfig
from modelhost.store import endpoints as rows
from modelhost.store.db import MetadataStore
from modelhost.store.logs import EndpointLog

log = logging.getLogger("modelhost.reconciler")

DEFAULT_MODEL_TIMEOUT = 60.0
DEFAULT_DOWNLOAD_TIMEOUT = 3600.0


class Reconciler:
    def __init__(self, settings: Settings, store: MetadataStore, backend: Backend, router: Router) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.router = router
        self.running = RunningEndpoints()
        self.logs: dict[str, EndpointLog] = {}
        self.busy: dict[str, asyncio.Task[None]] = {}
        self.bluegreen = BlueGreen(self)
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    # --- one pass (called by the control loop with the rows it read)

    def sync(self, records: list[EndpointRecord]) -> None:
        """Start the step each endpoint needs; one step per endpoint at a time."""
        for record in records:
            key = record.key
            if key in self.busy:
                continue
            status = record.status
            running = self.running.by_key.get(key)
            if status is EndpointStatus.CREATING or (status.restorable and running is None):
                # (after a restart, an endpoint caught mid-update first gets its old fleet back)
                self._spawn(key, self.deploy(record))
            elif status is EndpointStatus.UPDATING and record.deployment.capacity_change:
                self._spawn(key, self.apply_capacity(record))
            elif status in (EndpointStatus.UPDATING, EndpointStatus.ROLLING_BACK):
                self._spawn(key, self.bluegreen.update(record))
            elif status is EndpointStatus.DELETING:
                self._spawn(key, self.delete(record))
            elif status is EndpointStatus.FAILED and running is not None:
                self._spawn(key, self.teardown(key))

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.busy[key] = task
        task.add_done_callback(lambda _t: self.busy.pop(key, None))

    async def wait_idle(self) -> None:
        """Wait for every step in progress (tests use it to run a pass to completion)."""
        while self.busy:
            await asyncio.gather(*list(self.busy.values()), return_exceptions=True)

    async def shutdown(self) -> None:
        busy = list(self.busy.values())
        for task in busy:
            task.cancel()
        # Let them clean up (a deployment cancelled while its instances load stops them) before the
        # server exits; otherwise those instances outlive a graceful stop.
        await asyncio.gather(*busy, return_exceptions=True)
        for key in list(self.running.by_key):
            await self.teardown(key, drain_timeout=5)
        for endpoint_log in self.logs.values():
            endpoint_log.close()

    # --- store access (in worker threads)

    def set_status(self, record: EndpointRecord, **changes: Any) -> EndpointRecord:
        changes.setdefault("last_modified_time", round(time.time(), 3))
        with self.store.begin() as conn:
            return rows.save(self.store, conn, record, **changes)

    def _forget(self, record: EndpointRecord) -> None:
        with self.store.begin() as conn:
            rows.delete(self.store, conn, record.name)
            tags.drop_all(conn, record.arn)

    # --- building blocks

    def log(self, endpoint: str) -> EndpointLog:
        if endpoint not in self.logs:
            self.logs[endpoint] = EndpointLog(self.settings.logs_dir, endpoint)
        return self.logs[endpoint]

    async def start_fleets(
        self,
        endpoint: str,
        snap: Snapshot,
        on_created: Callable[[dict[str, FleetHandle]], None] | None = None,
    ) -> dict[str, FleetHandle]:
        """Start every variant of a snapshot; all or nothing.

        ``on_created`` gets the fleets before their instances start (to route to them as they come up)."""
        fleets: dict[str, FleetHandle] = {}
        try:
            for v in snap.all_variants:
                fleets[v["VariantName"]] = await self.backend.create_fleet(self._fleet_request(endpoint, snap, v))
            if on_created is not None:
                on_created(fleets)
            await asyncio.gather(*(f.start() for f in fleets.values()))
        except BaseException:
            await asyncio.gather(*(f.stop(0) for f in fleets.values()), return_exceptions=True)
            raise
        return fleets

    def _fleet_request(self, endpoint: str, snap: Snapshot, variant: dict[str, Any]) -> FleetRequest:
        name = variant["VariantName"]
        startup = variant.get("ContainerStartupHealthCheckTimeoutInSeconds")
        model = snap.models[variant["ModelName"]]
        multi = model_definition(model).multi_model
        return FleetRequest(
            owner=endpoint,
            variant=name,
            model=model,
            count=snap.desired(variant).count,
            log=self.log(endpoint),
            label=f"Variant {name}",
            extra_env={"SAGEMAKER_ENDPOINT_NAME": endpoint, "SAGEMAKER_VARIANT_NAME": name},
            startup_timeout=float(startup) if startup is not None else None,
            download_timeout=float(variant.get("ModelDataDownloadTimeoutInSeconds", DEFAULT_DOWNLOAD_TIMEOUT)),
            volume_size_gb=variant.get("VolumeSizeInGB"),
            events=MultiModelMetrics(endpoint, name) if multi else None,
            serverless=ServerlessConfig.from_variant(variant["ServerlessConfig"])
            if "ServerlessConfig" in variant
            else None,
            instance_type=variant.get("InstanceType", ""),
        )

    def route(self, endpoint: str, snap: Snapshot, fleets: dict[str, FleetHandle]) -> EndpointRoute:
        variants = [self._variant_route(endpoint, snap, v, fleets) for v in snap.production_variants]
        route = EndpointRoute(endpoint, variants)
        shadows = snap.shadow_variants
        if shadows:
            shadow = self._variant_route(endpoint, snap, shadows[0], fleets)
            live_weight = sum(v.weight for v in variants) or 1.0
            # SageMaker samples the shadow's share of requests as its weight relative to production.
            route.shadow, route.shadow_share = shadow, min(1.0, shadow.weight / live_weight)
        return route

    def _variant_route(
        self, endpoint: str, snap: Snapshot, v: dict[str, Any], fleets: dict[str, FleetHandle]
    ) -> VariantRoute:
        model = snap.models[v["ModelName"]]
        definition = model_definition(model)
        container = model.get("PrimaryContainer") or model["Containers"][0]
        env = container.get("Environment") or {}
        timeout = float(
            env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS")
            or env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT")
            or DEFAULT_MODEL_TIMEOUT
        )
        return VariantRoute(
            name=v["VariantName"],
            weight=snap.desired(v).weight,
            fleet=fleets[v["VariantName"]],
            timeout=timeout,
            log_stream_arn=(
                f"arn:aws:logs:{self.settings.region}:{self.settings.account_id}:log-group:"
                f"/aws/sagemaker/Endpoints/{endpoint}"
            ),
            metrics=VariantMetrics.for_variant(endpoint, v["VariantName"]),
            targets=VariantTargets.of(definition),
            affinity=ModelAffinity() if definition.multi_model else None,
        )

    def publish(self, running: Running, route: EndpointRoute) -> None:
        running.route = route
        self.router.publish(route)

    # --- steps

    async def deploy(self, record: EndpointRecord) -> None:
        key, endpoint = record.key, record.name
        snap = record.deployment.current
        endpoint_log = self.log(endpoint)
        endpoint_log.write("platform", f"deploying endpoint config {snap.config_name} ({record.status.value})")
        # An endpoint that is already InService (the server restarted) stays routable while its instances
        # start: requests wait briefly for a healthy instance (ServiceUnavailable) instead of "not found".
        recovering = record.status.restorable
        running = Running(endpoint, snap.config_name)

        def publish_early(fleets: dict[str, FleetHandle]) -> None:
            running.fleets = fleets
            self.publish(running, self.route(endpoint, snap, fleets))

        self.running.by_key[key] = running
        try:
            running.fleets = await self.start_fleets(endpoint, snap, publish_early if recovering else None)
        except (DeploymentFailed, ReplicaFailed) as exc:
            self.running.by_key.pop(key, None)
            if recovering:
                self.router.withdraw(endpoint)
            endpoint_log.write("platform", f"deployment failed: {exc}")
            await asyncio.to_thread(
                self.set_status, record, status=EndpointStatus.FAILED, failure_reason=str(exc)[:1024]
            )
            return
        except BaseException:
            self.running.by_key.pop(key, None)
            if recovering:
                self.router.withdraw(endpoint)
            raise
        self.publish(running, self.route(endpoint, snap, running.fleets))
        if record.status is EndpointStatus.CREATING:
            await asyncio.to_thread(self.set_status, record, status=EndpointStatus.IN_SERVICE, failure_reason=None)
        endpoint_log.write("platform", "endpoint is InService")

    async def apply_capacity(self, record: EndpointRecord) -> None:
        """UpdateEndpointWeightsAndCapacities (and autoscaling): scale fleets in place, then move
        the weights. New instances take traffic only once healthy; removed ones drain first."""
        endpoint = record.name
        snap = record.deployment.current
        running = self.running.get(endpoint)
        endpoint_log = self.log(endpoint)
        if running is None or running.route is None:
            return  # not running yet (restart in progress); the next pass retries
        failure = None
        started = time.time()
        for v in snap.production_variants:
            name = v["VariantName"]
            fleet = running.fleets[name]
            want = snap.desired(v).count
            if want != fleet.size:
                running.statuses[name] = [{"Status": "Updating", "StartTime": started}]
                endpoint_log.write("platform", f"scaling {name} from {fleet.size} to {want}")
                try:
                    await fleet.scale_to(want, drain_timeout=self.settings.stop_grace)
                except ReplicaFailed as exc:
                    failure = f"Failed to scale variant {name} to {want} instances: {exc}"
                    endpoint_log.write("platform", failure)
                    snap = snap.with_variant(name, replace(snap.desired(v), count=fleet.size))
                running.statuses.pop(name, None)
        self.publish(running, self.route(endpoint, snap, running.fleets))
        deployment = replace(record.deployment, current=snap, capacity_change=False)
        await asyncio.to_thread(
            self.set_status, record, status=EndpointStatus.IN_SERVICE, failure_reason=failure, deployment=deployment
        )
        endpoint_log.write("platform", "weights and capacities updated; endpoint is InService")

    async def teardown(self, key: str, drain_timeout: float = 30.0) -> None:
        running = self.running.by_key.pop(key, None)
        if running is None:
            return
        self.router.withdraw(running.name)
        fleets = list(running.fleets.values()) + (list(running.pending.fleets.values()) if running.pending else [])
        await asyncio.gather(*(f.stop(drain_timeout) for f in fleets), return_exceptions=True)

    async def delete(self, record: EndpointRecord) -> None:
        self.log(record.name).write("platform", "deleting endpoint")
        await self.teardown(record.key)
        await asyncio.to_thread(self._forget, record)
        endpoint_log = self.logs.pop(record.name, None)
        if endpoint_log is not None:
            endpoint_log.write("platform", "endpoint deleted")
            endpoint_log.close()
