"""Incremental decoding of ``Content-Encoding: aws-chunked`` request bodies (streaming SigV4)."""

from __future__ import annotations

import hashlib

from modelhost.security import ChunkSigner
from modelhost.server.s3.xml import IncompleteBody
from modelhost.store.buckets import error_class

SignatureDoesNotMatch = error_class("SignatureDoesNotMatch")
CHUNK_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your key and signing method."
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class AwsChunkedDecoder:
    """Incremental decoder for ``Content-Encoding: aws-chunked`` bodies (streaming SigV4, signed
    or unsigned, with or without trailers): ``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n``
    ... ``0[;...]\\r\\n`` then trailer lines ``name:value\\r\\n`` and an empty line. With a
    ``signer`` (a verified ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` request) each chunk's signature is
    checked when its data ends, and the trailer's (``x-amz-trailer-signature``) when the trailer
    ends: a mismatch raises SignatureDoesNotMatch, so the upload fails and leaves no object."""

    MAX_LINE = 8192
    SIZE, DATA, DATA_END, TRAILER, DONE = range(5)

    def __init__(self, signer: ChunkSigner | None = None) -> None:
        self.signer = signer
        self._chunk_signature = ""
        self._chunk_hash = hashlib.sha256()
        self._trailer_lines = bytearray()
        self._trailer_signature: str | None = None
        self._line = bytearray()
        self._state = self.SIZE
        self._remaining = 0
        self.trailers: dict[str, str] = {}
        self.decoded = 0

    @property
    def done(self) -> bool:
        return self._state == self.DONE

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n and self._state != self.DONE:
            if self._state == self.DATA:
                take = min(self._remaining, n - pos)
                out.append(data[pos : pos + take])
                if self.signer is not None:
                    self._chunk_hash.update(data[pos : pos + take])
                pos += take
                self._remaining -= take
                self.decoded += take
                if self._remaining == 0:
                    self._state = self.DATA_END
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > self.MAX_LINE:
                    raise IncompleteBody("Malformed aws-chunked body: line too long.")
                break
            self._line += data[pos : end + 1]
            pos = end + 1
            line = bytes(self._line[:-2] if self._line.endswith(b"\r\n") else self._line[:-1])
            self._line.clear()
            self._line_done(line)
        return out

    def _line_done(self, line: bytes) -> None:
        if self._state == self.SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise IncompleteBody("Malformed aws-chunked body: bad chunk size line.") from None
            if size < 0:
                raise IncompleteBody("Malformed aws-chunked body: bad chunk size line.")
            if self.signer is not None:
                self._chunk_signature = _chunk_signature(line)
                self._chunk_hash = hashlib.sha256()
                if size == 0:
                    self._check_chunk(EMPTY_SHA256)
            if size == 0:
                self._state = self.TRAILER
            else:
                self._remaining, self._state = size, self.DATA
        elif self._state == self.DATA_END:
            if line:
                raise IncompleteBody("Malformed aws-chunked body: chunk longer than its size.")
            if self.signer is not None:
                self._check_chunk(self._chunk_hash.hexdigest())
            self._state = self.SIZE
        elif self._state == self.TRAILER:
            if not line:
                self._trailer_done()
                return
            name, sep, value = line.partition(b":")
            if not sep:
                raise IncompleteBody("Malformed aws-chunked body: bad trailer line.")
            lname = name.strip().lower()
            if lname == b"x-amz-trailer-signature":
                self._trailer_signature = value.strip().decode("latin-1")
                return
            self._trailer_lines += lname + b":" + value.strip() + b"\n"
            self.trailers[lname.decode("latin-1")] = value.strip().decode("latin-1")

    def _check_chunk(self, data_sha256: str) -> None:
        assert self.signer is not None
        if not self._chunk_signature or not self.signer.chunk(self._chunk_signature, data_sha256):
            raise SignatureDoesNotMatch(CHUNK_MISMATCH)

    def _trailer_done(self) -> None:
        self._state = self.DONE
        if self.signer is None or (not self._trailer_lines and self._trailer_signature is None):
            return
        if self._trailer_signature is None or not self.signer.trailer(
            self._trailer_signature, bytes(self._trailer_lines)
        ):
            raise SignatureDoesNotMatch(CHUNK_MISMATCH)

    def finish(self) -> None:
        if self._state == self.TRAILER and not self._line:
            self._trailer_done()  # tolerate a missing final empty line
        if self._state != self.DONE:
            raise IncompleteBody("The request body terminated unexpectedly (incomplete aws-chunked body).")


def _chunk_signature(size_line: bytes) -> str:
    """The ``chunk-signature`` extension of a chunk's size line (empty when absent)."""
    for ext in size_line.split(b";")[1:]:
        name, _, value = ext.partition(b"=")
        if name.strip() == b"chunk-signature":
            return value.strip().decode("latin-1")
    return ""
