"""A real S3-compatible service behind ``s3://`` URIs (``MODELHOST_S3_ENDPOINT_URL``).

Instances read files, so objects are mirrored on read into ``<data-dir>/s3-mirror`` (one copy
per bucket, key and ETag; a changed object is fetched again); writes go straight to the service.
Credentials and region come from the usual AWS environment or configuration.

Asynchronous inference streams request payloads from the service (``open_stream``) and uploads
its output and failure objects from local files (``put_file``: one PUT, or a multipart upload
whose completion is atomic, so an object appears whole or not at all).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


class RemoteS3Error(OSError):
    """The service refused or could not be reached (an OSError, like a failed local write)."""


MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class RemoteStream:
    """A GetObject body read in pieces (``read(n)``, ``close()``); service errors become RemoteS3Error."""

    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self.size = size

    def read(self, n: int) -> bytes:
        try:
            return bytes(self._body.read(n))
        except (BotoCoreError, ClientError) as exc:
            raise RemoteS3Error(f"reading the object failed: {exc}") from None

    def close(self) -> None:
        self._body.close()


class RemoteS3:
    def __init__(self, endpoint_url: str, mirror_dir: Path, region: str) -> None:
        session = boto3.Session()
        if session.get_credentials() is None:
            session = boto3.Session(aws_access_key_id="modelhost", aws_secret_access_key="modelhost")
        self.client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 3}, s3={"addressing_style": "path"}),
        )
        self.mirror_dir = mirror_dir
        self._lock = threading.Lock()

    @staticmethod
    def split(uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        return parsed.netloc, unquote(parsed.path.lstrip("/"))

    def head(self, uri: str) -> dict | None:
        bucket, key = self.split(uri)
        try:
            return dict(self.client.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return None
            raise

    def fetch(self, uri: str, etag: str | None = None) -> Path:
        """Mirror one object locally and return the file (downloaded again when its ETag changed)."""
        bucket, key = self.split(uri)
        if etag is None:
            head = self.head(uri)
            if head is None:
                raise FileNotFoundError(uri)
            etag = head["ETag"]
        digest = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()[:32]
        target = self.mirror_dir / bucket / digest / Path(key).name
        with self._lock:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
                self.client.download_file(bucket, key, str(tmp))
                os.replace(tmp, target)
        return target

    def list(self, uri: str) -> Iterator[dict]:
        bucket, prefix = self.split(uri)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def fetch_prefix(self, uri: str) -> Path:
        """Mirror every object under a prefix into one directory tree (keys relative to the prefix)."""
        bucket, prefix = self.split(uri)
        objects = list(self.list(uri))
        if not objects:
            raise FileNotFoundError(uri)
        fingerprint = hashlib.sha256("".join(f"{o['Key']}\0{o['ETag']}\0" for o in objects).encode()).hexdigest()
        root = self.mirror_dir / bucket / f"prefix-{fingerprint[:32]}"
        with self._lock:
            if not root.is_dir():
                tmp = root.with_name(root.name + f".{os.getpid()}.part")
                for o in objects:
                    rel = o["Key"][len(prefix) :].lstrip("/")
                    if not rel or rel.endswith("/") or ".." in Path(rel).parts:
                        continue
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(bucket, o["Key"], str(dest))
                tmp.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, root)
        return root

    def put(self, uri: str, data: bytes) -> None:
        bucket, key = self.split(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def open_stream(self, uri: str) -> RemoteStream:
        """Open one object for streaming; FileNotFoundError when it (or its bucket) does not exist."""
        bucket, key = self.split(uri)
        try:
            got = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in MISSING:
                raise FileNotFoundError(uri) from None
            raise RemoteS3Error(f"{exc.response['Error'].get('Message') or exc}") from None
        except BotoCoreError as exc:
            raise RemoteS3Error(str(exc)) from None
        return RemoteStream(got["Body"], int(got["ContentLength"]))

    def put_file(self, uri: str, path: Path, content_type: str | None = None) -> None:
        """Upload a local file to the object (atomic on the service: PUT or multipart complete)."""
        bucket, key = self.split(uri)
        extra = {"ContentType": content_type} if content_type else None
        try:
            self.client.upload_file(str(path), bucket, key, ExtraArgs=extra)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise RemoteS3Error(str(exc)) from None
