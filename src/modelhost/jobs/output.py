"""One input object's output as responses arrive: ``DataProcessing`` per record (join,
OutputFilter, inference ids) when active, then assembled into the output object (jobs/assemble.py),
installed only when the whole object succeeded."""

from __future__ import annotations

import time
from typing import Any

from modelhost.jobs.assemble import OutputWriter, output_uri
from modelhost.jobs.filters import DataProcessing, FilterError
from modelhost.jobs.inputs import InputObject
from modelhost.jobs.invoke import ObjectFailed
from modelhost.store.blobs import BlobStore


class ObjectOutput:
    """Blocking (call from a thread, or inline for small writes)."""

    def __init__(
        self, blobs: BlobStore, spec: dict[str, Any], obj: InputObject, processing: DataProcessing | None
    ) -> None:
        tout = spec["TransformOutput"]
        self.uri = output_uri(tout["S3OutputPath"], obj.rel)
        self.started = time.monotonic()
        self.line = tout.get("AssembleWith", "None") == "Line"
        self.processing = processing if processing is not None and processing.active else None
        self.writer: OutputWriter | None = OutputWriter(
            blobs, self.uri, tout.get("AssembleWith", "None"), tout.get("Accept")
        )

    def render(self, count: int, first: int, originals: list[Any], body: bytes, content_type: str | None) -> bytes:
        """The bytes one response adds to the output (its records processed when DataProcessing is active)."""
        processing = self.processing
        if processing is None:
            return body
        try:
            outputs = processing.output_records(body, count, content_type)
            kept = originals or [None] * count
            lines = [processing.output_record(o, out, content_type) for o, out in zip(kept, outputs, strict=True)]
        except (FilterError, ValueError, UnicodeDecodeError) as exc:
            raise ObjectFailed(f"records {first + 1}-{first + count}: {exc}") from None
        if self.line:
            return b"".join(line + b"\n" for line in lines)
        return b"".join(lines)

    def write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def commit(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.commit()

    def discard(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.discard()
