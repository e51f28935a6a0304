"""``sagemakerCaptureJson``: the data capture files of the analysis window as rows.

Each capture record is one row: the parts named by ``captureIndexNames``, the endpoint's output
first (``output_columns_position`` START, the SDK's default for baselines: a training set with the
label first lines up with output + input) or last (END); each part's data decoded by its
``encoding`` (CSV split, flat JSON, BASE64 then CSV). Records outside ``[start_time, end_time)`` are
skipped (the input holds whole hours around the window). A ``record_preprocessor_script``'s
``preprocess_handler(inference_record)`` replaces a record's row (a dict by feature name or a list
by position; ``None`` or an empty result drops the record).
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelhost.monitor.readers import DatasetError, flat

Row = dict[str, Any] | list[Any]


@dataclass
class CapturedPart:
    """``inference_record.endpoint_input`` / ``endpoint_output`` as the preprocessor sees them."""

    observedContentType: str  # noqa: N815 - SageMaker's attribute names
    mode: str
    data: str
    encoding: str

    @property
    def observed_content_type(self) -> str:
        return self.observedContentType


@dataclass
class EventMetadata:
    event_id: str
    inference_time: str
    inference_id: str | None = None
    custom_attribute: list[str] = field(default_factory=list)


@dataclass
class InferenceRecord:
    endpoint_input: CapturedPart | None
    endpoint_output: CapturedPart | None
    event_metadata: EventMetadata
    event_version: str


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def decode_part(part: dict[str, Any]) -> list[Any]:
    data, encoding = part.get("data", ""), part.get("encoding", "CSV")
    if encoding == "BASE64":
        data, encoding = base64.b64decode(data).decode("utf-8", "replace"), "CSV"
    if encoding == "JSON":
        try:
            value = flat(json.loads(data))
        except ValueError:
            raise DatasetError("A captured JSON record could not be parsed.") from None
        return list(value.values()) if isinstance(value, dict) else list(value)
    return next(csv.reader([data.strip()]), [])


def _record(raw: dict[str, Any]) -> InferenceRecord:
    cap = raw.get("captureData", {})
    meta = raw.get("eventMetadata", {})

    def part(key: str) -> CapturedPart | None:
        p = cap.get(key)
        if p is None:
            return None
        return CapturedPart(
            p.get("observedContentType", ""), p.get("mode", ""), p.get("data", ""), p.get("encoding", "")
        )

    return InferenceRecord(
        part("endpointInput"),
        part("endpointOutput"),
        EventMetadata(meta.get("eventId", ""), meta.get("inferenceTime", ""), meta.get("inferenceId")),
        str(raw.get("eventVersion", "0")),
    )


def load_preprocessor(path: str | None) -> Callable[[InferenceRecord], Any] | None:
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("record_preprocessor", path)
    if spec is None or spec.loader is None:
        raise DatasetError(f"record_preprocessor_script {path} cannot be loaded.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, "preprocess_handler", None)
    if handler is None:
        raise DatasetError(f"record_preprocessor_script {path} defines no preprocess_handler(inference_record).")
    return handler


def capture_rows(
    source: Path,
    index_names: list[str],
    start: datetime | None,
    end: datetime | None,
    preprocess: Callable[[InferenceRecord], Any] | None = None,
    output_first: bool = True,
) -> Iterator[Row]:
    order = sorted(index_names, key=lambda n: (n != "endpointOutput") if output_first else (n == "endpointOutput"))
    files = sorted(p for p in source.rglob("*.jsonl") if p.is_file()) if source.exists() else []
    for path in files:
        with path.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except ValueError:
                    continue  # never written by capture (whole lines only); skip foreign junk
                when = raw.get("eventMetadata", {}).get("inferenceTime")
                if when and (start or end):
                    t = parse_time(when)
                    if (start and t < start) or (end and t >= end):
                        continue
                if preprocess is not None:
                    out = preprocess(_record(raw))
                    if out:
                        yield out if isinstance(out, dict) else list(out)
                    continue
                row: list[Any] = []
                for name in order:
                    part = raw.get("captureData", {}).get(name)
                    if part is not None:
                        row.extend(decode_part(part))
                yield row
