"""The reconciler: drives what runs toward what the metadata store says should run.

Creating -> start every variant's fleet, wait for /ping -> publish routes -> InService (or
Failed with a FailureReason). InService with nothing running (after a restart) -> start it
again. Updating -> start the new config's fleets beside the old, switch traffic at once, drain
and stop the old. Deleting -> withdraw routes, drain, stop, forget the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost.config import Settings
from modelhost.control import tags
from modelhost.hosting.fleet import Fleet
from modelhost.hosting.instances import InstanceFailed, InstanceSpec
from modelhost.hosting.logs import EndpointLog
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.serving.images import runtime_for_image
from modelhost.store import tables
from modelhost.store.artifacts import ArtifactCache, ArtifactError
from modelhost.store.db import MetadataStore

log = logging.getLogger("modelhost.reconciler")

DEFAULT_MODEL_TIMEOUT = 60.0
DEFAULT_DOWNLOAD_TIMEOUT = 3600.0


class DeploymentFailed(Exception):
    pass


@dataclass
class Running:
    """What runs for one endpoint: its fleets (one per production variant) and its log."""

    name: str
    config_name: str
    fleets: dict[str, Fleet] = field(default_factory=dict)


class Reconciler:
    def __init__(
        self, settings: Settings, store: MetadataStore, artifacts: ArtifactCache, router: Router
    ) -> None:
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

    def variant_counts(self, endpoint: str) -> dict[str, tuple[int, int]]:
        running = self.running.get(endpoint.lower())
        if running is None:
            return {}
        return {name: (f.healthy_count, f.desired) for name, f in list(running.fleets.items())}

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
            if status == "Creating" or (status == "InService" and key not in self.running):
                self._spawn(key, self._deploy(row))
            elif status == "Updating":
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
        from time import time

        values.setdefault("last_modified_time", time())
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
            specs = [
                await self._variant_spec(endpoint, snap, v) for v in snap["config"]["ProductionVariants"]
            ]
            for spec, count in specs:
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

    async def _variant_spec(self, endpoint: str, snap: dict, variant: dict) -> tuple[InstanceSpec, int]:
        name = variant["VariantName"]
        model = snap["models"][variant["ModelName"]]
        containers = (
            [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
        )
        if len(containers) != 1:
            raise DeploymentFailed(
                f"Variant {name}: model {variant['ModelName']} has {len(containers)} containers; inference "
                "pipelines are not supported by modelhost yet."
            )
        container = containers[0]
        image = container.get("Image", "")
        runtime = runtime_for_image(image)
        if runtime is None:
            raise DeploymentFailed(
                f"Variant {name}: image {image!r} is not supported by modelhost. Supported images: the SageMaker "
                "scikit-learn and XGBoost framework images (any region and version) and modelhost/sklearn, "
                "modelhost/xgboost, modelhost/python."
            )
        if container.get("Mode") == "MultiModel":
            raise DeploymentFailed(
                f"Variant {name}: multi-model containers are not supported by modelhost yet."
            )
        download_timeout = float(variant.get("ModelDataDownloadTimeoutInSeconds", DEFAULT_DOWNLOAD_TIMEOUT))
        try:
            model_dir = await asyncio.wait_for(
                asyncio.to_thread(
                    self.artifacts.materialize,
                    container.get("ModelDataUrl"),
                    container.get("ModelDataSource"),
                ),
                download_timeout,
            )
        except ArtifactError as exc:
            raise DeploymentFailed(str(exc)) from None
        except asyncio.TimeoutError:
            raise DeploymentFailed(
                f"Variant {name}: model data was not ready within ModelDataDownloadTimeoutInSeconds "
                f"({download_timeout:g})."
            ) from None
        env = dict(container.get("Environment") or {})
        env.setdefault("SAGEMAKER_REGION", self.settings.region)
        env["SAGEMAKER_ENDPOINT_NAME"] = endpoint
        env["SAGEMAKER_VARIANT_NAME"] = name
        env["SAGEMAKER_INFERENCE_MODEL_DIR"] = str(model_dir)
        env["MODELHOST_REQUIREMENTS_DIR"] = str(self.settings.requirements_dir)
        env["MODELHOST_HF_CACHE"] = str(self.settings.hf_cache_dir)
        spec = InstanceSpec(
            endpoint=endpoint,
            variant=name,
            model_dir=model_dir,
            runtime=runtime,
            environment=env,
            startup_timeout=float(
                variant.get(
                    "ContainerStartupHealthCheckTimeoutInSeconds", self.settings.default_startup_timeout
                )
            ),
            stop_grace=self.settings.stop_grace,
            **({"python": self.settings.python} if self.settings.python else {}),
        )
        count = 1 if "ServerlessConfig" in variant else int(variant["InitialInstanceCount"])
        return spec, count

    def _route(self, endpoint: str, snap: dict, fleets: dict[str, Fleet]) -> EndpointRoute:
        variants = []
        for v in snap["config"]["ProductionVariants"]:
            model = snap["models"][v["ModelName"]]
            container = model.get("PrimaryContainer") or model["Containers"][0]
            env = container.get("Environment") or {}
            timeout = float(
                env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS")
                or env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT")
                or DEFAULT_MODEL_TIMEOUT
            )
            variants.append(
                VariantRoute(
                    name=v["VariantName"],
                    weight=float(v.get("InitialVariantWeight", 1.0)),
                    fleet=fleets[v["VariantName"]],
                    timeout=timeout,
                    log_stream_arn=(
                        f"arn:aws:logs:{self.settings.region}:{self.settings.account_id}:log-group:"
                        f"/aws/sagemaker/Endpoints/{endpoint}"
                    ),
                    metrics=VariantMetrics.for_variant(endpoint, v["VariantName"]),
                )
            )
        return EndpointRoute(endpoint, variants)

    async def _deploy(self, row: dict) -> None:
        key, endpoint = row["name_key"], row["name"]
        snap = row["deployment"]["current"]
        endpoint_log = self._log(endpoint)
        endpoint_log.write("platform", f"deploying endpoint config {snap['config_name']} ({row['status']})")
        # An endpoint that is already InService (the server restarted) stays routable while its instances
        # start: requests wait briefly for a healthy instance (ServiceUnavailable) instead of "not found".
        recovering = row["status"] == "InService"

        def publish_early(fleets: dict[str, Fleet]) -> None:
            self.router.publish(self._route(endpoint, snap, fleets))

        try:
            fleets = await self._start_fleets(row, snap, publish_early if recovering else None)
        except (DeploymentFailed, InstanceFailed) as exc:
            if recovering:
                self.router.withdraw(endpoint)
            endpoint_log.write("platform", f"deployment failed: {exc}")
            await asyncio.to_thread(self._set, endpoint, status="Failed", failure_reason=str(exc)[:1024])
            return
        except BaseException:
            if recovering:
                self.router.withdraw(endpoint)
            raise
        self.running[key] = Running(endpoint, snap["config_name"], fleets)
        self.router.publish(self._route(endpoint, snap, fleets))
        if row["status"] != "InService":
            await asyncio.to_thread(self._set, endpoint, status="InService", failure_reason=None)
        endpoint_log.write("platform", "endpoint is InService")

    async def _update(self, row: dict) -> None:
        key, endpoint = row["name_key"], row["name"]
        deployment = dict(row["deployment"])
        pending = deployment["pending"]
        endpoint_log = self._log(endpoint)
        endpoint_log.write("platform", f"updating to endpoint config {pending['config_name']}")
        try:
            fleets = await self._start_fleets(row, pending)
        except (DeploymentFailed, InstanceFailed) as exc:
            # The old fleet never stopped serving: roll back to it.
            endpoint_log.write("platform", f"update failed, keeping {row['config_name']}: {exc}")
            deployment["pending"] = None
            await asyncio.to_thread(
                self._set, endpoint, status="InService", failure_reason=str(exc)[:1024], deployment=deployment
            )
            return
        old = self.running.get(key)
        self.running[key] = Running(endpoint, pending["config_name"], fleets)
        self.router.publish(self._route(endpoint, pending, fleets))  # the switch: one dict assignment
        deployment["current"], deployment["pending"] = pending, None
        await asyncio.to_thread(
            self._set,
            endpoint,
            status="InService",
            failure_reason=None,
            config_name=pending["config_name"],
            deployment=deployment,
        )
        if old is not None:
            await asyncio.gather(*(f.stop() for f in old.fleets.values()), return_exceptions=True)
        endpoint_log.write("platform", "update complete; endpoint is InService")

    async def _teardown(self, key: str, drain_timeout: float = 30.0) -> None:
        running = self.running.pop(key, None)
        if running is None:
            return
        self.router.withdraw(running.name)
        await asyncio.gather(
            *(f.stop(drain_timeout) for f in running.fleets.values()), return_exceptions=True
        )

    async def _delete(self, row: dict) -> None:
        self._log(row["name"]).write("platform", "deleting endpoint")
        await self._teardown(row["name_key"])
        await asyncio.to_thread(self._forget, row)
        endpoint_log = self.logs.pop(row["name"], None)
        if endpoint_log is not None:
            endpoint_log.write("platform", "endpoint deleted")
            endpoint_log.close()
