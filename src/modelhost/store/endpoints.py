"""The endpoints table as typed records (resources/endpoint.py holds the (de)serialisation)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from modelhost.resources.endpoint import EndpointRecord
from modelhost.store import tables
from modelhost.store.db import MetadataStore


def load(store: MetadataStore, conn: Connection, name: str) -> EndpointRecord | None:
    row = store.get(conn, tables.endpoints, name)
    return EndpointRecord.from_row(row) if row is not None else None


def load_all(store: MetadataStore, conn: Connection) -> list[EndpointRecord]:
    return [EndpointRecord.from_row(row) for row in store.all(conn, tables.endpoints)]


def insert(store: MetadataStore, conn: Connection, record: EndpointRecord) -> None:
    store.insert(conn, tables.endpoints, record.to_row())


def save(store: MetadataStore, conn: Connection, record: EndpointRecord, **changes: Any) -> EndpointRecord:
    """Write the record with ``changes`` applied (fields of EndpointRecord) and return it."""
    record = replace(record, **changes) if changes else record
    row = record.to_row()
    row.pop("name_key")
    store.update(conn, tables.endpoints, record.name, row)
    return record


def delete(store: MetadataStore, conn: Connection, name: str) -> None:
    store.delete(conn, tables.endpoints, name)
