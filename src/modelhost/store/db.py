"""The metadata store: SQLAlchemy over SQLite (default) or PostgreSQL (``--database-url``), Alembic migrations."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event, make_url, select
from sqlalchemy.exc import ArgumentError, OperationalError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

Row = dict[str, Any]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the data path's readers (CLI, tests) and the control plane's writer coexist.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")  # independent migration branches may coexist


PRIVATE_UMASK = 0o077


def secure_data_dir(data_dir: Path) -> None:
    """Make the data dir private to the server's user, once at start-up: umask 077 for the whole process
    (every directory it creates is 0700, every file 0600: the metadata DB holds model Environment values,
    logs, bucket objects and uploads), the data dir itself 0700 (existing files inside are then out of
    reach of other users too) and an existing ``modelhost.db`` 0600."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for name in ("modelhost.db", "modelhost.db-wal", "modelhost.db-shm"):
        if (data_dir / name).is_file():
            os.chmod(data_dir / name, 0o600)


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def engine_url(url: str) -> str:
    """A plain ``postgresql://`` (or ``postgres://``) URL uses psycopg 3, the driver of the ``postgres``
    extra (SQLAlchemy's default would be psycopg2); an explicit ``+driver`` is kept."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


class DatabaseUnavailable(Exception):
    """The metadata database named by --database-url cannot be used (bad URL, unreachable, refused)."""


class MetadataStore:
    """Row-level access to the resource tables; JSON columns are decoded on the way out."""

    JSON_COLUMNS = ("spec", "deployment")

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            if (
                path.name != ":memory:" and not path.exists()
            ):  # 0600 whatever the umask: it holds model Environment values (secrets)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            try:
                self.engine = create_engine(engine_url(url), pool_pre_ping=True, pool_size=10, max_overflow=20)
            except (ArgumentError, ImportError) as exc:
                raise DatabaseUnavailable(f"--database-url {_redacted(url)}: {exc}") from None
        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise DatabaseUnavailable(f"--database-url {_redacted(url)}: {exc.orig}") from None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @classmethod
    def encode(cls, values: Row) -> Row:
        return {k: json.dumps(v) if k in cls.JSON_COLUMNS else v for k, v in values.items()}

    @classmethod
    def decode(cls, row: Any) -> Row:
        out = dict(row._mapping)
        for k in cls.JSON_COLUMNS:
            if k in out and isinstance(out[k], str):
                out[k] = json.loads(out[k])
        return out

    def insert(self, conn: Connection, table: Table, values: Row) -> None:
        conn.execute(table.insert().values(**self.encode(values)))

    def get(self, conn: Connection, table: Table, name: str) -> Row | None:
        row = conn.execute(select(table).where(table.c.name_key == name.lower())).first()
        return self.decode(row) if row is not None else None

    def all(self, conn: Connection, table: Table) -> list[Row]:
        return [self.decode(r) for r in conn.execute(select(table))]

    def update(self, conn: Connection, table: Table, name: str, values: Row) -> None:
        conn.execute(table.update().where(table.c.name_key == name.lower()).values(**self.encode(values)))

    def delete(self, conn: Connection, table: Table, name: str) -> None:
        conn.execute(table.delete().where(table.c.name_key == name.lower()))
