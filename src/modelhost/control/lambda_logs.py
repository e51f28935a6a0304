"""CloudWatch Logs for Lambda functions: the log group ``/aws/lambda/<name>`` over the function's
log file (its instances' output with START / END / REPORT lines, and the platform's lines), one
stream ``[$LATEST]<name>``, served by control/logs_api.py's DescribeLogStreams / GetLogEvents."""

from __future__ import annotations

import calendar
import re
import time
from typing import Any

from modelhost.control.context import ControlContext
from modelhost.store import tables
from modelhost.store.logs import function_log_path

PREFIX = "/aws/lambda/"
_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z \[([^\]]*)\] ?(.*)$")


def function_of(ctx: ControlContext, group: str) -> str | None:
    """The function a /aws/lambda/<name> group belongs to (None: no such function)."""
    if not group.startswith(PREFIX):
        return None
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.lambda_functions, group[len(PREFIX) :])
    return row["name"] if row else None


def stream_name(function: str) -> str:
    return f"[$LATEST]{function}"


def events(ctx: ControlContext, function: str) -> dict[str, list[dict[str, Any]]]:
    try:
        text = function_log_path(ctx.settings.logs_dir, function).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            if out:
                out[-1]["message"] += "\n" + line
            continue
        stamp = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) * 1000 + int(m.group(2))
        message = m.group(4) if m.group(3) != "platform" else f"[platform] {m.group(4)}"
        out.append({"timestamp": stamp, "message": message, "ingestionTime": stamp})
    return {stream_name(function): out} if out else {}
