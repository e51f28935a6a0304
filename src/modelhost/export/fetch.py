"""Getting an artifact onto this machine: a local ``model.tar.gz`` or directory, an ``s3://`` URI
(read through the server's S3 API, or the S3 it is configured with), or a model name (DescribeModel)."""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class FetchError(Exception):
    """The artifact cannot be had (the message says which and why)."""


@dataclass
class ModelSource:
    """Where one model's files are and how it is run: what inspect and export work from."""

    label: str  # what the user named: a path, a URI or a model name
    model_dir: Path  # the extracted artifact
    image: str = ""  # the container image (from the model), "" when unknown
    environment: dict[str, str] = field(default_factory=dict)
    model_data_url: str = ""


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a model.tar.gz safely (tarfile's "data" filter: no absolute paths, links out or devices)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"{archive} is not a readable model.tar.gz: {exc}") from None
    return dest


def local_dir(path: Path, work: Path) -> Path:
    """A model directory as is; a model.tar.gz extracted under ``work``."""
    if path.is_dir():
        return path
    if path.is_file():
        return extract(path, Path(tempfile.mkdtemp(prefix="model-", dir=work)))
    raise FetchError(f"{path} does not exist")


def local_name(path: Path) -> str:
    """A name for a local artifact: ``models/churn/model.tar.gz`` -> "churn", ``churn.tar.gz`` -> "churn"."""
    path = path.resolve()
    stem = path.name.removesuffix(".tar.gz").removesuffix(".tgz")
    return path.parent.name if stem == "model" and path.parent.name else stem


def download_s3(s3: Any, uri: str, work: Path) -> Path:
    """An ``s3://bucket/key`` object (an archive) or prefix (an uncompressed model), extracted under ``work``."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise FetchError(f"{uri} is not an s3://bucket/key URI")
    dest = Path(tempfile.mkdtemp(prefix="model-", dir=work))
    try:
        if key.endswith((".tar.gz", ".tgz", ".tar")):
            archive = dest.parent / (dest.name + ".tar.gz")
            s3.download_file(bucket, key, str(archive))
            return extract(archive, dest)
        prefix = key.rstrip("/") + "/"
        found = False
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/") or ".." in Path(rel).parts:
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(dest / rel))
                found = True
        if not found:
            raise FetchError(f"no objects under {uri}")
    except (ClientError, BotoCoreError) as exc:
        raise FetchError(f"cannot read {uri}: {exc}") from None
    return dest


def artifact_dir(uri: str, s3: Any, work: Path) -> Path:
    """A ModelDataUrl (``s3://``, ``file://`` or a path) as a local directory."""
    if uri.startswith("s3://"):
        return download_s3(s3, uri, work)
    return local_dir(Path(uri.removeprefix("file://")), work)


def container_of(model: dict) -> dict:
    containers = [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
    if len(containers) != 1:
        raise FetchError(f"model {model.get('ModelName')} has {len(containers)} containers; export takes one")
    return dict(containers[0])


def from_model(model: dict, s3: Any, work: Path) -> ModelSource:
    """A DescribeModel answer: its container's artifact, image and environment."""
    container = container_of(model)
    url = container.get("ModelDataUrl") or ""
    source = container.get("ModelDataSource", {}).get("S3DataSource", {})
    if not url and source:
        url = source.get("S3Uri", "")
    if not url:
        raise FetchError(f"model {model['ModelName']} has no ModelDataUrl")
    return ModelSource(
        label=model["ModelName"],
        model_dir=artifact_dir(url, s3, work),
        image=container.get("Image", ""),
        environment=dict(container.get("Environment") or {}),
        model_data_url=url,
    )


def resolve(artifact: str, sm: Any, s3: Any, work: Path) -> ModelSource:
    """A path, an ``s3://`` URI or a model name (looked up with DescribeModel) as a ModelSource."""
    from botocore.exceptions import BotoCoreError, ClientError

    if artifact.startswith("s3://"):
        name = local_name(Path(artifact.removeprefix("s3://")))
        return ModelSource(name, download_s3(s3, artifact, work), model_data_url=artifact)
    path = Path(artifact.removeprefix("file://")).expanduser()
    if path.exists():
        return ModelSource(local_name(path), local_dir(path, work), model_data_url=str(path))
    try:
        model = sm.describe_model(ModelName=artifact)
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        raise FetchError(f"{artifact} is not a file, an s3:// URI or a model ({message})") from None
    except BotoCoreError as exc:
        raise FetchError(f"{artifact}: {exc}") from None
    return from_model(model, s3, work)
