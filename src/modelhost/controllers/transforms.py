"""The transform job supervisor: runs every ``InProgress`` job and finishes every ``Stopping``
one, driven only by the metadata store (so it is restart-safe).

The control loop (controllers/loop.py) calls ``scan`` on every pass — when woken by the control
plane and at least every tick — and each scan reads the ``transform_jobs`` table (a cheap query on
a small table): a new job starts, ``StopTransformJob`` (which only writes ``Stopping``) takes
effect. After a server restart an ``InProgress`` job is resumed (the objects it finished are
skipped); a job interrupted ``MAX_ATTEMPTS`` times is failed with the reason instead, and a
``Stopping`` job nobody runs any more becomes ``Stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

from modelhost.config import Settings
from modelhost.controllers import job_rows
from modelhost.jobs.runner import TransformRunner
from modelhost.store import tables
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.blobs import BlobStore
from modelhost.store.db import MetadataStore

log = logging.getLogger("modelhost.jobs")

MAX_ATTEMPTS = 3  # runs of one job (the first plus resumes after restarts)
ACTIVE = ("InProgress", "Stopping")


class TransformSupervisor:
    def __init__(self, settings: Settings, store: MetadataStore, blobs: BlobStore, artifacts: ArtifactCache) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.artifacts = artifacts
        self.running: dict[str, tuple[TransformRunner, asyncio.Task[None]]] = {}
        self.run_dir = Path(tempfile.mkdtemp(prefix="mht-"))  # unix socket paths must stay short

    def _active_rows(self) -> list[dict]:
        return job_rows.active_rows(self.store, tables.transform_jobs, ACTIVE)

    def _set(self, name: str, **values: object) -> None:
        job_rows.set_row(self.store, tables.transform_jobs, name, values)

    async def scan(self) -> None:
        rows = await asyncio.to_thread(self._active_rows)
        for row in rows:
            key = row["name_key"]
            current = self.running.get(key)
            if row["status"] == "InProgress" and current is None:
                attempts = int(row.get("attempts") or 0) + 1
                if attempts > MAX_ATTEMPTS:
                    await asyncio.to_thread(
                        self._set,
                        row["name"],
                        status="Failed",
                        failure_reason=(
                            f"InternalServerError: the job was interrupted by {MAX_ATTEMPTS - 1} server restarts "
                            "and was not resumed again."
                        ),
                        end_time=round(time.time(), 3),
                    )
                    continue
                values: dict[str, object] = {"attempts": attempts}
                if row.get("start_time") is None:
                    values["start_time"] = round(time.time(), 3)
                await asyncio.to_thread(self._set, row["name"], **values)
                row.update(values)
                self._launch(row)
            elif row["status"] == "Stopping":
                if current is None:
                    # Nothing runs it (stopped before it started, or across a restart): finish the stop.
                    runner = self._runner(row)
                    runner.stop_requested = True
                    await runner.finish_stopped()
                    runner.log.close()
                elif not current[0].stop_requested:
                    current[0].stop_requested = True
                    current[1].cancel()

    def _runner(self, row: dict) -> TransformRunner:
        return TransformRunner(self.settings, self.store, self.blobs, self.artifacts, self.run_dir, row)

    def _launch(self, row: dict) -> None:
        key = row["name_key"]
        runner = self._runner(row)
        task = asyncio.create_task(runner.run())
        self.running[key] = (runner, task)

        def done(t: asyncio.Task[None]) -> None:
            self.running.pop(key, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("transform job %s crashed: %r", row["name"], t.exception())

        task.add_done_callback(done)

    async def shutdown(self) -> None:
        tasks = [task for _runner, task in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.run_dir)
