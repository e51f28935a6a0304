"""``DataProcessing``: ``InputFilter`` -> model -> ``JoinSource`` -> ``OutputFilter`` per record.

JSONPath (SageMaker's dialect, see ``resources/transform.py``) selects parts of records.

CSV records are JSON arrays of their (string) cells. Joining appends the output's cells to the
input's for CSV; for JSON the output goes under ``SageMakerOutput`` of the input object, or
``{"SageMakerInput": ..., "SageMakerOutput": ...}`` when the input is not an object.
``GenerateInferenceId`` adds two CSV columns (id, job start time) or the keys
``SageMakerInferenceId`` / ``SageMakerInferenceTime``.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from modelhost.jobs.splitters import payload
from modelhost.resources.transform import (
    CSV,
    JSON,
    JSONLINES,
    PROCESSABLE_TYPES,
    FilterError,
    JsonPath,
    check_path,
    media_type,
)

__all__ = ["PROCESSABLE_TYPES", "DataProcessing", "FilterError", "JsonPath", "check_path", "media_type"]

# --- record formats ---------------------------------------------------------------------------------


def parse_csv(text: str) -> list[str]:
    rows = list(csv.reader([text]))
    return rows[0] if rows else []


def _cell(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None or isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return v


def dump_csv(value: Any) -> str:
    cells = value if isinstance(value, list) else [value]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([_cell(c) for c in cells])
    return out.getvalue()


def parse_record(data: bytes, fmt: str) -> Any:
    text = data.decode("utf-8")
    if fmt == CSV:
        return parse_csv(text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FilterError(f"a record is not valid JSON: {exc}") from None


def dump_record(value: Any, fmt: str) -> bytes:
    if fmt == CSV:
        return dump_csv(value).encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class DataProcessing:
    """The per-record pipeline of one job (inactive when it would change nothing)."""

    def __init__(
        self,
        spec: dict | None,
        content_type: str | None,
        accept: str | None,
        split_type: str,
        *,
        generate_inference_id: bool = False,
        job_start: str = "",
    ) -> None:
        spec = spec or {}
        self.input_filter = JsonPath(spec.get("InputFilter") or "$")
        self.output_filter = JsonPath(spec.get("OutputFilter") or "$")
        self.join = spec.get("JoinSource", "None") == "Input"
        self.inference_id = generate_inference_id
        self.job_start = job_start
        self.split_type = split_type
        self.in_fmt = _fmt(media_type(content_type)) or JSON
        self.accept = media_type(accept)
        self.active = self.join or self.inference_id or not self.output_filter.is_root
        self.filters_input = not self.input_filter.is_root

    def input_record(self, framed: bytes) -> tuple[bytes, Any]:
        """(the record as sent to the model, the parsed original kept for the join)."""
        if not self.filters_input and not self.join:
            return framed, None
        data = payload(framed, self.split_type)
        original = parse_record(data, self.in_fmt)
        if not self.filters_input:
            return framed, original
        sent = dump_record(self.input_filter.apply(original), self.in_fmt)
        return (sent + b"\n" if self.split_type == "Line" else sent), original

    def output_records(self, body: bytes, count: int, response_type: str | None) -> list[Any]:
        """A response split into one parsed output per input record."""
        fmt = _fmt(self.accept or media_type(response_type)) or JSON
        text = body.decode("utf-8")
        if fmt in (CSV, JSONLINES):
            lines = [line for line in text.splitlines() if line.strip()]
            if count == 1 and fmt == CSV and len(lines) != 1:
                return [[parse_csv(line) for line in lines]]
            if len(lines) != count:
                raise FilterError(f"the model returned {len(lines)} lines for {count} records")
            return [parse_csv(line) if fmt == CSV else json.loads(line) for line in lines]
        try:
            doc = json.loads(text)
        except ValueError:
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) != count:
                raise FilterError(
                    f"the model's output is not JSON and has {len(lines)} lines for {count} records"
                ) from None
            return [json.loads(line) for line in lines]
        if count == 1:
            return [doc]
        if isinstance(doc, list) and len(doc) == count:
            return doc
        raise FilterError(f"the model returned {len(doc) if isinstance(doc, list) else 1} outputs for {count} records")

    def output_record(self, original: Any, output: Any, response_type: str | None) -> bytes:
        """Join, OutputFilter and inference id for one record; the serialised line (no newline)."""
        out_fmt = CSV if self.in_fmt == CSV else JSON
        if not self.join:
            out_fmt = _fmt(self.accept or media_type(response_type)) or JSON
            if out_fmt == JSONLINES:
                out_fmt = JSON
        value = output
        if self.join:
            if self.in_fmt == CSV:
                value = list(original) + (output if isinstance(output, list) else [output])
            elif isinstance(original, dict):
                value = {**original, "SageMakerOutput": output}
            else:
                value = {"SageMakerInput": original, "SageMakerOutput": output}
        value = self.output_filter.apply(value)
        if self.inference_id:
            rid = str(uuid.uuid4())
            if out_fmt == CSV:
                value = (value if isinstance(value, list) else [value]) + [rid, self.job_start]
            elif isinstance(value, dict):
                value = {**value, "SageMakerInferenceId": rid, "SageMakerInferenceTime": self.job_start}
            else:
                value = {
                    "SageMakerOutput": value,
                    "SageMakerInferenceId": rid,
                    "SageMakerInferenceTime": self.job_start,
                }
        return dump_record(value, out_fmt)


def _fmt(media: str | None) -> str | None:
    if media in (CSV, JSON, JSONLINES):
        return media
    if media in ("application/x-jsonlines", "application/jsonl"):
        return JSONLINES
    return None
