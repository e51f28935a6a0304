"""The queue's per-request statements, run on the driver's own cursor, and the SQLite connection
the queue writes through on the event loop.

SQLAlchemy's ``Connection.execute`` costs several times what the statement itself does (~200 us
against ~30 us for an UPDATE by primary key on SQLite, bench/async.py), and a request takes four of
them. Each statement is compiled once per dialect (its own parameter style: ``?`` for SQLite,
``%(name)s`` for PostgreSQL) and executed on a DBAPI cursor: of the transaction SQLAlchemy opened
(so it commits or rolls back with it), or of ``DirectSqlite``'s connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Connection, Dialect, text

from modelhost.store.db import MetadataStore


class Statement:
    def __init__(self, sql: str) -> None:
        self.clause = text(sql)
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def bind(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        """The driver's SQL for this dialect and, for a positional style, the parameter order."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            c = self.clause.compile(dialect=dialect)
            order = tuple(c.positiontup) if c.positiontup else None
            compiled = self._compiled[dialect.name] = (c.string, order)
        return compiled


class Tx:
    """One transaction's cursor (the Writer's batch)."""

    def __init__(self, dialect: Dialect, cursor: Any) -> None:
        self.dialect = dialect
        self.cursor = cursor

    @classmethod
    def of(cls, conn: Connection) -> Tx:
        """The cursor of a transaction SQLAlchemy opened."""
        return cls(conn.dialect, conn.connection.driver_connection.cursor())  # type: ignore[union-attr]

    def execute(self, statement: Statement, params: dict[str, Any]) -> Any:
        sql, order = statement.bind(self.dialect)
        self.cursor.execute(sql, tuple(params[k] for k in order) if order is not None else params)
        return self.cursor

    def rowcount(self, statement: Statement, params: dict[str, Any]) -> int:
        return int(self.execute(statement, params).rowcount)

    def scalar(self, statement: Statement, params: dict[str, Any]) -> Any:
        return self.execute(statement, params).fetchone()[0]


class DirectSqlite:
    """The queue's own connection to a SQLite metadata DB, used on the event loop: a transaction
    of a few statements costs ~100 us there, and a thread hop per transaction (the GIL handed
    back and forth, a wake-up of the loop) cost several times that, four times per request.

    Never blocks: ``BEGIN IMMEDIATE`` with no busy timeout, so a transaction that would wait for
    another writer (the control plane, another front door) is not started (``begin`` False: the
    caller runs it in a thread instead, as before). No automatic checkpoint on this connection
    (its fsyncs would stall the loop): ``checkpoint`` runs one, in a thread. Commits are as
    durable as the pool's (WAL, synchronous=NORMAL: a killed process loses none)."""

    def __init__(self, store: MetadataStore) -> None:
        url = store.engine.url
        self.dialect = store.engine.dialect
        self.path = url.database or ""
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=0", "wal_autocheckpoint=0"):
            self.db.execute(f"PRAGMA {pragma}")
        self.cursor = self.db.cursor()

    @staticmethod
    def usable(store: MetadataStore) -> bool:
        """A SQLite database in a file (an in-memory one has no second connection)."""
        url = store.engine.url
        return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")

    def begin(self) -> Tx | None:
        """The transaction, or None if another writer holds the database now."""
        try:
            self.cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return None
        return Tx(self.dialect, self.cursor)

    def commit(self) -> None:
        self.cursor.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.cursor.execute("ROLLBACK")

    def checkpoint(self) -> None:
        """(Blocking: in a thread) copy the WAL back into the database, without waiting for anyone."""
        try:
            db = sqlite3.connect(self.path, timeout=10)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error:
            pass  # (the next one, or another connection's automatic one, copies it)

    def close(self) -> None:
        self.db.close()
