"""A multi-model instance on this machine: the serving worker in its multi-model mode
(serving/multimodel.py, ``SAGEMAKER_MULTI_MODEL=true``) plus the platform's model cache for it
(model_cache.py). Its ``client`` serves ``POST /invocations`` with ``X-Amzn-SageMaker-Target-Model`` by
loading the model first when needed, so the fleet and router treat it as any instance.

Budgets, per instance: memory from ``MODELHOST_MME_MEMORY_MB`` (the container's Environment first, then
the server's), else the instance type's memory; disk (the fleet's extracted models) from
``MODELHOST_MME_DISK_MB``, else the variant's ``VolumeSizeInGB``, else 30 GiB; the wait for a loading
model from ``MODELHOST_MME_LOAD_WAIT`` (60 s, as SageMaker), the load itself ``MODELHOST_MME_LOAD_TIMEOUT``
(360 s).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from modelhost.backends.local.http import HttpResponse, UnixHttpPool
from modelhost.backends.local.instances import Instance, InstanceSpec
from modelhost.backends.local.model_cache import CachePolicy, ModelCache
from modelhost.backends.local.model_disk import DiskTier
from modelhost.backends.multimodel import MultiModelEvents, NoEvents
from modelhost.config import Settings
from modelhost.resources.containers import ContainerDefinition
from modelhost.resources.instance_types import memory_mib
from modelhost.store.artifacts import ArtifactCache, max_artifact_bytes
from modelhost.store.logs import EndpointLog

MIB = 1024 * 1024
DEFAULT_DISK_MB = 30 * 1024
DEFAULT_MEMORY_MB = 4096  # an instance type we do not know


@dataclass
class MultiModelSpec(InstanceSpec):
    disk: DiskTier | None = None
    policy: CachePolicy = field(default_factory=lambda: CachePolicy(DEFAULT_MEMORY_MB * MIB))
    events: MultiModelEvents = field(default_factory=NoEvents)

    def instance(self, index: int, run_dir: Path, log: EndpointLog) -> Instance:
        return MultiModelInstance(self, index, run_dir, log)


class MultiModelInstance(Instance):
    def __init__(self, spec: MultiModelSpec, index: int, run_dir: Path, log: EndpointLog) -> None:
        super().__init__(spec, index, run_dir, log)
        assert spec.disk is not None
        self.disk = spec.disk
        self.disk.users += 1
        self.cache = ModelCache(self.name, spec.disk, spec.policy, spec.events)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        await super().stop(drain_timeout)
        self.cache.events.loaded_count(self.cache.name, 0)
        self.disk.users -= 1
        if self.disk.users == 0:  # the fleet's last instance: its extracted models go too
            await asyncio.to_thread(self.disk.clear)

    def _connect(self) -> None:
        super()._connect()
        assert self.client is not None
        pool = self.client
        self.cache.attach(pool, self.pid)
        self.client = MultiModelClient(pool, self.cache)  # type: ignore[assignment]  # the replica's client


class MultiModelClient:
    """POST /invocations with a TargetModel through the cache; anything else (``/ping``) to the container."""

    def __init__(self, pool: UnixHttpPool, cache: ModelCache) -> None:
        self.pool = pool
        self.cache = cache

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> HttpResponse:
        if method == b"POST" and target == b"/invocations":
            return await self.cache.invoke(headers, body, timeout)
        return await self.pool.request(method, target, headers, body, timeout)

    async def close(self) -> None:
        await self.pool.close()


def _setting(name: str, container: ContainerDefinition) -> str | None:
    return container.environment.get(name) or os.environ.get(name) or None


def multi_model_spec(
    spec: InstanceSpec,
    container: ContainerDefinition,
    settings: Settings,
    artifacts: ArtifactCache,
    *,
    instance_type: str | None = None,
    volume_size_gb: int | None = None,
    events: MultiModelEvents | None = None,
) -> MultiModelSpec:
    """The instance spec of a multi-model container: the worker's multi-model mode, a disk tier shared by
    the fleet's instances, and the cache policy."""
    memory_mb = float(_setting("MODELHOST_MME_MEMORY_MB", container) or memory_mib(instance_type) or DEFAULT_MEMORY_MB)
    disk_mb = float(
        _setting("MODELHOST_MME_DISK_MB", container) or (volume_size_gb * 1024 if volume_size_gb else DEFAULT_DISK_MB)
    )
    prefix = container.model_data_url or ""
    # one directory per fleet (a blue/green update's new fleet warms up its own, lazily)
    root = settings.data_dir / "multi-model" / f"{spec.endpoint}-{spec.variant}-{uuid.uuid4().hex[:12]}"
    disk = DiskTier(
        artifacts, root, prefix, int(disk_mb * MIB), max_artifact_bytes(settings.max_artifact_bytes, volume_size_gb)
    )
    policy = CachePolicy(
        memory_budget=int(memory_mb * MIB),
        cache_enabled=container.cache_enabled,
        load_wait=float(_setting("MODELHOST_MME_LOAD_WAIT", container) or 60.0),
        load_timeout=float(_setting("MODELHOST_MME_LOAD_TIMEOUT", container) or 360.0),
    )
    env = dict(spec.environment)
    env["SAGEMAKER_MULTI_MODEL"] = "true"
    return MultiModelSpec(
        endpoint=spec.endpoint,
        variant=spec.variant,
        model_dir=root,
        runtime=spec.runtime,
        environment=env,
        startup_timeout=spec.startup_timeout,
        stop_grace=spec.stop_grace,
        python=spec.python,
        user=spec.user,
        disk=disk,
        policy=policy,
        events=events or NoEvents(),
    )
