"""From a model definition to what an instance needs: runtime, unpacked artifact, environment.

Shared by everything that starts instances of a model (endpoints, batch transform jobs, ...).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import sys

from modelhost.backends.handle import DeploymentFailed
from modelhost.backends.local.instances import InstanceSpec, InstanceUser
from modelhost.backends.local.multimodel import multi_model_spec
from modelhost.backends.local.pipeline import pipeline_spec
from modelhost.backends.multimodel import MultiModelEvents
from modelhost.config import Settings
from modelhost.resources.containers import model_definition
from modelhost.serving.images import runtime_for_image, unsupported_image_reason
from modelhost.store.artifacts import ArtifactCache, ArtifactError, max_artifact_bytes, submit_dir_refusal

DEFAULT_DOWNLOAD_TIMEOUT = 3600.0


def single_container(model: dict, label: str) -> dict:
    """The model's one container, for a backend that runs only single-container, single-model models
    (the Ray backend): inference pipelines and multi-model containers are refused there."""
    definition = model_definition(model)
    if not definition.containers:
        raise DeploymentFailed(f"{label}: the model has no containers.")
    if definition.is_pipeline:
        raise DeploymentFailed(
            f"{label}: the model is an inference pipeline of {len(definition.containers)} containers, which this "
            "backend does not run; use the local backend."
        )
    if definition.multi_model:
        raise DeploymentFailed(f"{label}: multi-model containers are not run by this backend; use the local backend.")
    return dict(definition.containers[0].raw)


def instance_user(settings: Settings) -> InstanceUser | None:
    """MODELHOST_INSTANCE_USER, checked, with the data dir opened to its group just enough: the data dir
    0710 and the model cache 0750 (root:<its group>), the requirements and Hugging Face caches 2770, and
    a home directory it owns. Everything else under the data dir stays 0700/0600 (root's)."""
    name = settings.instance_user
    if not name:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise DeploymentFailed(
            f"MODELHOST_INSTANCE_USER {name} does not exist on this machine; create it (useradd --system "
            f"--no-create-home {name}) or unset MODELHOST_INSTANCE_USER."
        ) from None
    if os.geteuid() != 0:
        if pw.pw_uid == os.geteuid():
            return None  # already that user
        raise DeploymentFailed(
            f"MODELHOST_INSTANCE_USER {name} needs the server to run as root (it runs as uid {os.geteuid()})."
        )
    if pw.pw_uid == 0:
        raise DeploymentFailed(f"MODELHOST_INSTANCE_USER {name} is root; name an unprivileged user.")
    gid = pw.pw_gid
    homes = settings.data_dir / "instance-home"
    home = homes / name
    home.mkdir(parents=True, exist_ok=True)
    for path, mode in (
        (settings.data_dir, 0o710),
        (homes, 0o710),
        (settings.model_cache_dir, 0o750),
        (settings.requirements_dir, 0o2770),
        (settings.hf_cache_dir, 0o2770),
    ):
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, -1, gid)
        os.chmod(path, mode)
    os.chown(home, pw.pw_uid, gid)
    os.chmod(home, 0o700)
    return InstanceUser(name, pw.pw_uid, gid, home)


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
    volume_size_gb: int | None = None,
    instance_type: str | None = None,
    events: MultiModelEvents | None = None,
) -> InstanceSpec:
    """What one replica of the model runs: one container's instance, an inference pipeline's
    containers (backends/local/pipeline.py) or a multi-model container (backends/local/multimodel.py)."""
    definition = model_definition(model)
    if not definition.containers:
        raise DeploymentFailed(f"{label}: the model has no containers.")

    async def one(container: dict, what: str) -> InstanceSpec:
        return await container_spec(
            settings,
            artifacts,
            owner=owner,
            variant=variant,
            container=container,
            label=what,
            extra_env=extra_env,
            startup_timeout=startup_timeout,
            download_timeout=download_timeout,
            volume_size_gb=volume_size_gb,
        )

    if definition.is_pipeline:
        if any(c.multi_model for c in definition.containers):
            raise DeploymentFailed(f"{label}: a multi-model container inside an inference pipeline is not supported.")
        specs = [await one(dict(c.raw), f"{label}: container {c.hostname}") for c in definition.containers]
        return pipeline_spec(specs, definition)
    spec = await one(dict(definition.containers[0].raw), label)
    if definition.multi_model:
        return multi_model_spec(
            spec,
            definition.containers[0],
            settings,
            artifacts,
            instance_type=instance_type,
            volume_size_gb=volume_size_gb,
            events=events,
        )
    return spec


async def container_spec(
    settings: Settings,
    artifacts: ArtifactCache,
    *,
    owner: str,
    variant: str,
    container: dict,
    label: str,
    extra_env: dict[str, str] | None = None,
    startup_timeout: float | None = None,
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    volume_size_gb: int | None = None,
) -> InstanceSpec:
    """Resolve the image to a runtime, materialise the artifact (and an SDK ``sourcedir.tar.gz``),
    and build the environment. ``owner`` names the endpoint or job whose log the instance writes to;
    ``label`` prefixes failure reasons (e.g. "Variant AllTraffic")."""
    image = container.get("Image", "")
    runtime = runtime_for_image(image)
    if runtime is None:
        raise DeploymentFailed(f"{label}: {unsupported_image_reason(image)}")
    user = instance_user(settings)
    gid = user.gid if user is not None else None
    limit = max_artifact_bytes(settings.max_artifact_bytes, volume_size_gb)
    # A multi-model container's ModelDataUrl is a prefix: its models are fetched per TargetModel.
    multi = container.get("Mode") == "MultiModel"
    url = None if multi else container.get("ModelDataUrl")
    try:
        model_dir = await asyncio.wait_for(
            asyncio.to_thread(
                lambda: artifacts.materialize(url, container.get("ModelDataSource"), max_bytes=limit, share_gid=gid)
            ),
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
            code_dir = await asyncio.to_thread(
                lambda: artifacts.materialize(
                    submit_dir,
                    None,
                    max_bytes=limit,
                    share_gid=gid,
                    member="Environment.SAGEMAKER_SUBMIT_DIRECTORY",
                )
            )
        except ArtifactError as exc:
            raise DeploymentFailed(f"{label}: SAGEMAKER_SUBMIT_DIRECTORY: {exc}") from None
        env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(code_dir)
    elif (reason := submit_dir_refusal(submit_dir, settings.allowed_model_dirs)) is not None:
        raise DeploymentFailed(f"{label}: {reason}")
    env.setdefault("SAGEMAKER_REGION", settings.region)
    env["SAGEMAKER_INFERENCE_MODEL_DIR"] = str(model_dir)
    env["MODELHOST_REQUIREMENTS_DIR"] = str(settings.requirements_dir)
    env["MODELHOST_HF_CACHE"] = str(settings.hf_cache_dir)
    # The server's setting, not the model's: a model cannot allow itself local requirement paths.
    env["MODELHOST_REQUIREMENTS_ALLOW_LOCAL"] = "1" if settings.requirements_allow_local else "0"
    env.update(extra_env or {})
    return InstanceSpec(
        endpoint=owner,
        variant=variant,
        model_dir=model_dir,
        runtime=runtime,
        environment=env,
        startup_timeout=startup_timeout if startup_timeout is not None else settings.default_startup_timeout,
        stop_grace=settings.stop_grace,
        user=user,
        python=settings.python or sys.executable,
    )
