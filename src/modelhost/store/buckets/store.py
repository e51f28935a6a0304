"""Bucket and object operations over ``<data-dir>/buckets`` (see the package doc for the layout)."""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from modelhost.store.buckets.checksums import COPY_CHUNK, file_md5
from modelhost.store.buckets.errors import (
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    InvalidArgument,
    NoSuchBucket,
    NoSuchKey,
    PreconditionFailed,
)
from modelhost.store.buckets.index import InlineStat, MetaIndex, Stat, stamp
from modelhost.store.buckets.names import LEGACY_BUCKET, check_bucket_name, check_key, check_new_bucket_name
from modelhost.store.buckets.objects import Bucket, ObjectAttrs, ObjectMeta, ObjectWriter
from modelhost.store.buckets.tree import install, is_file, prune_empty_dirs, walk

# Objects written from memory up to this size are kept in the index (no file): creating a file
# costs 0.6-1 ms of kernel time on some virtual disks, a row ~20 us (bench/async.py).
INLINE_LIMIT = int(os.environ.get("MODELHOST_INLINE_OBJECT_BYTES", str(128 * 1024)))


class BucketStore:
    """Bucket and object operations over ``<data-dir>/buckets`` (blocking: call from a thread)."""

    def __init__(self, buckets_dir: Path, data_dir: Path) -> None:
        self.buckets_dir = buckets_dir
        self.meta_dir = data_dir / "buckets-meta"
        self.tmp_dir = self.meta_dir / "tmp"
        self.index = MetaIndex(self.meta_dir / "objects.db")
        # Taken before the index's own lock, always (batch() too): the other order deadlocked a batch
        # against a commit from another thread. Re-entered by the commits inside a batch.
        self._commit_lock = threading.RLock()
        self._names = itertools.count()  # temp file names of write_object (O_EXCL, so unique per process)
        self._prefix = f"{os.getpid()}-{os.urandom(3).hex()}"
        self.buckets_dir.mkdir(parents=True, exist_ok=True)
        # Temp files left by a crash mid-upload are garbage: nothing refers to them.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # --- buckets -------------------------------------------------------------------------------

    def bucket_dir(self, bucket: str) -> Path:
        """The directory of an existing bucket (NoSuchBucket otherwise)."""
        check_bucket_name(bucket)
        path = self.buckets_dir / bucket
        if not path.is_dir():
            raise NoSuchBucket("The specified bucket does not exist", BucketName=bucket)
        return path

    def list_buckets(self) -> list[Bucket]:
        out = []
        with os.scandir(self.buckets_dir) as it:
            for entry in it:
                if entry.is_dir() and LEGACY_BUCKET.fullmatch(entry.name):
                    out.append(self.head_bucket(entry.name))
        return sorted(out, key=lambda b: b.name)

    def head_bucket(self, bucket: str) -> Bucket:
        path = self.bucket_dir(bucket)
        row = self.index.bucket(bucket)
        if row is not None:
            return Bucket(bucket, row[0], row[1] or "")
        return Bucket(bucket, path.stat().st_mtime, "")

    def create_bucket(self, bucket: str, location: str = "") -> Bucket:
        check_new_bucket_name(bucket)
        path = self.buckets_dir / bucket
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            raise BucketAlreadyOwnedByYou(
                "Your previous request to create the named bucket succeeded and you already own it.",
                BucketName=bucket,
            ) from None
        created = time.time()
        self.index.add_bucket(bucket, created, location)
        return Bucket(bucket, created, location)

    def delete_bucket(self, bucket: str) -> None:
        path = self.bucket_dir(bucket)
        for _dirpath, _dirnames, filenames in os.walk(path):
            if filenames:
                raise BucketNotEmpty("The bucket you tried to delete is not empty", BucketName=bucket)
        if self.index.has_inline(bucket):
            raise BucketNotEmpty("The bucket you tried to delete is not empty", BucketName=bucket)
        shutil.rmtree(path)
        self.index.drop_bucket(bucket)

    # --- objects -------------------------------------------------------------------------------

    def object_path(self, bucket: str, key: str) -> Path:
        root = self.bucket_dir(bucket)
        check_key(key)
        return root / key

    def new_writer(self, bucket: str, key: str, **kwargs: Any) -> ObjectWriter:
        """A writer for a PutObject; checks the bucket and key before any byte is received."""
        self.object_path(bucket, key)
        return ObjectWriter(self.tmp_dir, **kwargs)

    def commit(
        self, bucket: str, key: str, tmp: Path, etag: str, attrs: ObjectAttrs, *, if_none_match: bool = False
    ) -> ObjectMeta:
        """Move a verified temp file onto the key (atomic) and record its metadata."""
        path = self.object_path(bucket, key)
        try:
            with self._commit_lock:
                self._check_inline_neighbours(bucket, key)
                if if_none_match and (path.exists() or self._inline_row(bucket, key) is not None):
                    raise PreconditionFailed(
                        "At least one of the pre-conditions you specified did not hold", Condition="If-None-Match"
                    )
                install(tmp, path, self.bucket_dir(bucket))
                st = path.stat()
                self.index.put(bucket, key, st, etag, attrs)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return ObjectMeta(bucket, key, st.st_size, st.st_mtime, etag, attrs, path)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The commits made inside, by this thread, in one index transaction (other threads' commits wait)."""
        with self._commit_lock, self.index.batch():
            yield

    @contextlib.contextmanager
    def batch_now(self) -> Iterator[bool]:
        """``batch`` if it can start without waiting for another thread or process (yields True),
        else nothing (yields False): for a caller on an event loop, with a thread to fall back to."""
        if not self._commit_lock.acquire(blocking=False):
            yield False
            return
        try:
            with self.index.batch_now() as began:
                yield began
        finally:
            self._commit_lock.release()

    def _check_inline_neighbours(self, bucket: str, key: str) -> None:
        """(Under the commit lock) the ``a`` / ``a/b`` rule for inline objects, as the tree enforces it for files."""
        other = self.index.inline_conflict(bucket, key)
        if other is not None:
            relation = (
                "extend another object's key as a directory"
                if key.startswith(other + "/")
                else ("be a prefix of other keys")
            )
            raise InvalidArgument(f"The local bucket store keeps objects as files: a key cannot {relation} ({key}).")

    def _inline_row(self, bucket: str, key: str) -> tuple | None:
        row = self.index.get(bucket, key)
        return row if row is not None and row[6] is not None else None

    def write_object(self, bucket: str, key: str, data: bytes, etag: str, attrs: ObjectAttrs) -> ObjectMeta:
        """``commit`` for bytes in memory (many small objects, e.g. async outputs). Up to
        INLINE_LIMIT bytes, where no file holds the key, the object is one index row (atomic with
        the rest of a ``batch``); otherwise a temp file written whole (its stat taken before the
        close: a rename keeps size, mtime and inode), renamed onto the key."""
        path = self.object_path(bucket, key)
        if len(data) <= INLINE_LIMIT:
            with self._commit_lock:
                try:
                    os.stat(path)  # a file (or a directory) there: replace it as a file below
                except FileNotFoundError:
                    self._check_inline_neighbours(bucket, key)
                    row_st = InlineStat(len(data), time.time_ns())
                    self.index.put(bucket, key, row_st, etag, attrs, bytes(data))
                    return ObjectMeta(bucket, key, row_st.st_size, row_st.st_mtime, etag, attrs, path)
                except NotADirectoryError:  # a parent is an object: the file path says so
                    pass
        while True:
            tmp = f"{self.tmp_dir}/o-{self._prefix}-{next(self._names)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:  # (another process's name: take the next)
                continue
            except FileNotFoundError:  # (the tmp dir was removed by hand)
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                st = os.fstat(fd)
            finally:
                os.close(fd)
            with self._commit_lock:
                self._check_inline_neighbours(bucket, key)
                try:
                    os.replace(tmp, path)
                except OSError:  # a parent to make, another file system, a directory in the way
                    install(Path(tmp), path, self.buckets_dir / bucket)
                self.index.put(bucket, key, st, etag, attrs)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ObjectMeta(bucket, key, st.st_size, st.st_mtime, etag, attrs, path)

    def materialize(self, bucket: str, key: str) -> Path:
        """The object's file, written from its row first if it is inline (for readers that need a
        file: artifact extraction); the same bytes, ETag, metadata and LastModified."""
        path = self.object_path(bucket, key)
        with self._commit_lock:
            row = self._inline_row(bucket, key)
            if row is None or path.exists():
                return path
            tmp = self.tmp_dir / f"m-{self._prefix}-{next(self._names)}"
            tmp.write_bytes(row[6])
            os.utime(tmp, ns=(row[1], row[1]))
            install(tmp, path, self.buckets_dir / bucket)
            self.index.put(bucket, key, path.stat(), row[3], ObjectAttrs.from_row(row[4], row[5]))
        return path

    def materialize_under(self, bucket: str, prefix: str) -> None:
        """Every inline object whose key starts with ``prefix`` becomes a file (a directory read as files)."""
        for key, _st in list(self.index.inline_after(bucket, prefix, "")):
            with contextlib.suppress(NoSuchKey, InvalidArgument):
                self.materialize(bucket, key)

    def _describe(
        self, bucket: str, key: str, path: Path, st: Stat, f: IO[bytes] | None, row: tuple | None
    ) -> ObjectMeta:
        if row is not None and tuple(row[:3]) == stamp(st):
            return ObjectMeta(bucket, key, st.st_size, st.st_mtime, row[3], ObjectAttrs.from_row(row[4], row[5]), path)
        # Written by something other than the S3 API (or the row is stale): derive and remember.
        if f is not None:
            pos = f.tell()
            etag = file_md5(f)
            f.seek(pos)
        else:
            with open(path, "rb") as g:
                etag = file_md5(g)
        attrs = ObjectAttrs()
        with self._commit_lock:
            with contextlib.suppress(OSError):
                if stamp(path.stat()) == stamp(st):  # (a file's stat: an inline object's stamp always matches)
                    self.index.put(bucket, key, st, etag, attrs)
        return ObjectMeta(bucket, key, st.st_size, st.st_mtime, etag, attrs, path)

    def head_object(self, bucket: str, key: str) -> ObjectMeta:
        path = self.object_path(bucket, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None or not is_file(st):
            row = self._inline_row(bucket, key) if st is None else None
            if row is None:
                raise NoSuchKey("The specified key does not exist.", Key=key)
            return self._inline_meta(bucket, key, path, row)
        return self._describe(bucket, key, path, st, None, self.index.get(bucket, key))

    @staticmethod
    def _inline_meta(bucket: str, key: str, path: Path, row: tuple) -> ObjectMeta:
        attrs = ObjectAttrs.from_row(row[4], row[5])
        return ObjectMeta(bucket, key, row[0], row[1] / 1e9, row[3], attrs, path)

    def open_object(self, bucket: str, key: str) -> tuple[ObjectMeta, IO[bytes]]:
        """The object's metadata and an open handle on exactly those bytes (a concurrent
        replace does not change what this handle reads)."""
        path = self.object_path(bucket, key)
        for _attempt in range(2):  # (a file may replace an inline object between the two looks)
            try:
                f = open(path, "rb")  # noqa: SIM115 - handed to the caller
                break
            except (FileNotFoundError, NotADirectoryError):
                row = self._inline_row(bucket, key)
                if row is not None:
                    return self._inline_meta(bucket, key, path, row), io.BytesIO(row[6])
            except IsADirectoryError:
                raise NoSuchKey("The specified key does not exist.", Key=key) from None
        else:
            raise NoSuchKey("The specified key does not exist.", Key=key)
        try:
            st = os.fstat(f.fileno())
            if not is_file(st):
                raise NoSuchKey("The specified key does not exist.", Key=key)
            return self._describe(bucket, key, path, st, f, self.index.get(bucket, key)), f
        except BaseException:
            f.close()
            raise

    def copy_object(
        self, src_bucket: str, src_key: str, bucket: str, key: str, attrs: ObjectAttrs | None
    ) -> ObjectMeta:
        """Copy bytes (streamed through a temp file); ``attrs`` None keeps the source's metadata."""
        self.object_path(bucket, key)
        meta, f = self.open_object(src_bucket, src_key)
        new_attrs = attrs if attrs is not None else meta.attrs
        if attrs is None and "-" in meta.etag:
            new_attrs = ObjectAttrs(meta.attrs.content_type, meta.attrs.user, meta.attrs.headers, {})
        if isinstance(f, io.BytesIO):  # an inline source: so is the copy, when it can be
            data = f.getvalue()
            return self.write_object(bucket, key, data, hashlib.md5(data).hexdigest(), new_attrs)
        writer = ObjectWriter(self.tmp_dir)
        try:
            with f:
                while chunk := f.read(COPY_CHUNK):
                    writer.write(chunk)
            writer.close()
        except BaseException:
            writer.discard()
            raise
        return self.commit(bucket, key, writer.path, writer.md5.hexdigest(), new_attrs)

    def delete_object(self, bucket: str, key: str) -> None:
        """S3 semantics: deleting a missing key succeeds."""
        root = self.bucket_dir(bucket)
        path = self.object_path(bucket, key)
        with self._commit_lock:
            try:
                if path.is_file():
                    path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass
            self.index.delete(bucket, key)
            prune_empty_dirs(path.parent, root)

    # --- listing -------------------------------------------------------------------------------

    def iter_keys(self, bucket: str, prefix: str = "", start_after: str = "") -> Iterator[tuple[str, Stat]]:
        """Every (key, stat) in the bucket with ``prefix`` and ``key > start_after``, in S3's
        order (UTF-8 byte order, which for str is code point order): the files (pruning whole
        directories) merged with the inline objects; a file wins over a row of the same key."""
        root = self.bucket_dir(bucket)
        files: Iterator[tuple[str, Stat]] = walk(root, "", prefix, start_after)
        rows: Iterator[tuple[str, Stat]] = self.index.inline_after(bucket, prefix, start_after)
        last = None
        for key, st in heapq.merge(files, rows, key=lambda t: t[0]):
            if key != last:
                last = key
                yield key, st

    def describe_many(self, bucket: str, found: list[tuple[str, Stat]]) -> list[ObjectMeta]:
        """Metadata for a page of listed keys (one index query)."""
        if not found:
            return []
        root = self.buckets_dir / bucket
        rows = self.index.range(bucket, found[0][0], found[-1][0])
        out = []
        for key, st in found:
            with contextlib.suppress(FileNotFoundError):
                out.append(self._describe(bucket, key, root / key, st, None, rows.get(key)))
        return out

    def has_keys(self, bucket: str, prefix: str, start_after: str = "") -> bool:
        return next(self.iter_keys(bucket, prefix, start_after), None) is not None
