"""The input objects of a job: ``S3Prefix`` (every object under the prefix, S3 prefix semantics)
or ``ManifestFile`` (a JSON array: ``{"prefix": "s3://bucket/prefix/"}`` then keys relative to it),
opened as streams (``Gzip`` decompressed on the fly)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from modelhost.store.buckets import BucketStore, S3StoreError
from modelhost.store.objects import ObjectNotFound, ObjectStore

OPEN_BUFFER = 1024 * 1024


class InputError(Exception):
    """The job's input cannot be listed or read; the message is meant for FailureReason."""


@dataclass(frozen=True)
class InputObject:
    uri: str  # where it is read from
    rel: str  # its path relative to the input prefix: the output is <S3OutputPath>/<rel>.out
    size: int


def no_objects(uri: str) -> InputError:
    return InputError(
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the bucket '
        "exists in the selected region, and that objects exist under that S3 prefix."
    )


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, unquote(parsed.path.lstrip("/"))


def _dir_part(prefix: str) -> str:
    """``in/`` for ``in/``, ``in/data.csv`` and ``in/da``: what output paths are relative to."""
    return prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""


def list_prefix(objects: ObjectStore, buckets: BucketStore | None, uri: str) -> list[InputObject]:
    """Every object whose key starts with the prefix, in key order."""
    if uri.startswith("s3://") and buckets is not None:
        bucket, prefix = _split_s3(uri)
        base = _dir_part(prefix)
        try:
            found = [
                InputObject(f"s3://{bucket}/{key}", key[len(base) :], st.st_size)
                for key, st in buckets.iter_keys(bucket, prefix)
            ]
        except S3StoreError:
            found = []
        return found
    try:
        root = objects.local_path(uri)
    except ObjectNotFound as exc:
        raise InputError(str(exc)) from None
    if root.is_file():
        return [InputObject(str(root), root.name, root.stat().st_size)]
    if root.is_dir():
        return [_local(p, root) for p in _walk(root)]
    # a partial name: every file in the parent directory tree whose path starts with it
    parent = root.parent
    if not parent.is_dir():
        return []
    out = []
    for p in _walk(parent):
        if str(p).startswith(str(root)):
            out.append(_local(p, parent))
    return out


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _local(path: Path, root: Path) -> InputObject:
    return InputObject(str(path), path.relative_to(root).as_posix(), path.stat().st_size)


def read_manifest(objects: ObjectStore, uri: str) -> list[InputObject]:
    try:
        with open(objects.local_path(uri), "rb") as f:
            doc = json.load(f)
    except (FileNotFoundError, IsADirectoryError, ObjectNotFound):
        raise InputError(f"The manifest file {uri} does not exist.") from None
    except ValueError as exc:
        raise InputError(f"The manifest file {uri} is not valid JSON: {exc}") from None
    if (
        not isinstance(doc, list)
        or not doc
        or not isinstance(doc[0], dict)
        or not isinstance(doc[0].get("prefix"), str)
        or not all(isinstance(k, str) for k in doc[1:])
    ):
        raise InputError(
            f'The manifest file {uri} must be a JSON array whose first element is {{"prefix": "s3://bucket/prefix/"}} '
            "followed by object keys relative to that prefix."
        )
    prefix: str = doc[0]["prefix"]
    out = []
    for rel in doc[1:]:
        full = prefix + rel if prefix.endswith("/") or not prefix else f"{prefix}/{rel}"
        try:
            size = objects.stat(full).size
        except ObjectNotFound:
            size = -1  # reported when the object is processed: that object fails, the others run
        out.append(InputObject(full, rel, size))
    return out


def list_inputs(objects: ObjectStore, buckets: BucketStore | None, data_source: dict) -> list[InputObject]:
    s3 = data_source["S3DataSource"]
    uri = s3["S3Uri"]
    found = read_manifest(objects, uri) if s3["S3DataType"] == "ManifestFile" else list_prefix(objects, buckets, uri)
    if not found:
        raise no_objects(uri)
    return found


def open_input(objects: ObjectStore, obj: InputObject, compression: str | None) -> IO[bytes]:
    """A buffered binary stream of the object's (decompressed) bytes."""
    try:
        path = objects.local_path(obj.uri) if "://" in obj.uri else Path(obj.uri)
        if compression == "Gzip":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb", buffering=OPEN_BUFFER)  # noqa: SIM115 - the caller closes it
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ObjectNotFound):
        raise InputError(f"The input object {obj.uri} does not exist.") from None
