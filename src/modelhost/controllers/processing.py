"""The processing job supervisor: runs every ``InProgress`` job and finishes every ``Stopping`` one,
driven only by the metadata store (restart-safe, as the transform supervisor).

Each control-loop pass reads the ``processing_jobs`` rows that are active. A job nobody runs is
started (after a restart it starts over: a processing job's program is not resumable; after
``MAX_ATTEMPTS`` runs it is failed instead). ``StopProcessingJob`` only writes ``Stopping``: the
runner's process group is killed here and the job becomes ``Stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from modelhost.config import Settings
from modelhost.controllers import job_rows
from modelhost.jobs.processing.runner import ProcessingRunner
from modelhost.store import tables
from modelhost.store.blobs import BlobStore
from modelhost.store.db import MetadataStore

log = logging.getLogger("modelhost.jobs")

MAX_ATTEMPTS = 3
ACTIVE = ("InProgress", "Stopping")


class ProcessingSupervisor:
    def __init__(self, settings: Settings, store: MetadataStore, blobs: BlobStore) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.running: dict[str, asyncio.Task[None]] = {}

    def _active_rows(self) -> list[dict]:
        return job_rows.active_rows(self.store, tables.processing_jobs, ACTIVE)

    def _set(self, name: str, **values: object) -> None:
        job_rows.set_row(self.store, tables.processing_jobs, name, values)

    def _claim(self, row: dict, values: dict[str, object]) -> bool:
        """Take the job for a run, if it is still InProgress with the attempts we read: the rows were read
        before awaiting, and a job may have finished (and left ``running``) meanwhile."""
        t = tables.processing_jobs
        with self.store.begin() as conn:
            done = conn.execute(
                t.update()
                .where(t.c.name_key == row["name_key"], t.c.status == "InProgress", t.c.attempts == row["attempts"])
                .values(**values, last_modified_time=round(time.time(), 3))
            )
        return bool(done.rowcount)

    async def scan(self) -> None:
        for row in await asyncio.to_thread(self._active_rows):
            key = row["name_key"]
            task = self.running.get(key)
            if row["status"] == "InProgress" and task is None:
                attempts = int(row.get("attempts") or 0) + 1
                if attempts > MAX_ATTEMPTS:
                    await asyncio.to_thread(
                        self._set,
                        row["name"],
                        status="Failed",
                        failure_reason=f"InternalServerError: the job was interrupted by {MAX_ATTEMPTS - 1} server "
                        "restarts and was not run again.",
                        end_time=round(time.time(), 3),
                    )
                    continue
                values: dict[str, object] = {"attempts": attempts}
                if row.get("start_time") is None:
                    values["start_time"] = round(time.time(), 3)
                if key in self.running or not await asyncio.to_thread(self._claim, row, values):
                    continue
                row.update(values)
                self._launch(row)
            elif row["status"] == "Stopping":
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await asyncio.to_thread(self._set, row["name"], status="Stopped", end_time=round(time.time(), 3))

    def _launch(self, row: dict) -> None:
        key = row["name_key"]
        runner = ProcessingRunner(self.settings, self.store, self.blobs, row)
        task = asyncio.create_task(runner.run())
        self.running[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self.running.pop(key, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("processing job %s crashed: %r", row["name"], t.exception())

        task.add_done_callback(done)

    async def shutdown(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
