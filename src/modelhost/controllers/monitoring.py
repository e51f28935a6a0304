"""The monitoring scheduler: on every control-loop pass, each ``Scheduled`` schedule whose latest
slot is due and not yet run gets its execution (control/executions.py). Slots come from the stored
schedule and the executions table alone, so after a restart a missed slot runs once (the latest
one), never once per missed hour, and a slot never runs twice (it is the row's key)."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select

from modelhost.control import executions
from modelhost.control.context import ControlContext
from modelhost.resources import schedule as expressions
from modelhost.store import tables

log = logging.getLogger("modelhost.monitoring")


class MonitoringScheduler:
    def __init__(self, control: ControlContext) -> None:
        self.control = control

    async def scan(self) -> None:
        if await asyncio.to_thread(self.run_due, time.time()):
            self.control.wake()  # the processing supervisor picks the new jobs up

    def run_due(self, now: float) -> int:
        """Start every due execution; returns how many were started."""
        store = self.control.store
        s = tables.monitoring_schedules
        with store.begin() as conn:
            rows = [store.decode(r) for r in conn.execute(select(s).where(s.c.status == "Scheduled")).all()]
            last = {r["name"]: executions.last_slot(conn, r["name"]) for r in rows}
        started = 0
        for row in rows:
            sched = row["spec"]["MonitoringScheduleConfig"]["ScheduleConfig"]
            try:
                parsed = expressions.parse(
                    sched["ScheduleExpression"], sched.get("DataAnalysisStartTime"), sched.get("DataAnalysisEndTime")
                )
            except expressions.ScheduleError as exc:  # accepted once; never expected to fail later
                log.error("monitoring schedule %s: %s", row["name"], exc)
                continue
            since = float(row["spec"].get("StartedAt") or row["creation_time"])
            slot = parsed.due(since, now, last[row["name"]])
            if slot is not None and executions.start_execution(self.control, row, slot):
                log.info("monitoring schedule %s: execution for %s started", row["name"], expressions.iso(slot))
                started += 1
        return started

    async def shutdown(self) -> None:
        return None
