"""Model artifacts, extracted once per artifact into a cache shared by instances.

Extraction is safe: tar members may not escape the target (``..``, absolute paths, links
pointing outside) and device files are refused (tarfile's ``data`` filter), and a half-extracted
archive is never visible (extract into a temp dir, then rename).

Extraction is bounded: the bytes an archive expands to are capped (``max_bytes``:
``MODELHOST_MAX_ARTIFACT_BYTES``, default 10 x the variant's ``VolumeSizeInGB``, else
:data:`DEFAULT_MAX_BYTES`), as is the compression ratio (:data:`MAX_RATIO`:1 once more than
:data:`RATIO_FLOOR` is extracted) and the number of members. Member sizes are checked from the tar
headers before a member is written, so a bomb is refused before it fills the disk.

Local model locations (``file://`` URIs and paths) are read only under the allowed directories
(the data dir and ``MODELHOST_ALLOWED_MODEL_DIRS``), symlinks and ``..`` resolved first:
:func:`location_refusal` is the rule, checked by CreateModel and again here when an artifact is
materialised.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore, is_s3

GIB = 1024**3
DEFAULT_MAX_BYTES = 30 * GIB  # without MODELHOST_MAX_ARTIFACT_BYTES or a VolumeSizeInGB
VOLUME_FACTOR = 10  # x VolumeSizeInGB when the variant sets it
MAX_RATIO = 200  # extracted bytes per archive byte
RATIO_FLOOR = 1024 * 1024  # the ratio applies once this much is extracted
MAX_MEMBERS = 1_000_000
ALLOWED_DIRS_ENV = "MODELHOST_ALLOWED_MODEL_DIRS"
CONTAINER_MODEL_DIR = "/opt/ml/model"  # SAGEMAKER_SUBMIT_DIRECTORY paths under it are the model itself


class ArtifactError(Exception):
    """The artifact cannot be used; the message is the endpoint's FailureReason."""


def max_artifact_bytes(configured: int, volume_size_gb: int | None) -> int:
    """MODELHOST_MAX_ARTIFACT_BYTES when set (> 0), else 10 x VolumeSizeInGB, else 30 GiB."""
    if configured > 0:
        return configured
    if volume_size_gb:
        return VOLUME_FACTOR * volume_size_gb * GIB
    return DEFAULT_MAX_BYTES


def local_location(uri: str) -> Path | None:
    """The local path a model location names (``file://`` or a path), None for ``s3://`` and other schemes."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path) or "/")
    if is_s3(uri) or "://" in uri:
        return None
    return Path(uri).expanduser()


def is_allowed(path: Path, allowed: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == root or real.is_relative_to(root) for root in (Path(os.path.realpath(a)) for a in allowed))


def location_refusal(member: str, uri: str, allowed: Sequence[Path]) -> str | None:
    """The ValidationException / FailureReason text for a local location outside ``allowed``, else None."""
    path = local_location(uri) if uri else None
    if path is None or is_allowed(path, allowed):
        return None
    return f"{member} {uri} is outside the directories modelhost may read models from ({ALLOWED_DIRS_ENV})."


def submit_dir_refusal(value: str, allowed: Sequence[Path]) -> str | None:
    """SAGEMAKER_SUBMIT_DIRECTORY: s3:// and container paths under /opt/ml/model are fine; other paths are
    local locations."""
    if not value or is_s3(value):
        return None
    raw = value.removeprefix("file://")
    if raw == CONTAINER_MODEL_DIR or raw.startswith(CONTAINER_MODEL_DIR + "/"):
        if ".." not in Path(raw).parts:
            return None
    return location_refusal("Environment.SAGEMAKER_SUBMIT_DIRECTORY", value, allowed)


def share_with_group(root: Path, gid: int) -> None:
    """Let ``gid`` (an instance user's group) read ``root`` and everything under it (idempotent)."""
    try:
        st = root.stat()
        if st.st_gid == gid and st.st_mode & 0o050 == 0o050:
            return
    except FileNotFoundError:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            p = os.path.join(dirpath, name)
            os.lchown(p, -1, gid)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, mode | 0o040 | (0o010 if mode & 0o100 else 0))
    os.chown(root, -1, gid)
    os.chmod(root, root.stat().st_mode | 0o050)  # the top directory last: it marks the tree as done


class ArtifactCache:
    def __init__(
        self,
        blobs: BlobStore,
        cache_dir: Path,
        allowed_dirs: Sequence[Path] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.blobs = blobs
        self.cache_dir = cache_dir
        self.allowed_dirs = allowed_dirs  # None: any local path (unit tests, tools)
        self.max_bytes = max_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def materialize(
        self,
        model_data_url: str | None,
        data_source: dict | None = None,
        *,
        max_bytes: int | None = None,
        share_gid: int | None = None,
        member: str | None = None,
    ) -> Path:
        """Return a local directory holding the model (empty when the model has no artifact).

        ``max_bytes`` caps what an archive expands to (the cache's default otherwise); ``share_gid``
        makes the result readable by that group (instances running as another user), copying
        directories that would otherwise be used in place; ``member`` names the location in refusals."""
        limit = max_bytes or self.max_bytes
        if data_source is not None:
            s3 = data_source.get("S3DataSource") or {}
            uri = s3.get("S3Uri", "")
            self._check_location(member or "ModelDataSource.S3DataSource.S3Uri", uri)
            if s3.get("CompressionType", "None") == "None":
                out = self._prefix(uri, s3.get("S3DataType", "S3Prefix"), limit, share_gid)
            else:
                out = self._archive(uri, limit, share_gid)
        elif model_data_url:
            self._check_location(member or "ModelDataUrl", model_data_url)
            out = self._archive(model_data_url, limit, share_gid)
        else:
            out = self.cache_dir / "empty"
            out.mkdir(parents=True, exist_ok=True)
        if share_gid is not None and out.parent == self.cache_dir:
            os.chown(self.cache_dir, -1, share_gid)
            os.chmod(self.cache_dir, 0o750)
            share_with_group(out, share_gid)
        return out

    def _check_location(self, member: str, uri: str) -> None:
        if self.allowed_dirs is not None:
            reason = location_refusal(member, uri, self.allowed_dirs)
            if reason is not None:
                raise ArtifactError(reason)

    def _key(self, kind: str, uri: str, fingerprint: str) -> str:
        return hashlib.sha256(f"{kind}\0{uri}\0{fingerprint}".encode()).hexdigest()[:32]

    def _archive(self, uri: str, limit: int, share_gid: int | None) -> Path:
        try:
            path = self.blobs.local_path(uri)  # the object's file (a mirrored copy for a remote store)
            if path.is_dir():
                # A local directory given as ModelDataUrl is used as it is (handy for `modelhost deploy DIR`).
                return self._copy_dir(uri, path, limit) if share_gid is not None else path
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
                    tar.extractall(tmp, members=self._bounded(tar, uri, limit, path.stat().st_size), filter="data")
            except ArtifactError:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
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
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            try:
                os.replace(tmp, target)
            except OSError:
                # Another process sharing this cache (Ray actors and replicas on one node) got there first.
                shutil.rmtree(tmp, ignore_errors=True)
                if not target.is_dir():
                    raise
            return target

    @staticmethod
    def _bounded(tar: tarfile.TarFile, uri: str, limit: int, compressed: int) -> Iterator[tarfile.TarInfo]:
        """The archive's members, refusing the first one that takes the total past a limit."""
        total = 0
        for count, member in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise ArtifactError(f"Refused to extract model data {uri}: it has more than {MAX_MEMBERS} members.")
            total += max(member.size, 0) if member.isreg() else 0
            if total > limit:
                raise ArtifactError(
                    f"Refused to extract model data {uri}: it expands to more than {limit} bytes, the limit for "
                    "extracted model data (MODELHOST_MAX_ARTIFACT_BYTES; default 10 x the variant's VolumeSizeInGB, "
                    "else 30 GiB)."
                )
            if total > RATIO_FLOOR and total > MAX_RATIO * max(compressed, 1):
                raise ArtifactError(
                    f"Refused to extract model data {uri}: it expands to more than {MAX_RATIO} times its "
                    f"compressed size of {compressed} bytes (a decompression bomb?)."
                )
            if member.isreg():  # private to the server's user (0600 / 0700 for executables)
                member.mode = (member.mode & 0o100) | 0o600
            yield member

    def _copy_dir(self, uri: str, src: Path, limit: int) -> Path:
        """A copy of a local directory in the cache (for instances that cannot read it in place)."""
        files = [Path(d) / n for d, _dirs, names in os.walk(src) for n in names]
        stats = [(str(f.relative_to(src)), f.stat()) for f in files if f.is_file()]
        size = sum(st.st_size for _, st in stats)
        if size > limit:
            raise ArtifactError(
                f"Refused to copy model data {uri}: it holds more than {limit} bytes (MODELHOST_MAX_ARTIFACT_BYTES)."
            )
        key = self._key("dir", uri, ";".join(f"{n}:{st.st_size}:{st.st_mtime_ns}" for n, st in sorted(stats)))
        target = self.cache_dir / key
        with self._lock(key):
            if not target.is_dir():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=self.cache_dir))
                try:
                    shutil.copytree(src, tmp / "tree", symlinks=False)
                    os.replace(tmp / "tree", target)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _prefix(self, uri: str, data_type: str, limit: int, share_gid: int | None) -> Path:
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
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=self.cache_dir))
                    shutil.copy2(path, tmp / path.name)
                    os.replace(tmp, target)
            return target
        if not path.is_dir():
            raise ArtifactError(f"Failed to download model data from {uri}: no objects under the prefix.")
        # Uncompressed prefixes in the local bucket store are already files on disk: use them in place
        # (a copy when instances run as another user, who cannot read the bucket store).
        return self._copy_dir(uri, path, limit) if share_gid is not None else path
