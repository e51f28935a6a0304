"""The remote blob store: ``s3://`` in a real S3-compatible service (``MODELHOST_S3_ENDPOINT_URL``,
through :class:`~modelhost.store.remote_s3.RemoteS3`), local files for the rest.

Reads that need a file (``local_path``: model artifacts) are served from RemoteS3's mirror, kept
per ETag; streams (``open``) read the service directly; writes are one PUT or a multipart upload
whose completion is atomic, so an object appears whole or not at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from modelhost.store.blobs import BlobError, BlobInfo, BlobNotFound, BlobReader, S3Uri
from modelhost.store.blobs_files import FileBlobs
from modelhost.store.blobs_scheme import SchemeBlobStore, missing_bucket
from modelhost.store.remote_s3 import MISSING, RemoteS3, RemoteS3Error


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _etag(doc: dict[str, Any]) -> str | None:
    etag = doc.get("ETag")
    return str(etag).strip('"') if etag else None  # without quotes, as the local store's


class S3Blobs:
    """``s3://bucket/key`` as objects of a real S3 service."""

    def __init__(self, remote: RemoteS3, staging: Path) -> None:
        self.remote = remote
        self.client: Any = remote.client
        self._staging = staging

    def _failed(self, s3: S3Uri, exc: Exception) -> BlobError:
        if isinstance(exc, ClientError):
            if _code(exc) == "NoSuchBucket":
                return missing_bucket(s3.bucket)
            message = exc.response.get("Error", {}).get("Message") or str(exc)
            return BlobError(f"{s3}: {_code(exc)}: {message}")
        if isinstance(exc, Boto3Error) and "(NoSuchBucket)" in str(exc):  # upload_file wraps the ClientError
            return missing_bucket(s3.bucket)
        return BlobError(f"{s3}: {exc}")

    def stat(self, uri: str) -> BlobInfo:
        s3 = S3Uri.parse(uri)
        try:
            head = self.remote.head(uri)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(s3, exc) from None
        if head is None:
            raise BlobNotFound(f"{uri} does not exist")
        return BlobInfo(uri, int(head["ContentLength"]), head["LastModified"].timestamp(), _etag(head))

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        s3 = S3Uri.parse(prefix)
        found = False
        try:
            for obj in self.remote.list(prefix):
                found = True
                uri = f"s3://{s3.bucket}/{obj['Key']}"
                yield BlobInfo(uri, int(obj["Size"]), obj["LastModified"].timestamp(), _etag(obj))
        except ClientError as exc:
            if _code(exc) not in MISSING:
                raise self._failed(s3, exc) from None
        except BotoCoreError as exc:
            raise self._failed(s3, exc) from None
        if not found:
            raise BlobNotFound(f"no objects under {prefix}")

    def open(self, uri: str) -> BlobReader:
        S3Uri.parse(uri)
        try:
            return self.remote.open_stream(uri)
        except FileNotFoundError:
            raise BlobNotFound(f"{uri} does not exist") from None
        except RemoteS3Error as exc:
            raise BlobError(f"{uri}: {exc}") from None

    def local_path(self, uri: str) -> Path:
        s3 = S3Uri.parse(uri)
        try:
            if not s3.key or s3.key.endswith("/") or self.remote.head(uri) is None:
                return self.remote.fetch_prefix(uri)
            return self.remote.fetch(uri)
        except FileNotFoundError:
            raise BlobNotFound(f"{uri} does not exist") from None
        except ClientError as exc:
            if _code(exc) in MISSING:
                raise BlobNotFound(f"{uri} does not exist") from None
            raise self._failed(s3, exc) from None
        except (BotoCoreError, Boto3Error, OSError) as exc:
            raise self._failed(s3, exc) from None

    def check_writable(self, uri: str) -> None:
        s3 = S3Uri.parse(uri)
        try:
            self.client.head_bucket(Bucket=s3.bucket)
        except ClientError as exc:
            if _code(exc) in MISSING:
                raise missing_bucket(s3.bucket) from None
            raise self._failed(s3, exc) from None
        except BotoCoreError as exc:
            raise self._failed(s3, exc) from None

    def staging_dir(self) -> Path:
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        s3 = S3Uri.parse(uri)
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(Bucket=s3.bucket, Key=s3.key, Body=data, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(s3, exc) from None

    def put_file(self, uri: str, path: Path, content_type: str | None = None, md5: str | None = None) -> None:
        try:
            s3 = S3Uri.parse(uri)
            extra = {"ContentType": content_type} if content_type else None
            self.client.upload_file(str(path), s3.bucket, s3.key, ExtraArgs=extra)
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._failed(s3, exc) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def delete(self, uri: str) -> None:
        s3 = S3Uri.parse(uri)
        try:
            self.client.delete_object(Bucket=s3.bucket, Key=s3.key)
        except ClientError as exc:
            if _code(exc) not in MISSING:
                raise self._failed(s3, exc) from None
        except BotoCoreError as exc:
            raise self._failed(s3, exc) from None

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()

    def batch_now(self) -> AbstractContextManager[bool]:
        return nullcontext(False)  # (files and network writes block: always from a thread)


class RemoteBlobStore(SchemeBlobStore):
    """``s3://`` in a real S3 service, ``file://`` and paths as local files. ``staging`` holds the
    temp files of writes (uploaded, then deleted)."""

    def __init__(self, remote: RemoteS3, staging: Path) -> None:
        super().__init__(S3Blobs(remote, staging), FileBlobs(staging))
        self.remote = remote
