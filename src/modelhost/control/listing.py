"""List conventions shared by every List* operation: filters, sort, NextToken pagination."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from modelhost.errors import ValidationException

DEFAULT_PAGE_SIZE = 10


def _epoch(value: Any) -> float:
    # botocore sends timestamps as epoch numbers; accept ISO strings too (the AWS CLI may).
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    raise ValidationException(f"Invalid timestamp: {value!r}")


def filter_rows(rows: list[dict], request: dict, status_column: str | None = None) -> list[dict]:
    name_contains = request.get("NameContains")
    if name_contains:
        needle = name_contains.lower()
        rows = [r for r in rows if needle in r["name"].lower()]
    for key, column, strict_before in (
        ("CreationTimeBefore", "creation_time", True),
        ("CreationTimeAfter", "creation_time", False),
        ("LastModifiedTimeBefore", "last_modified_time", True),
        ("LastModifiedTimeAfter", "last_modified_time", False),
    ):
        if key in request:
            bound = _epoch(request[key])
            if strict_before:
                rows = [r for r in rows if r[column] < bound]
            else:
                rows = [r for r in rows if r[column] >= bound]
    if status_column and request.get("StatusEquals"):
        rows = [r for r in rows if r[status_column] == request["StatusEquals"]]
    return rows


def sort_rows(rows: list[dict], request: dict, columns: dict[str, str]) -> list[dict]:
    sort_by = request.get("SortBy", "CreationTime")
    column = columns.get(sort_by)
    if column is None:
        raise ValidationException(f"Invalid SortBy value: {sort_by}. Valid values: {', '.join(columns)}")
    descending = request.get("SortOrder", "Descending") == "Descending"
    # Ties broken by name so pages are stable.
    return sorted(rows, key=lambda r: (r[column], r["name"]), reverse=descending)


def paginate(items: Sequence[dict], request: dict, key: str, to_item: Callable[[dict], dict]) -> dict:
    start = 0
    token = request.get("NextToken")
    if token:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
            if start < 0:
                raise ValueError(start)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ValidationException(f"Invalid pagination token: {token}") from None
    size = int(request.get("MaxResults", DEFAULT_PAGE_SIZE))
    page = items[start : start + size]
    out: dict[str, Any] = {key: [to_item(r) for r in page]}
    if start + size < len(items):
        out["NextToken"] = base64.urlsafe_b64encode(json.dumps({"offset": start + size}).encode()).decode()
    return out
