"""Buckets and objects of the embedded bucket store, with S3 semantics.

Layout under the data dir (``s3://bucket/key`` is still the plain file ``buckets/<bucket>/<key>``,
so the local blob store, ``store/blobs_local.py``, sees exactly the objects):

``buckets/<bucket>/<key>``
    the object's bytes, nothing else: no sidecars or temp files in the bucket tree.
``buckets-meta/objects.db``
    SQLite index (stdlib ``sqlite3``): per object its ETag, Content-Type, user metadata, the
    other stored headers and checksums, stamped with the file's (size, mtime_ns, inode); per bucket
    its creation time and LocationConstraint. A row whose stamp does not match the file (the file
    was written by something else: a user copying files in, a crash
    between the rename and the row update) is stale: the ETag is recomputed from the bytes and
    the metadata falls back to defaults. For files the index is a cache of facts, never the
    source of truth about which objects exist. Small objects written from memory
    (``write_object``, up to ``INLINE_LIMIT``, where no file holds the key) are *inline*: the
    row's ``data`` column is the object, and no file exists (a file at the key wins over such a
    row). Listing merges them with the tree; ``materialize`` turns one into a file.
``buckets-meta/tmp/``
    uploads in progress. A write streams into a temp file here, is verified (Content-MD5,
    x-amz-content-sha256, x-amz-checksum-*), and only then ``os.replace``-d onto the key's path:
    a failed, bad or interrupted upload never leaves a partial object. Same file system as
    ``buckets/`` (both under the data dir), so the rename is atomic.

Keys map to paths component by component. What a file system cannot hold is refused with
``InvalidArgument``: empty, ``.`` or ``..`` components (a leading, doubled or trailing ``/``,
hence no "folder marker" keys), NUL, components over 255 bytes; and a key cannot be both an
object and a "directory" (``a`` and ``a/b``).

Modules: ``errors`` (S3's error codes), ``names`` (bucket names, keys), ``checksums``, ``objects``
(attributes, metadata, the writer of a body being received), ``index`` (the SQLite index), ``tree``
(the bucket tree on disk) and ``store`` (:class:`BucketStore`, the operations).
"""

from __future__ import annotations

from modelhost.store.buckets.checksums import (
    CHECKSUM_ALGORITHMS,
    COPY_CHUNK,
    Crc32,
    decode_content_md5,
    file_md5,
    hasher,
)
from modelhost.store.buckets.errors import (
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooSmall,
    InvalidArgument,
    InvalidBucketName,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRequest,
    KeyTooLongError,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    PreconditionFailed,
    S3StoreError,
    XAmzContentSHA256Mismatch,
    error_class,
)
from modelhost.store.buckets.index import MetaIndex
from modelhost.store.buckets.names import MAX_KEY_BYTES, check_bucket_name, check_key, check_new_bucket_name
from modelhost.store.buckets.objects import (
    DEFAULT_CONTENT_TYPE,
    STORED_HEADERS,
    Bucket,
    ObjectAttrs,
    ObjectMeta,
    ObjectWriter,
)
from modelhost.store.buckets.store import BucketStore

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "COPY_CHUNK",
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "STORED_HEADERS",
    "BadDigest",
    "Bucket",
    "BucketAlreadyOwnedByYou",
    "BucketNotEmpty",
    "BucketStore",
    "Crc32",
    "EntityTooSmall",
    "InvalidArgument",
    "InvalidBucketName",
    "InvalidDigest",
    "InvalidPart",
    "InvalidPartOrder",
    "InvalidRequest",
    "KeyTooLongError",
    "MetaIndex",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "ObjectAttrs",
    "ObjectMeta",
    "ObjectWriter",
    "PreconditionFailed",
    "S3StoreError",
    "XAmzContentSHA256Mismatch",
    "check_bucket_name",
    "check_key",
    "check_new_bucket_name",
    "decode_content_md5",
    "error_class",
    "file_md5",
    "hasher",
]
