"""The SQLite index beside the bucket tree: per object its ETag and attributes, stamped with the
file's (size, mtime_ns, inode); per bucket its creation time and location (see the package doc)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from modelhost.store.buckets.objects import ObjectAttrs


def stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


class MetaIndex:
    """The SQLite index beside the bucket tree (see the module doc)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()  # (re-entered by the writes inside a batch)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS objects (bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER, "
                "mtime_ns INTEGER, ino INTEGER, etag TEXT, content_type TEXT, attrs TEXT, "
                "PRIMARY KEY (bucket, key)) WITHOUT ROWID"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL, location TEXT)")

    def get(self, bucket: str, key: str) -> tuple | None:
        with self._lock:
            return self._db.execute(
                "SELECT size, mtime_ns, ino, etag, content_type, attrs FROM objects WHERE bucket=? AND key=?",
                (bucket, key),
            ).fetchone()

    def range(self, bucket: str, first: str, last: str) -> dict[str, tuple]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, size, mtime_ns, ino, etag, content_type, attrs FROM objects "
                "WHERE bucket=? AND key>=? AND key<=?",
                (bucket, first, last),
            ).fetchall()
        return {r[0]: r[1:] for r in rows}

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The writes made inside, by this thread, in one transaction (other threads wait): a
        commit per object costs more than the object's own write."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, bucket: str, key: str, st: os.stat_result, etag: str, attrs: ObjectAttrs) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?)",
                (bucket, key, *stamp(st), etag, attrs.content_type, attrs.to_json()),
            )

    def delete(self, bucket: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))

    def drop_bucket(self, bucket: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM objects WHERE bucket=?", (bucket,))
            self._db.execute("DELETE FROM buckets WHERE name=?", (bucket,))

    def add_bucket(self, bucket: str, created: float, location: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO buckets VALUES (?,?,?)", (bucket, created, location))

    def bucket(self, bucket: str) -> tuple[float, str] | None:
        with self._lock:
            return self._db.execute("SELECT created, location FROM buckets WHERE name=?", (bucket,)).fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()
