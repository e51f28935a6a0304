"""The digests a client sent for a body (Content-MD5, x-amz-content-sha256, x-amz-checksum-* headers
or aws-chunked trailers), checked once the body is written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelhost.server.s3.request import S3Request
from modelhost.server.s3.xml import IncompleteBody
from modelhost.store.buckets import CHECKSUM_ALGORITHMS, ObjectWriter, decode_content_md5

CHECKSUM_XML = {
    "ChecksumCRC32": "crc32",
    "ChecksumCRC32C": "crc32c",
    "ChecksumCRC64NVME": "crc64nvme",
    "ChecksumSHA1": "sha1",
    "ChecksumSHA256": "sha256",
}
CHECKSUM_TAG = {v: k for k, v in CHECKSUM_XML.items()}


@dataclass
class Expectations:
    """The digests a client sent for a body (headers now, trailers when the body has ended)."""

    content_md5: bytes | None
    sha256_hex: str | None
    header_checksums: dict[str, str]
    trailer_algorithms: list[str]
    requested: str

    @classmethod
    def from_request(cls, req: S3Request) -> Expectations:
        md5 = req.header("content-md5")
        sha = req.header("x-amz-content-sha256", "") or ""
        header_checksums = {alg: v.strip() for alg in CHECKSUM_ALGORITHMS if (v := req.header(f"x-amz-checksum-{alg}"))}
        trailers = [t.strip().lower() for t in (req.header("x-amz-trailer") or "").split(",") if t.strip()]
        trailer_algorithms = [t.removeprefix("x-amz-checksum-") for t in trailers if t.startswith("x-amz-checksum-")]
        return cls(
            content_md5=decode_content_md5(md5) if md5 is not None else None,
            sha256_hex=sha if re.fullmatch(r"[0-9a-fA-F]{64}", sha) else None,
            header_checksums=header_checksums,
            trailer_algorithms=trailer_algorithms,
            requested=(req.header("x-amz-sdk-checksum-algorithm") or "").lower(),
        )

    def writer_options(self) -> dict[str, Any]:
        algorithms = {*self.header_checksums, *self.trailer_algorithms}
        if self.requested in CHECKSUM_ALGORITHMS:
            algorithms.add(self.requested)
        return {"sha256": self.sha256_hex is not None, "checksums": tuple(sorted(algorithms))}

    def verify(self, req: S3Request, writer: ObjectWriter) -> dict[str, str]:
        checksums = dict(self.header_checksums)
        trailers = req.body.decoder.trailers if req.body.decoder is not None else {}
        for alg in self.trailer_algorithms:
            value = trailers.get(f"x-amz-checksum-{alg}")
            if value is None:
                raise IncompleteBody(f"The x-amz-checksum-{alg} trailer announced in x-amz-trailer was not sent.")
            checksums[alg] = value
        return writer.verify(content_md5=self.content_md5, sha256_hex=self.sha256_hex, checksums=checksums)

    def reported(self, stored: dict[str, str]) -> dict[str, str]:
        """Checksums to echo: those the client sent or asked for."""
        wanted = {*self.header_checksums, *self.trailer_algorithms, self.requested}
        return {alg: v for alg, v in stored.items() if alg in wanted}


def checksum_headers(checksums: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"x-amz-checksum-{alg}", value) for alg, value in checksums.items()]
