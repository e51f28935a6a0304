"""Digests of object bodies: Content-MD5, the flexible checksums (x-amz-checksum-*), ETags."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import IO, Any

from modelhost.store.buckets.errors import InvalidDigest

COPY_CHUNK = 1024 * 1024
CHECKSUM_ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


class Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def hasher(algorithm: str) -> Any | None:
    """An incremental hasher for a flexible-checksum algorithm, or None where we cannot compute
    it without extra packages (crc32c and crc64nvme need awscrt): those are stored unverified."""
    if algorithm == "crc32":
        return Crc32()
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


def file_md5(f: IO[bytes]) -> str:
    h = hashlib.md5()
    while chunk := f.read(COPY_CHUNK):
        h.update(chunk)
    return h.hexdigest()
