"""A real S3-compatible service behind ``s3://`` URIs (``MODELHOST_S3_ENDPOINT_URL``).

Instances read files, so objects are mirrored on read into ``<data-dir>/s3-mirror`` (one copy
per bucket, key and ETag; a changed object is fetched again); writes go straight to the service.
Credentials and region come from the usual AWS environment or configuration.
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
from botocore.config import Config
from botocore.exceptions import ClientError


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
