"""Client side: a transform job's progress as DescribeTransformJob reports it.

The server adds ``ModelhostProgress`` (objects and records done, records/s) to the description;
botocore drops members its service model does not know, so this reads them from the raw body.
"""

from __future__ import annotations

import json
from typing import Any

EVENT = "after-call.sagemaker.DescribeTransformJob"


def describe_with_progress(sm: Any, name: str) -> tuple[dict, dict]:
    """(DescribeTransformJob as boto3 parses it, the ModelhostProgress member or {})."""
    captured: dict[str, Any] = {}

    def grab(http_response: Any = None, **_kw: Any) -> None:
        try:
            captured.update(json.loads(http_response.content).get("ModelhostProgress") or {})
        except (ValueError, AttributeError):
            pass

    sm.meta.events.register(EVENT, grab)
    try:
        desc = sm.describe_transform_job(TransformJobName=name)
    finally:
        sm.meta.events.unregister(EVENT, grab)
    return desc, captured
