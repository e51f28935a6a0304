"""The Ray backend (``modelhost serve --backend ray``): every variant is a Ray Serve application whose
replicas run modelhost's serving runtime in-process (replica.py), called through Serve handles from
modelhost's own router (fleet.py); replica resources come from the InstanceType (sizing.py).

The server is a Ray driver: it connects to the cluster at ``RAY_ADDRESS`` (``auto``: the local one
``ray start --head`` made) and starts Serve without its HTTP proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid

from modelhost.backends.handle import DeploymentFailed, FleetHandle, FleetRequest
from modelhost.backends.local.specs import container_spec, single_container
from modelhost.backends.ray.fleet import RayFleet, ServeApp
from modelhost.backends.ray.replica import ArtifactSource
from modelhost.backends.ray.sizing import resources_for
from modelhost.config import Settings
from modelhost.store.artifacts import ArtifactCache, max_artifact_bytes

HUNG_AFTER = 120.0  # seconds a request may run before its replica's health check fails
# Passed to replicas (they fetch artifacts from the configured S3 themselves).
_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


class RayBackend:
    def __init__(self, settings: Settings, artifacts: ArtifactCache) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self._connected = False
        self._lock = asyncio.Lock()
        self._run_id = uuid.uuid4().hex[:8]  # this server run's applications are named apart
        # Applications of one metadata database share a prefix: a server restarted on that database
        # (after kill -9, or a new leader) removes those its predecessor left behind.
        self._prefix = "mh-" + hashlib.sha256(settings.db_url.encode()).hexdigest()[:8] + "-"

    def _connect(self) -> None:
        # Ray Serve's own low-overhead mode (handle router on the caller's loop, gRPC between handle and
        # replica, no per-request log flush): about half the per-request latency here. Read at import.
        os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
        import ray
        from ray import serve

        if not ray.is_initialized():
            ray.init(
                address=self.settings.ray_address,
                log_to_driver=False,
                namespace="modelhost",
                configure_logging=False,
            )
        serve.start(proxy_location="Disabled")
        for name in serve.status().applications:
            if name.startswith(self._prefix) and not name.startswith(self._prefix + self._run_id):
                serve.delete(name, _blocking=False)

    async def connect(self) -> None:
        async with self._lock:
            if not self._connected:
                try:
                    await asyncio.to_thread(self._connect)
                except Exception as exc:
                    raise DeploymentFailed(
                        f"The Ray cluster at {self.settings.ray_address} is not reachable: {type(exc).__name__}: {exc}"
                    ) from None
                self._connected = True

    async def create_fleet(self, request: FleetRequest) -> FleetHandle:
        # The same resolution as the local backend (image -> runtime, artifact checked and unpacked,
        # environment), so a model that fails there fails here with the same FailureReason.
        container = single_container(request.model, request.label)  # pipelines and MME: local backend only
        spec = await container_spec(
            self.settings,
            self.artifacts,
            owner=request.owner,
            variant=request.variant,
            container=container,
            label=request.label,
            extra_env=request.extra_env,
            startup_timeout=request.startup_timeout,
            download_timeout=request.download_timeout,
            volume_size_gb=request.volume_size_gb,
        )
        await self.connect()
        env = {
            **spec.environment,
            "MODELHOST_RUNTIME": spec.runtime,
            "PYTHONUNBUFFERED": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),
        }
        artifact = None
        if self.settings.s3_endpoint_url:
            env.update({k: os.environ[k] for k in _AWS_ENV if k in os.environ})
            artifact = ArtifactSource(
                model_data_url=container.get("ModelDataUrl"),
                model_data_source=container.get("ModelDataSource"),
                s3_endpoint_url=self.settings.s3_endpoint_url,
                region=self.settings.region,
                cache_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "modelhost-ray-node"),
                max_bytes=max_artifact_bytes(self.settings.max_artifact_bytes, request.volume_size_gb),
            )
        safe = re.sub(r"[^A-Za-z0-9-]", "-", f"{request.owner}--{request.variant}")
        app = ServeApp(
            name=f"{self._prefix}{self._run_id}-{safe}-{uuid.uuid4().hex[:6]}",
            deployment=re.sub(r"[^A-Za-z0-9-]", "-", request.variant),
            model_dir=str(spec.model_dir),
            artifact=artifact,
            env=env,
            actor_options=resources_for(request.instance_type).actor_options(
                self.settings.ray_cpus_per_vcpu, self.settings.ray_memory_share
            ),
            startup_timeout=spec.startup_timeout,
            hung_after=HUNG_AFTER,
            drain_timeout=self.settings.stop_grace,
        )
        return RayFleet(app, request.variant, request.count, request.log, self.settings.ping_interval)

    async def close(self) -> None:
        return None
