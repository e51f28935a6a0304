"""What an object is besides its bytes (attributes, metadata), and a body being received."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from modelhost.store.buckets.checksums import hasher
from modelhost.store.buckets.errors import BadDigest, XAmzContentSHA256Mismatch

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# Headers stored with an object and returned on GET/HEAD (besides Content-Type and x-amz-meta-*).
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
EMPTY_ATTRS = json.dumps({"user": {}, "headers": {}, "checksums": {}})


@dataclass
class ObjectAttrs:
    """What a writer stores beside the bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    user: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix, lower case
    headers: dict[str, str] = field(default_factory=dict)  # STORED_HEADERS
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 (whole objects only)

    def to_json(self) -> str:
        if not (self.user or self.headers or self.checksums):
            return EMPTY_ATTRS  # (most objects the server writes itself: no encoder per object)
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
        self._checksums = {alg: h for alg in checksums if (h := hasher(alg)) is not None}

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
