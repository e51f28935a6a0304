"""Monitoring schedule expressions as SageMaker accepts them, and when a schedule is due (no I/O).

``cron(0 * ? * * *)`` hourly, ``cron(0 H ? * * *)`` daily at H UTC, ``cron(0 H/N ? * * *)`` every N
hours from H (the SDK's ``CronExpressionGenerator``), and ``NOW``: one run at once, whose window
``DataAnalysisStartTime`` / ``DataAnalysisEndTime`` are negative ISO-8601 durations (``-PT1H``).
Slots are computed with croniter. A schedule runs only its latest due slot: after a restart a
missed slot runs once, not once per missed hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter

NOW = "NOW"
_CRON = re.compile(r"^cron\((.*)\)$")
_HOUR = re.compile(r"^(\*|\d{1,2}|\d{1,2}/\d{1,2})$")
_OFFSET = re.compile(r"^-PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")
MAX_WINDOW = 24 * 3600
HOUR = 3600.0


class ScheduleError(ValueError):
    """The expression or window is not one SageMaker accepts; the message names what is wrong."""


@dataclass(frozen=True)
class Schedule:
    expression: str
    cron: str | None  # the 5-field croniter form; None for NOW
    start_offset: float  # seconds relative to the slot (<= 0)
    end_offset: float

    @property
    def once(self) -> bool:
        return self.cron is None

    def window(self, slot: float) -> tuple[float, float]:
        return slot + self.start_offset, slot + self.end_offset

    def due(self, since: float, now: float, last_slot: float | None) -> float | None:
        """The slot to run now, if any: the latest slot in [since, now] not run yet."""
        if self.cron is None:
            return since if last_slot is None else None
        # get_prev is strictly before its start: from just after now, a slot at exactly now counts
        slot = float(croniter(self.cron, datetime.fromtimestamp(now + 0.001, UTC)).get_prev(float))
        if slot < since - 1e-6 or (last_slot is not None and slot <= last_slot):
            return None
        return slot


def parse_offset(text: str, member: str) -> float:
    m = _OFFSET.match(text)
    if m is None or all(g is None for g in m.groups()):
        raise ScheduleError(
            f"{member} {text} is not a negative ISO-8601 duration such as -PT1H (hours, minutes, seconds)."
        )
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return -float(hours * 3600 + minutes * 60 + seconds) or 0.0


def parse(expression: str, start: str | None = None, end: str | None = None) -> Schedule:
    if expression == NOW:
        if start is None or end is None:
            raise ScheduleError(
                "DataAnalysisStartTime and DataAnalysisEndTime are required for a one-time (NOW) schedule."
            )
        return _windowed(Schedule(NOW, None, parse_offset(start, "DataAnalysisStartTime"), 0.0), end)
    m = _CRON.match(expression.strip())
    fields = m.group(1).split() if m else []
    if len(fields) != 6:
        raise ScheduleError(
            f"Invalid ScheduleExpression {expression}: use cron(0 * ? * * *) (hourly), cron(0 H ? * * *) (daily "
            "at hour H), cron(0 H/N ? * * *) (every N hours) or NOW."
        )
    minute, hour, dom, month, dow, year = fields
    if minute != "0":
        raise ScheduleError(
            f"Invalid ScheduleExpression {expression}: the minute must be 0 (the minimum period is one hour)."
        )
    if not _HOUR.match(hour) or dom not in ("?", "*") or month != "*" or dow not in ("*", "?") or year not in ("*",):
        raise ScheduleError(
            f"Invalid ScheduleExpression {expression}: only hourly, daily and every-N-hours expressions are supported."
        )
    parts = hour.split("/")
    if (parts[0] != "*" and not 0 <= int(parts[0]) <= 23) or (len(parts) == 2 and not 1 <= int(parts[1]) <= 24):
        raise ScheduleError(f"Invalid ScheduleExpression {expression}: hour out of range.")
    cron = f"0 {hour} * * *"
    if not croniter.is_valid(cron):
        raise ScheduleError(f"Invalid ScheduleExpression {expression}.")
    sched = Schedule(expression, cron, -HOUR, 0.0)  # by default: the hour before the slot
    if start is not None or end is not None:
        if start is None or end is None:
            raise ScheduleError("DataAnalysisStartTime and DataAnalysisEndTime must be given together.")
        sched = _windowed(Schedule(expression, cron, parse_offset(start, "DataAnalysisStartTime"), 0.0), end)
    return sched


def _windowed(sched: Schedule, end: str) -> Schedule:
    end_offset = parse_offset(end, "DataAnalysisEndTime")
    if end_offset <= sched.start_offset:
        raise ScheduleError("DataAnalysisStartTime must be earlier than DataAnalysisEndTime.")
    if end_offset - sched.start_offset > MAX_WINDOW:
        raise ScheduleError(
            "The analysis window (DataAnalysisStartTime to DataAnalysisEndTime) must be at most 24 hours."
        )
    return Schedule(sched.expression, sched.cron, sched.start_offset, end_offset)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hours(start: float, end: float) -> list[float]:
    """The start of every UTC hour that overlaps [start, end)."""
    first = start - start % HOUR
    out = []
    t = first
    while t < end:
        out.append(t)
        t += HOUR
    return out
