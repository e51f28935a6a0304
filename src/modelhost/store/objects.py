"""One object-store interface addressed by URI.

``s3://bucket/key`` lives in the embedded bucket store (a directory per bucket under the data
dir); ``file:///abs/path`` and plain paths are local files. Later a real S3-compatible service
can back ``s3://`` when configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


class ObjectNotFound(Exception):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    path: Path
    size: int
    mtime: float


class ObjectStore:
    def __init__(self, buckets_dir: Path) -> None:
        self.buckets_dir = buckets_dir

    def local_path(self, uri: str) -> Path:
        """The file behind a URI. Bucket keys may not escape their bucket."""
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

    def stat(self, uri: str) -> ObjectInfo:
        path = self.local_path(uri)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"{uri} does not exist") from None
        return ObjectInfo(uri, path, st.st_size, st.st_mtime)

    def list_prefix(self, uri: str) -> Iterator[ObjectInfo]:
        """Every file under a prefix (a directory, for local stores), sorted by key."""
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
        """Write an object atomically (temp file + rename)."""
        path = self.local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
