"""Buckets and objects of the embedded bucket store, with S3 semantics.

Layout under the data dir (``s3://bucket/key`` is still the plain file ``buckets/<bucket>/<key>``,
so model loading through :class:`~modelhost.store.objects.ObjectStore` sees exactly the objects):

``buckets/<bucket>/<key>``
    the object's bytes, nothing else: no sidecars or temp files in the bucket tree.
``buckets-meta/objects.db``
    SQLite index (stdlib ``sqlite3``): per object its ETag, Content-Type, user metadata, the
    other stored headers and checksums, stamped with the file's (size, mtime_ns, inode); per bucket
    its creation time and LocationConstraint. A row whose stamp does not match the file (the file
    was written by something else: ``ObjectStore.put_bytes``, a user copying files in, a crash
    between the rename and the row update) is stale: the ETag is recomputed from the bytes and
    the metadata falls back to defaults. The index is a cache of facts about files, never the
    source of truth about which objects exist.
``buckets-meta/tmp/``
    uploads in progress. A write streams into a temp file here, is verified (Content-MD5,
    x-amz-content-sha256, x-amz-checksum-*), and only then ``os.replace``-d onto the key's path:
    a failed, bad or interrupted upload never leaves a partial object. Same file system as
    ``buckets/`` (both under the data dir), so the rename is atomic.

Keys map to paths component by component. What a file system cannot hold is refused with
``InvalidArgument``: empty, ``.`` or ``..`` components (a leading, doubled or trailing ``/``,
hence no "folder marker" keys), NUL, components over 255 bytes; and a key cannot be both an
object and a "directory" (``a`` and ``a/b``).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
MAX_KEY_BYTES = 1024
COPY_CHUNK = 1024 * 1024
# Headers stored with an object and returned on GET/HEAD (besides Content-Type and x-amz-meta-*).
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
CHECKSUM_ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


# --- errors: S3's error codes (the wire layer maps each code to its HTTP status) -------------------


class S3StoreError(Exception):
    code = "InternalError"

    def __init__(self, message: str, **fields: str) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


def error_class(code: str) -> type[S3StoreError]:
    return type(code, (S3StoreError,), {"code": code})


NoSuchBucket = error_class("NoSuchBucket")
NoSuchKey = error_class("NoSuchKey")
NoSuchUpload = error_class("NoSuchUpload")
BucketAlreadyOwnedByYou = error_class("BucketAlreadyOwnedByYou")
BucketNotEmpty = error_class("BucketNotEmpty")
InvalidBucketName = error_class("InvalidBucketName")
InvalidArgument = error_class("InvalidArgument")
InvalidRequest = error_class("InvalidRequest")
KeyTooLongError = error_class("KeyTooLongError")
BadDigest = error_class("BadDigest")
InvalidDigest = error_class("InvalidDigest")
XAmzContentSHA256Mismatch = error_class("XAmzContentSHA256Mismatch")
InvalidPart = error_class("InvalidPart")
InvalidPartOrder = error_class("InvalidPartOrder")
EntityTooSmall = error_class("EntityTooSmall")
PreconditionFailed = error_class("PreconditionFailed")


# --- names ---------------------------------------------------------------------------------------

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LEGACY_BUCKET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")


def check_new_bucket_name(name: str) -> None:
    """S3's rules for new buckets (general purpose, any region)."""
    if (
        not _BUCKET.fullmatch(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IPV4.fullmatch(name)
        or name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        or name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    ):
        raise InvalidBucketName("The specified bucket is not valid.", BucketName=name)


def check_bucket_name(name: str) -> None:
    """Existing buckets may carry legacy names (us-east-1 allowed upper case and ``_``; bucket
    dirs can be made by hand): refuse only what is unsafe as a directory name."""
    if not _LEGACY_BUCKET.fullmatch(name):
        raise InvalidBucketName("The specified bucket is not valid.", BucketName=name)


def check_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyTooLongError("Your key is too long", Key=key[:64] + "...")
    for part in key.split("/"):
        if part in ("", ".", "..") or "\0" in part or len(part.encode("utf-8", "surrogatepass")) > 255:
            raise InvalidArgument(
                "The local bucket store keeps objects as files: keys may not have empty, '.' or '..' "
                "path segments (a leading, doubled or trailing '/') or segments over 255 bytes.",
                ArgumentName="key",
                ArgumentValue=key,
            )


# --- checksums -----------------------------------------------------------------------------------


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _hasher(algorithm: str) -> Any | None:
    """An incremental hasher for a flexible-checksum algorithm, or None where we cannot compute
    it without extra packages (crc32c and crc64nvme need awscrt): those are stored unverified."""
    if algorithm == "crc32":
        return _Crc32()
    if algorithm in ("sha1", "sha256"):
        return hashlib.new(algorithm)
    return None


def decode_content_md5(value: str) -> bytes:
    try:
        digest = base64.b64decode(value, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise InvalidDigest("The Content-MD5 you specified was invalid.", Content_MD5=value)
    return digest


# --- objects -------------------------------------------------------------------------------------


@dataclass
class ObjectAttrs:
    """What a writer stores beside the bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    user: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix, lower case
    headers: dict[str, str] = field(default_factory=dict)  # STORED_HEADERS
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 (whole objects only)

    def to_json(self) -> str:
        return json.dumps({"user": self.user, "headers": self.headers, "checksums": self.checksums})

    @classmethod
    def from_row(cls, content_type: str, data: str) -> ObjectAttrs:
        doc = json.loads(data or "{}")
        return cls(content_type, doc.get("user", {}), doc.get("headers", {}), doc.get("checksums", {}))


@dataclass
class ObjectMeta:
    bucket: str
    key: str
    size: int
    mtime: float
    etag: str  # hex md5, or hex-N for multipart uploads; without quotes
    attrs: ObjectAttrs
    path: Path


@dataclass
class Bucket:
    name: str
    created: float
    location: str


class ObjectWriter:
    """A body being received: bytes go to a temp file with their MD5 (and whatever else must be
    verified) computed on the way. ``verify`` checks the digests; nothing is visible until the
    store commits the file."""

    def __init__(self, tmp_dir: Path, *, sha256: bool = False, checksums: tuple[str, ...] = ()) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.size = 0
        self.md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if sha256 else None
        self._checksums = {alg: h for alg in checksums if (h := _hasher(alg)) is not None}

    def write(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.size += len(data)
        self.md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        for h in self._checksums.values():
            h.update(data)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def verify(
        self,
        *,
        content_md5: bytes | None = None,
        sha256_hex: str | None = None,
        checksums: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Check the digests the client sent; return the checksums to store (algorithm -> base64)."""
        self.close()
        if content_md5 is not None and content_md5 != self.md5.digest():
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
        if sha256_hex is not None and self._sha256 is not None and sha256_hex.lower() != self._sha256.hexdigest():
            raise XAmzContentSHA256Mismatch(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ClientComputedContentSHA256=sha256_hex,
                S3ComputedContentSHA256=self._sha256.hexdigest(),
            )
        stored: dict[str, str] = {}
        for alg, value in (checksums or {}).items():
            h = self._checksums.get(alg)
            if h is not None:
                actual = base64.b64encode(h.digest()).decode()
                if actual != value:
                    raise BadDigest(f"The {alg.upper()} you specified did not match the calculated checksum.")
            stored[alg] = value
        for alg, h in self._checksums.items():
            stored.setdefault(alg, base64.b64encode(h.digest()).decode())
        return stored


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


class MetaIndex:
    """The SQLite index beside the bucket tree (see the module doc)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS objects (bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER, "
                "mtime_ns INTEGER, ino INTEGER, etag TEXT, content_type TEXT, attrs TEXT, "
                "PRIMARY KEY (bucket, key)) WITHOUT ROWID"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL, location TEXT)")

    def get(self, bucket: str, key: str) -> tuple | None:
        with self._lock:
            return self._db.execute(
                "SELECT size, mtime_ns, ino, etag, content_type, attrs FROM objects WHERE bucket=? AND key=?",
                (bucket, key),
            ).fetchone()

    def range(self, bucket: str, first: str, last: str) -> dict[str, tuple]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, size, mtime_ns, ino, etag, content_type, attrs FROM objects "
                "WHERE bucket=? AND key>=? AND key<=?",
                (bucket, first, last),
            ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def put(self, bucket: str, key: str, st: os.stat_result, etag: str, attrs: ObjectAttrs) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?)",
                (bucket, key, *_stamp(st), etag, attrs.content_type, attrs.to_json()),
            )

    def delete(self, bucket: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))

    def drop_bucket(self, bucket: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM objects WHERE bucket=?", (bucket,))
            self._db.execute("DELETE FROM buckets WHERE name=?", (bucket,))

    def add_bucket(self, bucket: str, created: float, location: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO buckets VALUES (?,?,?)", (bucket, created, location))

    def bucket(self, bucket: str) -> tuple[float, str] | None:
        with self._lock:
            return self._db.execute("SELECT created, location FROM buckets WHERE name=?", (bucket,)).fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def file_md5(f: IO[bytes]) -> str:
    h = hashlib.md5()
    while chunk := f.read(COPY_CHUNK):
        h.update(chunk)
    return h.hexdigest()


class BucketStore:
    """Bucket and object operations over ``<data-dir>/buckets`` (blocking: call from a thread)."""

    def __init__(self, buckets_dir: Path, data_dir: Path) -> None:
        self.buckets_dir = buckets_dir
        self.meta_dir = data_dir / "buckets-meta"
        self.tmp_dir = self.meta_dir / "tmp"
        self.index = MetaIndex(self.meta_dir / "objects.db")
        self._commit_lock = threading.Lock()
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
                if entry.is_dir() and _LEGACY_BUCKET.fullmatch(entry.name):
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
                if if_none_match and path.exists():
                    raise PreconditionFailed(
                        "At least one of the pre-conditions you specified did not hold", Condition="If-None-Match"
                    )
                _install(tmp, path, self.bucket_dir(bucket))
                st = path.stat()
                self.index.put(bucket, key, st, etag, attrs)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return ObjectMeta(bucket, key, st.st_size, st.st_mtime, etag, attrs, path)

    def _describe(
        self, bucket: str, key: str, path: Path, st: os.stat_result, f: IO[bytes] | None, row: tuple | None
    ) -> ObjectMeta:
        if row is not None and tuple(row[:3]) == _stamp(st):
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
                if _stamp(path.stat()) == _stamp(st):
                    self.index.put(bucket, key, st, etag, attrs)
        return ObjectMeta(bucket, key, st.st_size, st.st_mtime, etag, attrs, path)

    def head_object(self, bucket: str, key: str) -> ObjectMeta:
        path = self.object_path(bucket, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None or not _is_file(st):
            raise NoSuchKey("The specified key does not exist.", Key=key)
        return self._describe(bucket, key, path, st, None, self.index.get(bucket, key))

    def open_object(self, bucket: str, key: str) -> tuple[ObjectMeta, IO[bytes]]:
        """The object's metadata and an open handle on exactly those bytes (a concurrent
        replace does not change what this handle reads)."""
        path = self.object_path(bucket, key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - handed to the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NoSuchKey("The specified key does not exist.", Key=key) from None
        try:
            st = os.fstat(f.fileno())
            if not _is_file(st):
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
        writer = ObjectWriter(self.tmp_dir)
        try:
            with f:
                while chunk := f.read(COPY_CHUNK):
                    writer.write(chunk)
            writer.close()
        except BaseException:
            writer.discard()
            raise
        new_attrs = attrs if attrs is not None else meta.attrs
        if attrs is None and "-" in meta.etag:
            new_attrs = ObjectAttrs(meta.attrs.content_type, meta.attrs.user, meta.attrs.headers, {})
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
            _prune_empty_dirs(path.parent, root)

    # --- listing -------------------------------------------------------------------------------

    def iter_keys(self, bucket: str, prefix: str = "", start_after: str = "") -> Iterator[tuple[str, os.stat_result]]:
        """Every (key, stat) in the bucket with ``prefix`` and ``key > start_after``, in S3's
        order (UTF-8 byte order, which for str is code point order), pruning whole directories."""
        root = self.bucket_dir(bucket)
        yield from _walk(root, "", prefix, start_after)

    def describe_many(self, bucket: str, found: list[tuple[str, os.stat_result]]) -> list[ObjectMeta]:
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


def _is_file(st: os.stat_result) -> bool:
    import stat as stat_mod

    return stat_mod.S_ISREG(st.st_mode)


def _walk(directory: Path, keyprefix: str, prefix: str, start_after: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(directory) as it:
            entries = []
            for e in it:
                try:
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                entries.append((keyprefix + e.name + ("/" if is_dir else ""), is_dir, e))
    except (FileNotFoundError, NotADirectoryError):
        return
    entries.sort(key=lambda t: t[0])
    for key, is_dir, entry in entries:
        if is_dir:
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if start_after >= key and not start_after.startswith(key):
                continue  # every key under this directory sorts before start_after
            yield from _walk(Path(entry.path), key, prefix, start_after)
        else:
            if not key.startswith(prefix) or key <= start_after:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if _is_file(st):
                yield key, st


def _install(tmp: Path, path: Path, root: Path) -> None:
    """os.replace with the parent directories made; a directory in the way is InvalidArgument."""
    for _attempt in range(3):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidArgument(
                "The local bucket store keeps objects as files: a key cannot extend another object's key "
                f"as a directory ({path.relative_to(root).as_posix()}).",
            ) from None
        try:
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            continue  # a concurrent delete pruned the parent: make it again
        except IsADirectoryError:
            raise InvalidArgument(
                "The local bucket store keeps objects as files: this key is a prefix of other keys "
                f"({path.relative_to(root).as_posix()}/...).",
            ) from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # buckets/ on another file system than the data dir: copy next to the target, then rename.
            side = path.with_name(f".{path.name}.mh-{os.getpid()}.tmp")
            shutil.copyfile(tmp, side)
            os.replace(side, path)
            tmp.unlink()
            return
    raise InvalidRequest("The object could not be written: its directory kept disappearing.")


def _prune_empty_dirs(directory: Path, root: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
