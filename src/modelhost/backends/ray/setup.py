"""What a Ray process running a model needs, for a Serve replica and a batch transform actor alike:
the same resolution as the local backend (image -> runtime, artifact checked and unpacked,
environment), so a model that fails there fails here with the same FailureReason; with a configured
S3 the process fetches the artifact on its own node (never from the head node's disk)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from modelhost.backends.handle import FleetRequest
from modelhost.backends.local.specs import container_spec, single_container
from modelhost.backends.ray.replica import ArtifactSource
from modelhost.backends.ray.sizing import resources_for
from modelhost.config import Settings
from modelhost.store.artifacts import ArtifactCache, max_artifact_bytes

# Passed to Ray processes (they fetch artifacts and job data from the configured S3 themselves).
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")
_INIT = threading.Lock()  # the Serve backend and several jobs connect from threads at once


@dataclass(frozen=True)
class ReplicaSetup:
    model_dir: str
    artifact: ArtifactSource | None
    env: dict[str, str]
    actor_options: dict[str, Any]  # num_cpus / memory / num_gpus from the InstanceType
    startup_timeout: float


def node_cache_dir() -> str:
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), "modelhost-ray-node")


def aws_env() -> dict[str, str]:
    return {k: os.environ[k] for k in AWS_ENV if k in os.environ}


async def replica_setup(settings: Settings, artifacts: ArtifactCache, request: FleetRequest) -> ReplicaSetup:
    container = single_container(request.model, request.label)  # pipelines and MME: local backend only
    spec = await container_spec(
        settings,
        artifacts,
        owner=request.owner,
        variant=request.variant,
        container=container,
        label=request.label,
        extra_env=request.extra_env,
        startup_timeout=request.startup_timeout,
        download_timeout=request.download_timeout,
        volume_size_gb=request.volume_size_gb,
    )
    env = {
        **spec.environment,
        "MODELHOST_RUNTIME": spec.runtime,
        "PYTHONUNBUFFERED": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),
    }
    artifact = None
    if settings.s3_endpoint_url:
        env.update(aws_env())
        artifact = ArtifactSource(
            model_data_url=container.get("ModelDataUrl"),
            model_data_source=container.get("ModelDataSource"),
            s3_endpoint_url=settings.s3_endpoint_url,
            region=settings.region,
            cache_dir=node_cache_dir(),
            max_bytes=max_artifact_bytes(settings.max_artifact_bytes, request.volume_size_gb),
        )
    options = resources_for(request.instance_type).actor_options(settings.ray_cpus_per_vcpu, settings.ray_memory_share)
    if request.serverless is not None and settings.ray_memory_share > 0:
        # A serverless variant has no InstanceType: it reserves its MemorySizeInMB.
        options["memory"] = float(int(request.serverless.memory_mb * 1024 * 1024 * settings.ray_memory_share))
    return ReplicaSetup(
        model_dir=str(spec.model_dir),
        artifact=artifact,
        env=env,
        actor_options=options,
        startup_timeout=spec.startup_timeout,
    )


def init_ray(settings: Settings) -> None:
    """Blocking: this process becomes a driver of the cluster at ``RAY_ADDRESS`` (once)."""
    # Ray Serve's own low-overhead mode (handle router on the caller's loop, gRPC between handle and
    # replica, no per-request log flush): about half the per-request latency here. Read at import.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    import ray

    with _INIT:
        if ray.is_initialized():
            return
        ray.init(address=settings.ray_address, log_to_driver=False, namespace="modelhost", configure_logging=False)
