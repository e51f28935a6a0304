"""One object-store interface addressed by URI.

``s3://bucket/key`` lives in the embedded bucket store (a directory per bucket under the data
dir), or, when ``remote`` is configured (``MODELHOST_S3_ENDPOINT_URL``), in a real S3-compatible
service whose objects are mirrored locally on read (store/remote_s3.py); ``file:///abs/path`` and
plain paths are local files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelhost.store.remote_s3 import RemoteS3


class ObjectNotFound(Exception):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    path: Path
    size: int
    mtime: float


class ObjectStore:
    def __init__(self, buckets_dir: Path, remote: RemoteS3 | None = None) -> None:
        self.buckets_dir = buckets_dir
        self.remote = remote

    def local_path(self, uri: str) -> Path:
        """The file behind a URI. Bucket keys may not escape their bucket."""
        if self.remote is not None and uri.startswith("s3://"):
            return self._remote_path(uri)
        if uri.startswith("s3://"):
            parsed = urlparse(uri)
            bucket, key = parsed.netloc, unquote(parsed.path.lstrip("/"))
            if not bucket or bucket in (".", "..") or "/" in bucket:
                raise ObjectNotFound(f"invalid bucket in {uri}")
            root = (self.buckets_dir / bucket).resolve()
            path = (root / key).resolve() if key else root
            if path != root and root not in path.parents:
                raise ObjectNotFound(f"key escapes its bucket: {uri}")
            return path
        if uri.startswith("file://"):
            return Path(unquote(urlparse(uri).path))
        if "://" in uri:
            raise ObjectNotFound(f"unsupported URI scheme: {uri}")
        return Path(uri).expanduser().resolve()

    def _remote_path(self, uri: str) -> Path:
        assert self.remote is not None
        try:
            if uri.endswith("/") or self.remote.head(uri) is None:
                return self.remote.fetch_prefix(uri)
            return self.remote.fetch(uri)
        except FileNotFoundError:
            raise ObjectNotFound(f"{uri} does not exist") from None

    def stat(self, uri: str) -> ObjectInfo:
        if self.remote is not None and uri.startswith("s3://"):
            head = self.remote.head(uri)
            if head is None:
                raise ObjectNotFound(f"{uri} does not exist")
            path = self.remote.fetch(uri, head["ETag"])
            return ObjectInfo(uri, path, int(head["ContentLength"]), head["LastModified"].timestamp())
        path = self.local_path(uri)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"{uri} does not exist") from None
        return ObjectInfo(uri, path, st.st_size, st.st_mtime)

    def list_prefix(self, uri: str) -> Iterator[ObjectInfo]:
        """Every file under a prefix (a directory, for local stores), sorted by key."""
        if self.remote is not None and uri.startswith("s3://"):
            bucket, _ = self.remote.split(uri)
            for obj in self.remote.list(uri):
                object_uri = f"s3://{bucket}/{obj['Key']}"
                path = self.remote.fetch(object_uri, obj["ETag"])
                yield ObjectInfo(object_uri, path, int(obj["Size"]), obj["LastModified"].timestamp())
            return
        root = self.local_path(uri)
        if root.is_file():
            yield self.stat(uri)
            return
        if not root.is_dir():
            raise ObjectNotFound(f"no objects under {uri}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                st = path.stat()
                rel = path.relative_to(root).as_posix()
                yield ObjectInfo(uri.rstrip("/") + "/" + rel, path, st.st_size, st.st_mtime)

    def put_bytes(self, uri: str, data: bytes) -> None:
        """Write an object atomically (temp file + rename; one PUT for a remote store)."""
        if self.remote is not None and uri.startswith("s3://"):
            self.remote.put(uri, data)
            return
        path = self.local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
