"""The queue's per-request statements, run on the driver's own cursor.

SQLAlchemy's ``Connection.execute`` costs several times what the statement itself does (~200 us
against ~30 us for an UPDATE by primary key on SQLite, bench/async.py), and a request takes four of
them. Each statement is compiled once per dialect (its own parameter style: ``?`` for SQLite,
``%(name)s`` for PostgreSQL) and executed on the DBAPI cursor of the transaction SQLAlchemy opened,
so it commits or rolls back with that transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text


class Statement:
    def __init__(self, sql: str) -> None:
        self.clause = text(sql)
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def bind(self, conn: Connection) -> tuple[str, tuple[str, ...] | None]:
        """The driver's SQL for this dialect and, for a positional style, the parameter order."""
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            c = self.clause.compile(dialect=dialect)
            order = tuple(c.positiontup) if c.positiontup else None
            compiled = self._compiled[dialect.name] = (c.string, order)
        return compiled


class Tx:
    """One transaction's cursor (the Writer's batch)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def execute(self, statement: Statement, params: dict[str, Any]) -> Any:
        sql, order = statement.bind(self.conn)
        self.cursor.execute(sql, tuple(params[k] for k in order) if order is not None else params)
        return self.cursor

    def rowcount(self, statement: Statement, params: dict[str, Any]) -> int:
        return int(self.execute(statement, params).rowcount)

    def scalar(self, statement: Statement, params: dict[str, Any]) -> Any:
        return self.execute(statement, params).fetchone()[0]
