"""One capture record in SageMaker's exact JSON Lines format (reference 8.2)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from modelhost.hosting.capture.config import CaptureConfig


@dataclass(frozen=True)
class Captured:
    """What the hot path keeps of a sampled request: serialised later by the writer."""

    endpoint: str
    variant: str
    config: CaptureConfig
    time: float
    input: bytes
    input_type: str
    output: bytes
    output_type: str
    inference_id: str | None

    @property
    def size(self) -> int:
        return len(self.input) + len(self.output) + 512


def _payload(data: bytes, content_type: str, mode: str, config: CaptureConfig) -> dict[str, Any]:
    encoding = config.encoding(content_type)
    if encoding != "BASE64":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "BASE64"
    if encoding == "BASE64":
        text = base64.b64encode(data).decode("ascii")
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}


def to_line(rec: Captured) -> bytes:
    data: dict[str, Any] = {}
    if rec.config.capture_input:
        data["endpointInput"] = _payload(rec.input, rec.input_type, "INPUT", rec.config)
    if rec.config.capture_output:
        data["endpointOutput"] = _payload(rec.output, rec.output_type, "OUTPUT", rec.config)
    meta: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "inferenceTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.time)),
    }
    if rec.inference_id is not None:
        meta["inferenceId"] = rec.inference_id
    line = {"captureData": data, "eventMetadata": meta, "eventVersion": "0"}
    return json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n"


def object_uri(rec: Captured, first: float) -> str:
    """``{dest}/{endpoint}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl`` (the hour of the records, UTC;
    the file name as SageMaker's: minute-second-millis of the first record, then a uuid)."""
    t = time.gmtime(first)
    millis = int((first % 1) * 1000)
    name = f"{t.tm_min:02d}-{t.tm_sec:02d}-{millis:03d}-{uuid.uuid4()}.jsonl"
    return f"{rec.config.destination}/{rec.endpoint}/{rec.variant}/{time.strftime('%Y/%m/%d/%H', t)}/{name}"
