"""An endpoint's DataCaptureConfig as the capture path uses it (parsed once per control-loop pass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def media_type(content_type: str) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv``: SageMaker matches capture content types without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class CaptureConfig:
    enabled: bool
    percentage: float  # 0-100
    destination: str  # DestinationS3Uri without a trailing slash
    capture_input: bool
    capture_output: bool
    csv_types: frozenset[str]
    json_types: frozenset[str]

    @classmethod
    def parse(cls, dc: dict[str, Any]) -> CaptureConfig:
        modes = {o.get("CaptureMode") for o in dc.get("CaptureOptions", [])}
        header = dc.get("CaptureContentTypeHeader") or {}
        return cls(
            enabled=bool(dc.get("EnableCapture", True)),
            percentage=float(dc.get("InitialSamplingPercentage", 0)),
            destination=str(dc.get("DestinationS3Uri", "")).rstrip("/"),
            capture_input=bool(modes & {"Input", "InputAndOutput"}),
            capture_output=bool(modes & {"Output", "InputAndOutput"}),
            csv_types=frozenset(media_type(t) for t in header.get("CsvContentTypes", [])),
            json_types=frozenset(media_type(t) for t in header.get("JsonContentTypes", [])),
        )

    @property
    def active(self) -> bool:
        return self.enabled and self.percentage > 0 and (self.capture_input or self.capture_output)

    def encoding(self, content_type: str) -> str:
        """CSV / JSON when the media type is listed in CaptureContentTypeHeader, else BASE64."""
        kind = media_type(content_type)
        if kind in self.csv_types:
            return "CSV"
        if kind in self.json_types:
            return "JSON"
        return "BASE64"
