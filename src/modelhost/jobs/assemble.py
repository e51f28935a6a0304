"""Output objects: ``<S3OutputPath>/<relative input path>.out``, written to a temp file and installed
only when the whole object succeeded (a stopped or failed object leaves nothing).

``AssembleWith Line`` ends every response (or processed record) with ``\\n`` unless it already
ends with one; ``None`` concatenates the bytes as they came.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from modelhost.store.blobs import BlobStore

DEFAULT_CONTENT_TYPE = "binary/octet-stream"


def output_uri(output_path: str, rel: str) -> str:
    return output_path.rstrip("/") + "/" + rel + ".out"


class OutputWriter:
    """One output object being written (blocking: call from a thread, or for small writes)."""

    def __init__(self, blobs: BlobStore, uri: str, assemble_with: str, content_type: str | None) -> None:
        self.blobs = blobs
        self.uri = uri
        self.line = assemble_with == "Line"
        self.content_type = content_type or DEFAULT_CONTENT_TYPE
        self.md5 = hashlib.md5()
        self.size = 0
        blobs.check_writable(uri)  # no such bucket, a bad key: before any work
        fd, name = tempfile.mkstemp(dir=blobs.staging_dir(), prefix=".mh-transform-")
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self.line and not data.endswith(b"\n"):
            data += b"\n"
        self.file.write(data)
        self.md5.update(data)
        self.size += len(data)

    def commit(self) -> None:
        self.file.close()
        self.blobs.put_file(self.uri, self.tmp, self.content_type, self.md5.hexdigest())

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def delete_output(blobs: BlobStore, uri: str) -> None:
    """Remove an output a stopped job had already written (no output is kept for a stopped job)."""
    with contextlib.suppress(Exception):
        blobs.delete(uri)
