"""A minimal CloudWatch Logs API (JSON 1.1, ``X-Amz-Target: Logs_20140328.<Op>``) over the
per-job log files, for the SDK's ``Transformer.wait(logs=True)`` and processing jobs' ``wait(logs=True)``:
``DescribeLogStreams`` and ``GetLogEvents`` on the log groups ``/aws/sagemaker/TransformJobs`` and
``/aws/sagemaker/ProcessingJobs`` (one stream ``<job>/algo-1``).

A job's log (``<data-dir>/logs/transform-jobs/<job>.log``) holds lines ``<time> [<source>] <text>``;
instance ``k``'s lines (source ``instance/k``) form the stream ``<job>/instance-k``, and the
platform's own lines go to the first instance's stream (one stream per instance, as on AWS).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ApiError, ValidationException
from modelhost.store import tables
from modelhost.store.logs import PLATFORM, job_log_path, processing_log_path

TRANSFORM_GROUP = "/aws/sagemaker/TransformJobs"
PROCESSING_GROUP = "/aws/sagemaker/ProcessingJobs"
# log group -> (the jobs' table, their log file)
GROUPS = {
    TRANSFORM_GROUP: (tables.transform_jobs, job_log_path),
    PROCESSING_GROUP: (tables.processing_jobs, processing_log_path),
}
DEFAULT_LIMIT = 10000
_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z \[([^\]]*)\] ?(.*)$")
_INSTANCE = re.compile(r"^instance/(\d+)$")


class ResourceNotFoundException(ApiError):
    code = "ResourceNotFoundException"


class InvalidParameterException(ApiError):
    code = "InvalidParameterException"


def _group(req: Request) -> str:
    group = req.get("logGroupName") or req.get("logGroupIdentifier") or ""
    if group.startswith("arn:"):
        group = group.split(":log-group:", 1)[-1].removesuffix(":*")
    if group not in GROUPS:
        raise ResourceNotFoundException("The specified log group does not exist.")
    return group


def _events(path: Path, job: str, group: str = TRANSFORM_GROUP) -> dict[str, list[dict[str, Any]]]:
    """Stream name -> events, in file order."""
    if group == PROCESSING_GROUP:  # one instance: the container's and the runner's lines in one stream
        return _single_stream(path, f"{job}/algo-1")
    streams: dict[str, list[dict[str, Any]]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return streams
    last: dict[str, Any] | None = None
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            if last is not None:  # a continuation of the previous event
                last["message"] += "\n" + line
            continue
        stamp = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) * 1000 + int(m.group(2))
        source, message = m.group(3), m.group(4)
        inst = _INSTANCE.match(source)
        index = int(inst.group(1)) if inst else 0
        if not inst and source != PLATFORM:
            message = f"[{source}] {message}"
        last = {"timestamp": stamp, "message": message, "ingestionTime": stamp}
        streams.setdefault(f"{job}/instance-{index}", []).append(last)
    return streams


def _single_stream(path: Path, stream: str) -> dict[str, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    for found in _events(path, "").values():
        events.extend(found)
    events.sort(key=lambda e: e["timestamp"])
    return {stream: events} if events else {}


def _job_name(ctx: ControlContext, name: str, group: str = TRANSFORM_GROUP) -> str | None:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, GROUPS[group][0], name)
    return row["name"] if row else None


def _token(value: str | None, prefix: str) -> int | None:
    if not value:
        return None
    if not value.startswith(prefix) or not value[len(prefix) :].isdigit():
        raise InvalidParameterException(f"The specified nextToken is invalid: {value}")
    return int(value[len(prefix) :])


def describe_log_streams(ctx: ControlContext, req: Request) -> Response:
    group = _group(req)
    prefix = req.get("logStreamNamePrefix") or ""
    if req.get("orderBy") == "LastEventTime" and prefix:
        raise InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
    jobs: list[str] = []
    if prefix and "/" in prefix:
        name = _job_name(ctx, prefix.split("/", 1)[0], group)
        jobs = [name] if name else []
    else:
        with ctx.store.begin() as conn:
            jobs = [r["name"] for r in ctx.store.all(conn, GROUPS[group][0])]
    streams = []
    for job in jobs:
        path = GROUPS[group][1](ctx.settings.logs_dir, job)
        for stream, events in _events(path, job, group).items():
            if not stream.startswith(prefix) or not events:
                continue
            streams.append(
                {
                    "logStreamName": stream,
                    "creationTime": events[0]["timestamp"],
                    "firstEventTimestamp": events[0]["timestamp"],
                    "lastEventTimestamp": events[-1]["timestamp"],
                    "lastIngestionTime": events[-1]["timestamp"],
                    "uploadSequenceToken": "0",
                    "arn": f"arn:aws:logs:{ctx.settings.region}:{ctx.settings.account_id}:log-group:{group}:"
                    f"log-stream:{stream}",
                    "storedBytes": 0,
                }
            )
    if req.get("orderBy") == "LastEventTime":
        streams.sort(key=lambda s: s["lastEventTimestamp"])
    else:
        streams.sort(key=lambda s: s["logStreamName"])
    if req.get("descending"):
        streams.reverse()
    start = _token(req.get("nextToken"), "s/") or 0
    limit = int(req.get("limit") or 50)
    out: Response = {"logStreams": streams[start : start + limit]}
    if start + limit < len(streams):
        out["nextToken"] = f"s/{start + limit}"
    return out


def get_log_events(ctx: ControlContext, req: Request) -> Response:
    group = _group(req)
    stream = req["logStreamName"]
    job = _job_name(ctx, stream.rsplit("/", 1)[0], group) if "/" in stream else None
    events = _events(GROUPS[group][1](ctx.settings.logs_dir, job), job, group).get(stream) if job else None
    if events is None:
        raise ResourceNotFoundException("The specified log stream does not exist.")
    start_time, end_time = req.get("startTime"), req.get("endTime")
    if start_time is not None or end_time is not None:
        events = [
            e
            for e in events
            if (start_time is None or e["timestamp"] >= start_time) and (end_time is None or e["timestamp"] < end_time)
        ]
    limit = int(req.get("limit") or DEFAULT_LIMIT)
    if limit < 1:
        raise ValidationException("limit must be at least 1")
    token = req.get("nextToken")
    if token and token.startswith("b/"):
        end = _token(token, "b/") or 0
        begin = max(0, end - limit)
    elif token:
        begin = _token(token, "f/") or 0
        end = min(len(events), begin + limit)
    elif req.get("startFromHead"):
        begin, end = 0, min(len(events), limit)
    else:
        end = len(events)
        begin = max(0, end - limit)
    return {
        "events": events[begin:end],
        "nextForwardToken": f"f/{end}",
        "nextBackwardToken": f"b/{begin}",
    }


OPERATIONS: dict[str, Callable[[ControlContext, Request], Response]] = {
    "DescribeLogStreams": describe_log_streams,
    "GetLogEvents": get_log_events,
}
