"""One capture record in SageMaker's exact JSON Lines format (reference 8.2)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass

from modelhost.hosting.capture.config import CaptureConfig


@dataclass(slots=True)
class Captured:
    """What the hot path keeps of a sampled request: serialised later by the writer (slots, not
    frozen: this is built once per captured request)."""

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


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_stamps: dict[int, str] = {}  # second -> inferenceTime text (the writer formats many records per second)


def _payload(data: bytes, content_type: str, mode: str, config: CaptureConfig) -> str:
    encoding = config.encoding(content_type)
    if encoding != "BASE64":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "BASE64"
    if encoding == "BASE64":
        text = base64.b64encode(data).decode("ascii")
    return (
        f'{{"observedContentType":{_dumps(content_type)},"mode":"{mode}","data":{_dumps(text)},'
        f'"encoding":"{encoding}"}}'
    )


def _stamp(t: float) -> str:
    second = int(t)
    text = _stamps.get(second)
    if text is None:
        if len(_stamps) > 4096:
            _stamps.clear()
        text = _stamps[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return text


def to_line(rec: Captured) -> bytes:
    """``{"captureData": {...}, "eventMetadata": {...}, "eventVersion": "0"}`` and a newline, composed
    directly (only the strings go through the JSON encoder: this runs once per captured request)."""
    parts = []
    if rec.config.capture_input:
        parts.append('"endpointInput":' + _payload(rec.input, rec.input_type, "INPUT", rec.config))
    if rec.config.capture_output:
        parts.append('"endpointOutput":' + _payload(rec.output, rec.output_type, "OUTPUT", rec.config))
    meta = f'"eventId":"{uuid.uuid4()}","inferenceTime":"{_stamp(rec.time)}"'
    if rec.inference_id is not None:
        meta += ',"inferenceId":' + _dumps(rec.inference_id)
    line = '{"captureData":{' + ",".join(parts) + '},"eventMetadata":{' + meta + '},"eventVersion":"0"}\n'
    return line.encode("utf-8")


def object_uri(rec: Captured, first: float) -> str:
    """``{dest}/{endpoint}/{variant}/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl`` (the hour of the records, UTC;
    the file name as SageMaker's: minute-second-millis of the first record, then a uuid)."""
    t = time.gmtime(first)
    millis = int((first % 1) * 1000)
    name = f"{t.tm_min:02d}-{t.tm_sec:02d}-{millis:03d}-{uuid.uuid4()}.jsonl"
    return f"{rec.config.destination}/{rec.endpoint}/{rec.variant}/{time.strftime('%Y/%m/%d/%H', t)}/{name}"
