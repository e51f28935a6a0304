"""Which front door leads: a lease on the metadata database that exactly one process holds.

Front doors sharing one database (``serve --workers N``, or servers on several machines) all serve
the data plane and the control-plane API; only the holder of the lease runs the control loop's
reconciler, autoscaler, schedules and supervisors. The lease is held for the life of the process
and released by the operating system when it dies (kill -9 included), so another front door takes
over on its next attempt:

- SQLite (one machine): an exclusive ``flock`` on ``<database>.leader`` next to the database file.
- PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection (TCP keepalives on, so a leader
  whose machine vanishes loses it within ~15 s); the lease is lost if that connection breaks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from modelhost.store.db import engine_url

log = logging.getLogger("modelhost.leadership")

# "modelhos" as a 64-bit key: one leader per database (the lock lives in the database server).
ADVISORY_KEY = int.from_bytes(b"modelhos", "big")


class Lease(Protocol):
    """Blocking calls (the control loop runs them in a worker thread)."""

    description: str

    def try_acquire(self) -> bool:
        """Take the lease if no one holds it; True while this process holds it."""
        ...

    def still_held(self) -> bool:
        """False once a held lease is lost (the database connection behind it broke)."""
        ...

    def release(self) -> None: ...


class FileLease:
    """An exclusive flock on a file: held until released or the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"lock file {path}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who leads, for a person looking
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class AdvisoryLease:
    """A PostgreSQL session-level advisory lock on a connection of its own (outside the pool)."""

    def __init__(self, url: str, key: int = ADVISORY_KEY) -> None:
        self.key = key
        self.description = f"PostgreSQL advisory lock {key}"
        self._engine = create_engine(
            engine_url(url),
            poolclass=NullPool,
            connect_args={"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3},
        )
        self._conn: Any = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        conn = self._engine.connect()
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            conn.commit()  # the lock is the session's; no transaction left open
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
        except Exception:
            log.exception("the leader's database connection broke")
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            return False
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # ending the session releases its advisory locks
            self._conn = None
        self._engine.dispose()


def lease_for(db_url: str) -> Lease:
    """The lease of a metadata database: a lock file next to a SQLite file, else an advisory lock."""
    if db_url.startswith("sqlite:///"):
        return FileLease(Path(db_url.removeprefix("sqlite:///") + ".leader"))
    return AdvisoryLease(db_url)
