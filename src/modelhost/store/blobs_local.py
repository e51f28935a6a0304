"""The local blob store: ``s3://`` in the embedded bucket store (``<data-dir>/buckets``), local files
for the rest.

Objects are written through :meth:`BucketStore.commit`, so their ETag and Content-Type are in the
bucket store's metadata index (what the S3 API then serves), and a write is atomic (a temp file in
the bucket store's ``tmp`` directory, renamed onto the key); ``put_bytes`` of a small object keeps
it inline in the index (no file), and ``local_path`` writes such objects out as files first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import cast

from modelhost.store.blobs import BlobError, BlobInfo, BlobNotFound, S3Uri
from modelhost.store.blobs_files import FileBlobs, FileReader
from modelhost.store.blobs_scheme import SchemeBlobStore, missing_bucket
from modelhost.store.buckets import (
    DEFAULT_CONTENT_TYPE,
    BucketStore,
    InvalidBucketName,
    NoSuchBucket,
    ObjectAttrs,
    S3StoreError,
    check_key,
    file_md5,
)


class BytesReader(io.RawIOBase):
    """A :class:`~modelhost.store.blobs.BlobReader` over an inline object's bytes."""

    def __init__(self, f: io.BytesIO, size: int) -> None:
        super().__init__()
        self._f = f
        self.size = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._f.readinto(buffer)

    def read(self, n: int = -1, /) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()
        super().close()


class BucketBlobs:
    """``s3://bucket/key`` as objects of a :class:`BucketStore`."""

    def __init__(self, buckets: BucketStore) -> None:
        self.buckets = buckets

    @staticmethod
    def _refused(uri: S3Uri, exc: S3StoreError) -> BlobError:
        if isinstance(exc, NoSuchBucket):
            return missing_bucket(uri.bucket)
        if isinstance(exc, InvalidBucketName):
            return BlobError(f"invalid bucket name in {uri}")
        return BlobError(f"{uri} cannot be written: {exc.message}")

    def _writable(self, uri: S3Uri) -> None:
        try:
            self.buckets.object_path(uri.bucket, uri.key)
        except S3StoreError as exc:
            raise self._refused(uri, exc) from None

    def stat(self, uri: str) -> BlobInfo:
        s3 = S3Uri.parse(uri)
        try:
            meta = self.buckets.head_object(s3.bucket, s3.key)
        except S3StoreError:
            raise BlobNotFound(f"{uri} does not exist") from None
        return BlobInfo(uri, meta.size, meta.mtime, meta.etag)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        s3 = S3Uri.parse(prefix)
        found = False
        try:
            for key, st in self.buckets.iter_keys(s3.bucket, s3.key):
                found = True
                yield BlobInfo(f"s3://{s3.bucket}/{key}", st.st_size, st.st_mtime)
        except S3StoreError:
            pass
        if not found:
            raise BlobNotFound(f"no objects under {prefix}")

    def open(self, uri: str) -> FileReader | BytesReader:
        s3 = S3Uri.parse(uri)
        try:
            meta, f = self.buckets.open_object(s3.bucket, s3.key)
        except S3StoreError:
            raise BlobNotFound(f"{uri} does not exist") from None
        if isinstance(f, io.BytesIO):  # an inline object (no file)
            return BytesReader(f, meta.size)
        raw = cast(io.BufferedReader, f).detach()  # the handle open_object opened: exactly those bytes
        return FileReader(cast(io.FileIO, raw), meta.size)

    def local_path(self, uri: str) -> Path:
        """The object's file, or the directory of a prefix (keys may not escape their bucket)."""
        s3 = S3Uri.parse(uri)
        if s3.bucket in (".", "..") or "/" in s3.bucket:
            raise BlobError(f"invalid bucket in {uri}")
        root = (self.buckets.buckets_dir / s3.bucket).resolve()
        path = (root / s3.key).resolve() if s3.key else root
        if path != root and root not in path.parents:
            raise BlobError(f"key escapes its bucket: {uri}")
        with contextlib.suppress(S3StoreError):  # inline objects there become files first
            key = s3.key.rstrip("/")
            if key:
                self.buckets.materialize(s3.bucket, key)
            self.buckets.materialize_under(s3.bucket, f"{key}/" if key else "")
        if not path.exists():
            raise BlobNotFound(f"{uri} does not exist")
        return path

    def check_writable(self, uri: str) -> None:
        """For an object URI or a prefix (``s3://bucket/`` or ``s3://bucket/out/``) to write under."""
        s3 = S3Uri.parse(uri)
        key = s3.key.rstrip("/")
        try:
            self.buckets.bucket_dir(s3.bucket)
            if key:
                check_key(key)
        except S3StoreError as exc:
            raise self._refused(s3, exc) from None

    def staging_dir(self) -> Path:
        self.buckets.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.buckets.tmp_dir

    def _commit(self, s3: S3Uri, tmp: Path, md5: str, content_type: str | None) -> None:
        try:
            self.buckets.commit(s3.bucket, s3.key, tmp, md5, ObjectAttrs(content_type or DEFAULT_CONTENT_TYPE))
        except S3StoreError as exc:  # commit removed the temp file
            raise self._refused(s3, exc) from None

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        s3 = S3Uri.parse(uri)
        try:
            self.buckets.write_object(
                s3.bucket,
                s3.key,
                data,
                hashlib.md5(data).hexdigest(),
                ObjectAttrs(content_type or DEFAULT_CONTENT_TYPE),
            )
        except S3StoreError as exc:
            raise self._refused(s3, exc) from None

    def put_file(self, uri: str, path: Path, content_type: str | None = None, md5: str | None = None) -> None:
        try:
            s3 = S3Uri.parse(uri)
            self._writable(s3)
            if md5 is None:
                with open(path, "rb") as f:
                    md5 = file_md5(f)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        self._commit(s3, path, md5, content_type)

    def delete(self, uri: str) -> None:
        s3 = S3Uri.parse(uri)
        with contextlib.suppress(S3StoreError):
            self.buckets.delete_object(s3.bucket, s3.key)

    def batch(self) -> AbstractContextManager[None]:
        return self.buckets.batch()

    def batch_now(self) -> AbstractContextManager[bool]:
        """``batch`` only if it need not wait (True): small objects written on an event loop."""
        return self.buckets.batch_now()


class LocalBlobStore(SchemeBlobStore):
    """Every URI on this machine: ``s3://`` in the embedded bucket store, ``file://`` and paths as files."""

    def __init__(self, buckets: BucketStore) -> None:
        super().__init__(BucketBlobs(buckets), FileBlobs(buckets.tmp_dir))
        self.buckets = buckets
