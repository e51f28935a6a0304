"""One blob store interface for every object modelhost reads or writes by URI.

Model artifacts, async inference inputs and outputs, batch transform inputs and outputs and data
capture files are all addressed as ``s3://bucket/key``, ``file:///abs/path`` or a plain local path.
``s3://`` is served by exactly one implementation, chosen once in app.py: the embedded local bucket
store (``<data-dir>/buckets``) or a real S3-compatible service (``MODELHOST_S3_ENDPOINT_URL``).
``file://`` and paths are always local files. Callers never look at the scheme themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


class BlobNotFound(Exception):
    """No object (or no objects under a prefix) at that URI."""


class BlobError(Exception):
    """The URI cannot be used: no such bucket, a key the store cannot hold, an unsupported scheme, ..."""


# s3://bucket/key with nothing urlparse or unquote would treat specially (query, fragment,
# escapes, brackets, whitespace and control characters).
_PLAIN = re.compile(r"s3://([^/?#%\[\]\x00-\x20\x7f]+)/([^?#%\x00-\x20\x7f]*)")


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str  # may be "" (the whole bucket) or end in "/" (a prefix)

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        plain = _PLAIN.fullmatch(uri)  # (most URIs: urlparse would find exactly these parts)
        if plain is not None:
            return cls(plain[1], plain[2].lstrip("/"))
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise BlobError(f"not an s3://bucket/key URI: {uri}")
        return cls(parsed.netloc, unquote(parsed.path.lstrip("/")))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


@dataclass(frozen=True)
class BlobInfo:
    uri: str
    size: int
    mtime: float
    etag: str | None = None


class BlobReader(Protocol):
    """A streaming read of one object."""

    size: int

    def read(self, n: int, /) -> bytes: ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    def stat(self, uri: str) -> BlobInfo:
        """Size and time of one object; BlobNotFound if there is none."""
        ...

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Every object under a prefix (or the one object the URI names), sorted by key; BlobNotFound if none."""
        ...

    def open(self, uri: str) -> BlobReader:
        """Stream an object's bytes; BlobNotFound if there is none."""
        ...

    def local_path(self, uri: str) -> Path:
        """A local file (or directory, for a prefix) holding the object's bytes: the object itself for local
        stores, a mirror kept by ETag for a remote one. For readers that need a file (artifact extraction)."""
        ...

    def check_writable(self, uri: str) -> None:
        """Raise BlobError now if an object could not be written there later (no such bucket, bad key)."""
        ...

    def staging_dir(self) -> Path:
        """A directory for temp files that ``put_file`` can install cheaply (same file system)."""
        ...

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        """Write an object atomically: readers see the old object or the whole new one."""
        ...

    def put_file(self, uri: str, path: Path, content_type: str | None = None, md5: str | None = None) -> None:
        """Install a finished file as the object, atomically; the file is consumed (moved or deleted)."""
        ...

    def delete(self, uri: str) -> None:
        """Remove an object; no error if it is not there."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Writes made inside (by this thread) share what they can: the local store's metadata
        transaction; nothing for a remote store. Each object is still installed atomically."""
        ...

    def batch_now(self) -> AbstractContextManager[bool]:
        """``batch`` only if it blocks on nothing but local CPU and memory and need not wait for
        another thread or process (yields True: the embedded bucket store's inline objects, written
        from an event loop); else yields False and the writes must go to a thread."""
        ...
