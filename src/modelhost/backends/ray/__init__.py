"""The Ray backend (``modelhost serve --backend ray``): every variant is a Ray Serve application whose
replicas run modelhost's serving runtime in-process (replica.py), called through Serve handles from
modelhost's own router (fleet.py); replica resources come from the InstanceType (sizing.py).

The server is a Ray driver: it connects to the cluster at ``RAY_ADDRESS`` (``auto``: the local one
``ray start --head`` made) and starts Serve without its HTTP proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid

from modelhost.backends.handle import DeploymentFailed, FleetHandle, FleetRequest
from modelhost.backends.ray.fleet import RayFleet, ServeApp
from modelhost.backends.ray.setup import init_ray, replica_setup
from modelhost.config import Settings
from modelhost.store.artifacts import ArtifactCache

HUNG_AFTER = 120.0  # seconds a request may run before its replica's health check fails


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
        init_ray(self.settings)
        from ray import serve

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
        setup = await replica_setup(self.settings, self.artifacts, request)
        await self.connect()
        safe = re.sub(r"[^A-Za-z0-9-]", "-", f"{request.owner}--{request.variant}")
        app = ServeApp(
            name=f"{self._prefix}{self._run_id}-{safe}-{uuid.uuid4().hex[:6]}",
            deployment=re.sub(r"[^A-Za-z0-9-]", "-", request.variant),
            model_dir=setup.model_dir,
            artifact=setup.artifact,
            env=setup.env,
            actor_options=setup.actor_options,
            startup_timeout=setup.startup_timeout,
            hung_after=HUNG_AFTER,
            drain_timeout=self.settings.stop_grace,
        )
        return RayFleet(app, request.variant, request.count, request.log, self.settings.ping_interval)

    async def close(self) -> None:
        return None
