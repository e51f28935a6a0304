"""The input objects of a job: ``S3Prefix`` (every object under the prefix, S3 prefix semantics)
or ``ManifestFile`` (a JSON array: ``{"prefix": "s3://bucket/prefix/"}`` then keys relative to it),
opened as streams (``Gzip`` decompressed on the fly). Everything is read through the BlobStore."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from typing import IO, cast

from modelhost.store.blobs import BlobError, BlobNotFound, BlobReader, BlobStore

OPEN_BUFFER = 1024 * 1024
MANIFEST_LIMIT = 64 * 1024 * 1024


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


def dir_part(prefix: str) -> str:
    """``s3://b/in/`` for ``s3://b/in/``, ``s3://b/in/data.csv`` and ``s3://b/in/da``: what output
    paths are relative to."""
    return prefix[: prefix.rfind("/") + 1]


def list_prefix(blobs: BlobStore, uri: str) -> list[InputObject]:
    """Every object whose key starts with the prefix, in key order."""
    base = dir_part(uri)
    if base.endswith("://"):  # a whole bucket: s3://bucket
        base = uri + "/"
    try:
        return [InputObject(info.uri, info.uri[len(base) :], info.size) for info in blobs.list(uri)]
    except BlobNotFound:
        return []
    except BlobError as exc:
        raise InputError(str(exc)) from None


def _read_all(blobs: BlobStore, uri: str, limit: int) -> bytes:
    reader = blobs.open(uri)
    try:
        parts = []
        total = 0
        while chunk := reader.read(OPEN_BUFFER):
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InputError(f"The manifest file {uri} is larger than {limit // (1024 * 1024)} MB.")
        return b"".join(parts)
    finally:
        reader.close()


def read_manifest(blobs: BlobStore, uri: str) -> list[InputObject]:
    try:
        doc = json.loads(_read_all(blobs, uri, MANIFEST_LIMIT))
    except (BlobNotFound, BlobError, OSError):
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
            size = blobs.stat(full).size
        except (BlobNotFound, BlobError):
            size = -1  # reported when the object is processed: that object fails, the others run
        out.append(InputObject(full, rel, size))
    return out


def list_inputs(blobs: BlobStore, data_source: dict) -> list[InputObject]:
    s3 = data_source["S3DataSource"]
    uri = s3["S3Uri"]
    found = read_manifest(blobs, uri) if s3["S3DataType"] == "ManifestFile" else list_prefix(blobs, uri)
    if not found:
        raise no_objects(uri)
    return found


class _Raw(io.RawIOBase):
    """A BlobReader as a raw stream (for io.BufferedReader)."""

    def __init__(self, reader: BlobReader) -> None:
        super().__init__()
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._reader.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class _Gunzip(gzip.GzipFile):
    """Decompresses a stream and closes it with itself."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        super().__init__(fileobj=source, mode="rb")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._source.close()


def open_input(blobs: BlobStore, obj: InputObject, compression: str | None) -> IO[bytes]:
    """A buffered binary stream of the object's (decompressed) bytes."""
    try:
        reader = blobs.open(obj.uri)
    except (BlobNotFound, BlobError):
        raise InputError(f"The input object {obj.uri} does not exist.") from None
    raw = reader if isinstance(reader, io.RawIOBase) else _Raw(reader)
    stream = io.BufferedReader(raw, OPEN_BUFFER)
    if compression == "Gzip":
        return cast(IO[bytes], _Gunzip(stream))
    return cast(IO[bytes], stream)
