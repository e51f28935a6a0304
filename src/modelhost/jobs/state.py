"""A running job's records in the metadata store: its row in ``transform_jobs`` (status, progress)
and one row per finished object in ``transform_job_objects`` (what a resumed job skips). Blocking:
call from a thread."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from modelhost.store import tables
from modelhost.store.db import MetadataStore


@dataclass
class Progress:
    objects_total: int = 0
    objects_completed: int = 0
    objects_failed: int = 0
    records: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.time)
    resumed_records: int = 0  # records done before a restart (not counted in the rate)

    def to_json(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-6)
        return {
            "ObjectsTotal": self.objects_total,
            "ObjectsCompleted": self.objects_completed,
            "ObjectsFailed": self.objects_failed,
            "RecordsProcessed": self.records,
            "BytesTotal": self.bytes_total,
            "BytesProcessed": self.bytes_done,
            "ElapsedSeconds": round(elapsed, 3),
            "RecordsPerSecond": round((self.records - self.resumed_records) / elapsed, 1),
        }


class JobState:
    def __init__(self, store: MetadataStore, name: str) -> None:
        self.store = store
        self.name = name
        self.key = name.lower()

    def set(self, **values: Any) -> None:
        values.setdefault("last_modified_time", round(time.time(), 3))
        with self.store.begin() as conn:
            self.store.update(conn, tables.transform_jobs, self.name, values)

    def status(self) -> str | None:
        with self.store.begin() as conn:
            row = self.store.get(conn, tables.transform_jobs, self.name)
        return row["status"] if row else None

    def finished_objects(self) -> dict[str, dict[str, Any]]:
        t = tables.transform_job_objects
        with self.store.begin() as conn:
            rows = conn.execute(select(t).where(t.c.job_key == self.key)).all()
        return {r.key: dict(r._mapping) for r in rows}

    def record_object(self, key: str, status: str, records: int, output: str | None, reason: str | None) -> None:
        t = tables.transform_job_objects
        with self.store.begin() as conn:
            conn.execute(delete(t).where(t.c.job_key == self.key, t.c.key == key))
            conn.execute(
                t.insert().values(
                    job_key=self.key, key=key, status=status, records=records, output_uri=output, reason=reason
                )
            )

    def forget_objects(self) -> None:
        t = tables.transform_job_objects
        with self.store.begin() as conn:
            conn.execute(delete(t).where(t.c.job_key == self.key))

    def write_progress(self, progress: Progress) -> None:
        with self.store.begin() as conn:
            conn.execute(
                tables.transform_jobs.update()
                .where(tables.transform_jobs.c.name_key == self.key)
                .values(progress=json.dumps(progress.to_json()))
            )
