"""From a model definition to what an instance needs: runtime, unpacked artifact, environment.

Shared by everything that starts instances of a model (endpoints, batch transform jobs, ...).
"""

from __future__ import annotations

import asyncio

from modelhost.backends.handle import DeploymentFailed
from modelhost.backends.local.instances import InstanceSpec
from modelhost.config import Settings
from modelhost.serving.images import runtime_for_image, unsupported_image_reason
from modelhost.store.artifacts import ArtifactCache, ArtifactError

DEFAULT_DOWNLOAD_TIMEOUT = 3600.0


def single_container(model: dict, label: str) -> dict:
    containers = [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
    if len(containers) != 1:
        raise DeploymentFailed(
            f"{label}: the model has {len(containers)} containers; inference pipelines are not supported by "
            "modelhost yet."
        )
    return containers[0]


async def instance_spec(
    settings: Settings,
    artifacts: ArtifactCache,
    *,
    owner: str,
    variant: str,
    model: dict,
    label: str,
    extra_env: dict[str, str] | None = None,
    startup_timeout: float | None = None,
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
) -> InstanceSpec:
    """Resolve the image to a runtime, materialise the artifact (and an SDK ``sourcedir.tar.gz``),
    and build the environment. ``owner`` names the endpoint or job whose log the instance writes to;
    ``label`` prefixes failure reasons (e.g. "Variant AllTraffic")."""
    container = single_container(model, label)
    image = container.get("Image", "")
    runtime = runtime_for_image(image)
    if runtime is None:
        raise DeploymentFailed(f"{label}: {unsupported_image_reason(image)}")
    if container.get("Mode") == "MultiModel":
        raise DeploymentFailed(f"{label}: multi-model containers are not supported by modelhost yet.")
    try:
        model_dir = await asyncio.wait_for(
            asyncio.to_thread(artifacts.materialize, container.get("ModelDataUrl"), container.get("ModelDataSource")),
            download_timeout,
        )
    except ArtifactError as exc:
        raise DeploymentFailed(str(exc)) from None
    except TimeoutError:
        raise DeploymentFailed(
            f"{label}: model data was not ready within ModelDataDownloadTimeoutInSeconds ({download_timeout:g})."
        ) from None
    env = dict(container.get("Environment") or {})
    submit_dir = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if submit_dir.startswith(("s3://", "file://")) and submit_dir.endswith((".tar.gz", ".tgz")):
        # The SDK uploads user code as sourcedir.tar.gz; framework containers download and unpack
        # it at start-up. We unpack it once into the artifact cache and point the instance there.
        try:
            code_dir = await asyncio.to_thread(artifacts.materialize, submit_dir, None)
        except ArtifactError as exc:
            raise DeploymentFailed(f"{label}: SAGEMAKER_SUBMIT_DIRECTORY: {exc}") from None
        env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(code_dir)
    env.setdefault("SAGEMAKER_REGION", settings.region)
    env["SAGEMAKER_INFERENCE_MODEL_DIR"] = str(model_dir)
    env["MODELHOST_REQUIREMENTS_DIR"] = str(settings.requirements_dir)
    env["MODELHOST_HF_CACHE"] = str(settings.hf_cache_dir)
    env.update(extra_env or {})
    return InstanceSpec(
        endpoint=owner,
        variant=variant,
        model_dir=model_dir,
        runtime=runtime,
        environment=env,
        startup_timeout=startup_timeout if startup_timeout is not None else settings.default_startup_timeout,
        stop_grace=settings.stop_grace,
        **({"python": settings.python} if settings.python else {}),
    )
