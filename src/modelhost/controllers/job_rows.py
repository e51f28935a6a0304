"""Row access the job supervisors share (transform and processing jobs): the active rows, a status update."""

from __future__ import annotations

import time

from sqlalchemy import Table, select

from modelhost.store.db import MetadataStore


def active_rows(store: MetadataStore, table: Table, statuses: tuple[str, ...]) -> list[dict]:
    with store.begin() as conn:
        rows = conn.execute(select(table).where(table.c.status.in_(statuses))).all()
    return [store.decode(r) for r in rows]


def set_row(store: MetadataStore, table: Table, name: str, values: dict[str, object]) -> None:
    values.setdefault("last_modified_time", round(time.time(), 3))
    with store.begin() as conn:
        store.update(conn, table, name, values)
