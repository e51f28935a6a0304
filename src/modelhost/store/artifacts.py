"""Model artifacts, extracted once per artifact into a cache shared by instances.

Extraction is safe: tar members may not escape the target (``..``, absolute paths, links
pointing outside) and device files are refused (tarfile's ``data`` filter), and a half-extracted
archive is never visible (extract into a temp dir, then rename).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import zlib
from pathlib import Path

from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore


class ArtifactError(Exception):
    """The artifact cannot be used; the message is the endpoint's FailureReason."""


class ArtifactCache:
    def __init__(self, blobs: BlobStore, cache_dir: Path) -> None:
        self.blobs = blobs
        self.cache_dir = cache_dir
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def materialize(self, model_data_url: str | None, data_source: dict | None = None) -> Path:
        """Return a local directory holding the model (empty when the model has no artifact)."""
        if data_source is not None:
            s3 = data_source.get("S3DataSource") or {}
            uri = s3.get("S3Uri", "")
            if s3.get("CompressionType", "None") == "None":
                return self._prefix(uri, s3.get("S3DataType", "S3Prefix"))
            return self._archive(uri)
        if model_data_url:
            return self._archive(model_data_url)
        empty = self.cache_dir / "empty"
        empty.mkdir(parents=True, exist_ok=True)
        return empty

    def _key(self, kind: str, uri: str, fingerprint: str) -> str:
        return hashlib.sha256(f"{kind}\0{uri}\0{fingerprint}".encode()).hexdigest()[:32]

    def _archive(self, uri: str) -> Path:
        try:
            path = self.blobs.local_path(uri)  # the object's file (a mirrored copy for a remote store)
            if path.is_dir():
                # A local directory given as ModelDataUrl is used as it is (handy for `modelhost deploy DIR`).
                return path
            info = self.blobs.stat(uri)
        except (BlobNotFound, BlobError) as exc:
            raise ArtifactError(f"Failed to download model data from {uri}: {exc}.") from None
        key = self._key("tar", uri, f"{info.size}:{info.mtime}:{info.etag}")
        target = self.cache_dir / key
        with self._lock(key):
            if target.is_dir():
                return target
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=self.cache_dir))
            try:
                with tarfile.open(path, "r:*") as tar:
                    tar.extractall(tmp, filter="data")
            except (
                tarfile.OutsideDestinationError,
                tarfile.AbsoluteLinkError,
                tarfile.LinkOutsideDestinationError,
                tarfile.AbsolutePathError,
                tarfile.SpecialFileError,
            ) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ArtifactError(f"Refused to extract model data {uri}: unsafe archive member ({exc}).") from None
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ArtifactError(
                    f"Failed to extract model data archive {uri}: {type(exc).__name__}: {exc}. "
                    "Please ensure that the model data is a valid tar.gz file."
                ) from None
            os.replace(tmp, target)
            return target

    def _prefix(self, uri: str, data_type: str) -> Path:
        try:
            path = self.blobs.local_path(uri)
        except (BlobNotFound, BlobError) as exc:
            raise ArtifactError(f"Failed to download model data from {uri}: {exc}.") from None
        if data_type == "S3Object":
            if not path.is_file():
                raise ArtifactError(f"Failed to download model data from {uri}: object does not exist.")
            key = self._key("obj", uri, str(path.stat().st_mtime))
            target = self.cache_dir / key
            with self._lock(key):
                if not target.is_dir():
                    tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=self.cache_dir))
                    shutil.copy2(path, tmp / path.name)
                    os.replace(tmp, target)
            return target
        if not path.is_dir():
            raise ArtifactError(f"Failed to download model data from {uri}: no objects under the prefix.")
        # Uncompressed prefixes in the local bucket store are already files on disk: use them in place.
        return path
