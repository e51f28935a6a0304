"""Output objects: ``<S3OutputPath>/<relative input path>.out``, written to a temp file and moved
into place only when the whole object succeeded (a stopped or failed object leaves nothing).

``AssembleWith Line`` ends every response (or processed record) with ``\\n`` unless it already
ends with one; ``None`` concatenates the bytes as they came.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelhost.store.buckets import BucketStore, ObjectAttrs
from modelhost.store.objects import ObjectStore

DEFAULT_CONTENT_TYPE = "binary/octet-stream"


def output_uri(output_path: str, rel: str) -> str:
    return output_path.rstrip("/") + "/" + rel + ".out"


class OutputWriter:
    """One output object being written (blocking: call from a thread, or for small writes)."""

    def __init__(
        self,
        objects: ObjectStore,
        buckets: BucketStore | None,
        uri: str,
        assemble_with: str,
        content_type: str | None,
    ) -> None:
        self.objects = objects
        self.buckets = buckets
        self.uri = uri
        self.line = assemble_with == "Line"
        self.content_type = content_type or DEFAULT_CONTENT_TYPE
        self.md5 = hashlib.md5()
        self.size = 0
        if uri.startswith("s3://") and buckets is not None:
            parsed = urlparse(uri)
            self.bucket, self.key = parsed.netloc, unquote(parsed.path.lstrip("/"))
            buckets.object_path(self.bucket, self.key)  # NoSuchBucket / InvalidArgument before any work
            tmp_dir = buckets.tmp_dir
        else:
            self.bucket = self.key = ""
            target = objects.local_path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir = target.parent
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=".mh-transform-")
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
        if self.bucket and self.buckets is not None:
            self.buckets.commit(self.bucket, self.key, self.tmp, self.md5.hexdigest(), ObjectAttrs(self.content_type))
        else:
            os.replace(self.tmp, self.objects.local_path(self.uri))

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def delete_output(objects: ObjectStore, buckets: BucketStore | None, uri: str) -> None:
    """Remove an output a stopped job had already written (no output is kept for a stopped job)."""
    with contextlib.suppress(Exception):
        if uri.startswith("s3://") and buckets is not None:
            parsed = urlparse(uri)
            buckets.delete_object(parsed.netloc, unquote(parsed.path.lstrip("/")))
        else:
            objects.local_path(uri).unlink()
