"""ProcessingInputs from S3 into the job's local paths, and ProcessingOutputs back, through the blob
store. ``/opt/ml/...`` paths live under the job's own root directory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from modelhost.jobs.inputs import InputError, list_inputs, open_input
from modelhost.store.blobs import BlobError, BlobStore


def local(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def download(blobs: BlobStore, root: Path, inputs: list[dict[str, Any]], allow_empty: bool = False) -> int:
    """Every input's objects under its LocalPath; returns the bytes copied. ``allow_empty``: an input
    prefix with no objects is an empty directory (monitoring windows), not an error."""
    total = 0
    for item in inputs:
        s3 = item["S3Input"]
        target = local(root, s3["LocalPath"])
        target.mkdir(parents=True, exist_ok=True)
        source = {"S3DataSource": {"S3DataType": s3.get("S3DataType", "S3Prefix"), "S3Uri": s3["S3Uri"]}}
        try:
            objects = list_inputs(blobs, source)
        except InputError:
            if allow_empty:
                continue
            raise
        for obj in objects:
            dest = target / obj.rel
            if not dest.resolve().is_relative_to(target.resolve()):
                raise InputError(f"The input object {obj.uri} would be written outside {s3['LocalPath']}.")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open_input(blobs, obj, s3.get("S3CompressionType")) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            total += obj.size
    return total


def upload(blobs: BlobStore, root: Path, outputs: list[dict[str, Any]]) -> int:
    """Every file under each output's LocalPath to ``<S3Uri>/<relative path>``; returns the files written."""
    count = 0
    for item in outputs:
        s3 = item["S3Output"]
        base = local(root, s3["LocalPath"])
        prefix = s3["S3Uri"].rstrip("/")
        if not base.exists():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            uri = f"{prefix}/{path.relative_to(base).as_posix()}"
            fd, tmp = tempfile.mkstemp(dir=blobs.staging_dir())
            with open(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            try:
                blobs.put_file(uri, Path(tmp))
            except BlobError as exc:
                Path(tmp).unlink(missing_ok=True)
                raise InputError(
                    f"ClientError: the output {item['OutputName']} cannot be written to {uri}: {exc}"
                ) from None
            count += 1
    return count
