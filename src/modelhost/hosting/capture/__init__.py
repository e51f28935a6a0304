"""Real-time data capture: DataCaptureConfig's sampled request/response records, written off the hot
path to ``{DestinationS3Uri}/{Endpoint}/{Variant}/yyyy/mm/dd/hh/*.jsonl`` through the blob store."""

from modelhost.hosting.capture.config import CaptureConfig
from modelhost.hosting.capture.service import DataCapture

__all__ = ["CaptureConfig", "DataCapture"]
