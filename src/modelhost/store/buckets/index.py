"""The SQLite index beside the bucket tree: per object its ETag and attributes, stamped with the
file's (size, mtime_ns, inode); per bucket its creation time and location (see the package doc).

A small object written from memory may have no file: its bytes are the row's ``data`` (an
*inline* object, stamped with inode 0, which no file has). Schema version 1 (``PRAGMA
user_version``) added that column; an index of version 0 gains it on open (every old row is a file's).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelhost.store.buckets.objects import ObjectAttrs

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000  # (sqlite3.connect's default timeout)
PAGE = 1000  # inline keys read per query while listing (the lock is not held between pages)
AUTOCHECKPOINT_PAGES = 1000  # (SQLite's default wal_autocheckpoint)
NOW_CHECKPOINT_EVERY = 200  # batch_now commits between the checkpoints a thread runs for them


@dataclass(frozen=True)
class InlineStat:
    """What a listing knows of an inline object: a stat result's fields the store reads."""

    st_size: int
    st_mtime_ns: int
    st_ino: int = 0  # (no file has inode 0: an inline row's stamp never matches a file)

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9


Stat = os.stat_result | InlineStat


def stamp(st: Stat) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def parents(key: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``: the keys that would be directories of this one."""
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class MetaIndex:
    """The SQLite index beside the bucket tree (see the module doc)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()  # (re-entered by the writes inside a batch)
        self._now_commits = 0  # batch_now commits since the last checkpoint run for them
        self._checkpointing = False
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='objects'").fetchone()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if exists and version < 1:  # an index from before inline objects: every row is a file's
                self._db.execute("ALTER TABLE objects ADD COLUMN data BLOB")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS objects (bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER, "
                "mtime_ns INTEGER, ino INTEGER, etag TEXT, content_type TEXT, attrs TEXT, data BLOB, "
                "PRIMARY KEY (bucket, key)) WITHOUT ROWID"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL, location TEXT)")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def get(self, bucket: str, key: str) -> tuple | None:
        """(size, mtime_ns, ino, etag, content_type, attrs, data): ``data`` is None for a file's row."""
        with self._lock:
            return self._db.execute(
                "SELECT size, mtime_ns, ino, etag, content_type, attrs, data FROM objects WHERE bucket=? AND key=?",
                (bucket, key),
            ).fetchone()

    def inline_after(self, bucket: str, prefix: str, start_after: str) -> Iterator[tuple[str, InlineStat]]:
        """The inline objects with ``prefix`` and ``key > start_after``, in key order (SQLite's
        BINARY collation of UTF-8 is S3's byte order), read a page at a time."""
        after = start_after
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT key, size, mtime_ns FROM objects WHERE bucket=? AND key>=? AND key>? "
                    "AND data IS NOT NULL ORDER BY key LIMIT ?",
                    (bucket, prefix, after, PAGE),
                ).fetchall()
            for key, size, mtime_ns in rows:
                if not key.startswith(prefix):
                    return  # (sorted: every later key is past the prefix too)
                yield key, InlineStat(size, mtime_ns)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def inline_conflict(self, bucket: str, key: str) -> str | None:
        """An inline object this key cannot sit beside: one at a parent (``a`` for ``a/b``) or one
        under it (``a/b`` for ``a``), as a file system could not hold both either."""
        # (every key starting with "k/" is in ["k/", "k0"): "0" follows "/"). Two queries: SQLite
        # scans the whole bucket for their OR.
        up = parents(key)
        with self._lock:
            row = None
            if up:
                row = self._db.execute(
                    f"SELECT key FROM objects WHERE bucket=? AND key IN ({','.join('?' * len(up))}) "
                    "AND data IS NOT NULL LIMIT 1",
                    (bucket, *up),
                ).fetchone()
            if row is None:
                row = self._db.execute(
                    "SELECT key FROM objects WHERE bucket=? AND key>? AND key<? AND data IS NOT NULL LIMIT 1",
                    (bucket, key + "/", key + "0"),
                ).fetchone()
        return str(row[0]) if row is not None else None

    def has_inline(self, bucket: str) -> bool:
        with self._lock:
            return (
                self._db.execute(
                    "SELECT 1 FROM objects WHERE bucket=? AND data IS NOT NULL LIMIT 1", (bucket,)
                ).fetchone()
                is not None
            )

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

    @contextlib.contextmanager
    def batch_now(self) -> Iterator[bool]:
        """``batch`` if it can start without waiting (yields True), else nothing (yields False):
        the lock is free and no other process is writing (no busy timeout for the BEGIN).

        Its commit never runs SQLite's automatic checkpoint (copying the WAL into the database and
        an fsync, which would stall the caller: the event loop); every NOW_CHECKPOINT_EVERY of
        them, a thread runs a passive one instead (``batch`` and single writes still run theirs)."""
        if not self._lock.acquire(blocking=False):
            yield False
            return
        try:
            self._db.execute("PRAGMA busy_timeout=0")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                began = False
            else:
                began = True
            finally:
                self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not began:
                yield False
                return
            try:
                yield True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            try:
                self._db.execute("COMMIT")
            finally:
                self._db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            self._now_commits += 1
            if self._now_commits >= NOW_CHECKPOINT_EVERY and not self._checkpointing:
                self._now_commits, self._checkpointing = 0, True
                threading.Thread(target=self._checkpoint, name="bucket-index-checkpoint", daemon=True).start()
        finally:
            self._lock.release()

    def _checkpoint(self) -> None:
        """(In its own thread) a passive checkpoint: it never waits for readers or writers of other processes."""
        try:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:  # (closed meanwhile, or busy: the next one catches up)
            pass
        finally:
            self._checkpointing = False

    def put(self, bucket: str, key: str, st: Stat, etag: str, attrs: ObjectAttrs, data: bytes | None = None) -> None:
        """A file's row (``data`` None), or an inline object's (stamped ``InlineStat``)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?)",
                (bucket, key, *stamp(st), etag, attrs.content_type, attrs.to_json(), data),
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
