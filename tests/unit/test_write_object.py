"""BucketStore.write_object (small objects from memory, e.g. async outputs) and S3Uri.parse's plain-URI path."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from modelhost.store.blobs import S3Uri
from modelhost.store.buckets import BucketStore, ObjectAttrs, S3StoreError
from modelhost.store.buckets.index import AUTOCHECKPOINT_PAGES, NOW_CHECKPOINT_EVERY
from modelhost.store.buckets.store import INLINE_LIMIT


@pytest.fixture
def store(tmp_path: Path) -> BucketStore:
    s = BucketStore(tmp_path / "buckets", tmp_path)
    s.create_bucket("bkt")
    return s


def test_a_small_object_is_one_index_row(store: BucketStore) -> None:
    """Up to INLINE_LIMIT bytes and no file at the key: no file (creating one costs more than the row)."""
    data = b"hello"
    etag = hashlib.md5(data).hexdigest()
    meta = store.write_object("bkt", "deep/er/key.out", data, etag, ObjectAttrs("text/x-upper"))
    assert not (store.buckets_dir / "bkt" / "deep").exists() and os.listdir(store.tmp_dir) == []
    head = store.head_object("bkt", "deep/er/key.out")
    assert (head.etag, head.attrs.content_type, head.size, head.mtime) == (etag, "text/x-upper", 5, meta.mtime)
    got, f = store.open_object("bkt", "deep/er/key.out")
    with f:
        assert f.read() == data and got.etag == etag
    assert [k for k, _ in store.iter_keys("bkt")] == ["deep/er/key.out"]
    # Replacing it: readers see one whole object or the other.
    store.write_object("bkt", "deep/er/key.out", b"second", hashlib.md5(b"second").hexdigest(), ObjectAttrs())
    assert store.open_object("bkt", "deep/er/key.out")[1].read() == b"second"
    assert store.head_object("bkt", "deep/er/key.out").etag == hashlib.md5(b"second").hexdigest()


def test_write_object_installs_a_file_over_the_limit_or_over_a_file(store: BucketStore) -> None:
    data = b"h" * (INLINE_LIMIT + 1)
    etag = hashlib.md5(data).hexdigest()
    meta = store.write_object("bkt", "deep/er/key.out", data, etag, ObjectAttrs("text/x-upper"))
    path = store.buckets_dir / "bkt" / "deep" / "er" / "key.out"
    assert path.read_bytes() == data and meta.size == len(data)
    assert os.listdir(store.tmp_dir) == []  # the temp file was renamed onto the key
    # The index row's stamp (taken before the rename) matches the file: served without re-hashing.
    head = store.head_object("bkt", "deep/er/key.out")
    assert (head.etag, head.attrs.content_type, head.mtime) == (etag, "text/x-upper", path.stat().st_mtime)
    # A small object over a file stays a file (atomic replace), then a large one over an inline one.
    store.write_object("bkt", "deep/er/key.out", b"second", hashlib.md5(b"second").hexdigest(), ObjectAttrs())
    assert path.read_bytes() == b"second"
    assert store.head_object("bkt", "deep/er/key.out").etag == hashlib.md5(b"second").hexdigest()
    store.write_object("bkt", "small", b"s", "e1", ObjectAttrs())
    store.write_object("bkt", "small", data, etag, ObjectAttrs())
    assert (store.buckets_dir / "bkt" / "small").read_bytes() == data
    assert store.head_object("bkt", "small").etag == etag
    assert [k for k, _ in store.iter_keys("bkt")] == ["deep/er/key.out", "small"]


def test_an_inline_object_becomes_a_file_for_readers_that_need_one(store: BucketStore) -> None:
    meta = store.write_object("bkt", "m/model.tar.gz", b"tarball", "e", ObjectAttrs("application/x-tar"))
    path = store.materialize("bkt", "m/model.tar.gz")
    assert path.read_bytes() == b"tarball"
    head = store.head_object("bkt", "m/model.tar.gz")
    assert (head.etag, head.attrs.content_type) == ("e", "application/x-tar")
    # the same nanoseconds on the file; as a float (st_mtime vs ns / 1e9) the last digit may round apart
    assert head.mtime == pytest.approx(meta.mtime, abs=1e-6)
    store.write_object("bkt", "d/a", b"1", "a", ObjectAttrs())
    store.write_object("bkt", "d/b/c", b"2", "c", ObjectAttrs())
    store.materialize_under("bkt", "d/")
    assert (store.buckets_dir / "bkt" / "d" / "b" / "c").read_bytes() == b"2"


def test_an_old_index_gains_the_inline_column_and_keeps_its_rows(tmp_path: Path) -> None:
    """An index from before inline objects (schema version 0): its rows (files) still read."""
    import sqlite3

    (tmp_path / "buckets" / "bkt").mkdir(parents=True)
    (tmp_path / "buckets" / "bkt" / "old").write_bytes(b"old bytes")
    st = (tmp_path / "buckets" / "bkt" / "old").stat()
    (tmp_path / "buckets-meta").mkdir()
    db = sqlite3.connect(tmp_path / "buckets-meta" / "objects.db")
    db.execute(
        "CREATE TABLE objects (bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER, "
        "mtime_ns INTEGER, ino INTEGER, etag TEXT, content_type TEXT, attrs TEXT, "
        "PRIMARY KEY (bucket, key)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO objects VALUES ('bkt','old',?,?,?,'kept-etag','text/old','{}')",
        (st.st_size, st.st_mtime_ns, st.st_ino),
    )
    db.commit()
    db.close()
    store = BucketStore(tmp_path / "buckets", tmp_path)
    head = store.head_object("bkt", "old")
    assert (head.etag, head.attrs.content_type) == ("kept-etag", "text/old")
    store.write_object("bkt", "new", b"n", "ne", ObjectAttrs())
    assert [k for k, _ in store.iter_keys("bkt")] == ["new", "old"]


def test_a_batch_and_a_write_from_another_thread_do_not_deadlock(store: BucketStore) -> None:
    """The async writer commits outputs in a batch while another thread writes an object: both finish
    (the batch holding the index while the other write held the commit lock and waited for the index
    stalled an async endpoint in CI)."""
    in_batch, other_started = threading.Event(), threading.Event()

    def batched() -> None:
        with store.batch():
            in_batch.set()
            other_started.wait(5)
            time.sleep(0.2)  # the other write is under way
            store.write_object("bkt", "in-batch", b"a", "x", ObjectAttrs())

    def other() -> None:
        in_batch.wait(5)
        other_started.set()
        store.write_object("bkt", "outside", b"b", "y", ObjectAttrs())

    threads = [threading.Thread(target=f, daemon=True) for f in (batched, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert store.head_object("bkt", "in-batch").etag == "x" and store.head_object("bkt", "outside").etag == "y"


def test_write_object_refusals_leave_nothing(store: BucketStore) -> None:
    store.write_object("bkt", "a/b", b"1", "x", ObjectAttrs())
    for bucket, key, code in (
        ("bkt", "a", "InvalidArgument"),
        ("bkt", "a/b/c", "InvalidArgument"),
        ("nope", "k", "NoSuchBucket"),
    ):
        with pytest.raises(S3StoreError) as info:
            store.write_object(bucket, key, b"2", "y", ObjectAttrs())
        assert info.value.code == code
    assert os.listdir(store.tmp_dir) == []
    assert store.open_object("bkt", "a/b")[1].read() == b"1"
    # The same rule between inline objects and files, both ways.
    big = b"x" * (INLINE_LIMIT + 1)
    for key, data in (("a", big), ("a/b/c", big)):
        with pytest.raises(S3StoreError) as info:
            store.write_object("bkt", key, data, "y", ObjectAttrs())
        assert info.value.code == "InvalidArgument"
    store.write_object("bkt", "f/g", big, "z", ObjectAttrs())
    for key in ("f", "f/g/h"):
        with pytest.raises(S3StoreError) as info:
            store.write_object("bkt", key, b"small", "y", ObjectAttrs())
        assert info.value.code == "InvalidArgument"
    with pytest.raises(S3StoreError) as info:
        store.delete_bucket("bkt")
    assert info.value.code == "BucketNotEmpty"
    store.delete_object("bkt", "f/g")
    store.delete_object("bkt", "a/b")
    assert list(store.iter_keys("bkt")) == []
    store.delete_bucket("bkt")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://b/k",
        "s3://b//k/x.out",
        "s3://b/",
        "s3://b/é/ü",
        "s3://b:1/x",
        "s3://b/a;p",
        "s3://b/(x)!*'",
        "s3://b/a b",
        "s3://b/a?x",
        "s3://b/a%20b",
        "s3://b/a#f",
        "s3://b/a\tb",
        "s3://b",
    ],
)
def test_s3_uri_parse_matches_urlparse(uri: str) -> None:
    parsed = urlparse(uri)
    got = S3Uri.parse(uri)
    assert (got.bucket, got.key) == (parsed.netloc, unquote(parsed.path.lstrip("/")))


class _Recorded:
    """The index's connection, recording (thread, statement) of every execute (a spy: the calls go through)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.calls: list[tuple[int, str]] = []

    def execute(self, sql: str, *args: Any) -> Any:
        self.calls.append((threading.get_ident(), sql))
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


def test_batch_now_commits_leave_the_checkpoint_to_a_thread(store: BucketStore) -> None:
    """A loop's batch never runs SQLite's automatic checkpoint (a WAL copy and an fsync) inside its
    commit; a thread runs a passive one every NOW_CHECKPOINT_EVERY of them, so the WAL stays bounded."""
    index = store.index
    spy = _Recorded(index._db)
    index._db = spy  # type: ignore[assignment]
    me = threading.get_ident()
    attrs = ObjectAttrs("text/plain")
    commits = 3 * NOW_CHECKPOINT_EVERY
    i = skipped = 0
    while i < commits:
        with store.batch_now() as began:
            if not began:  # the checkpoint thread holds the index: a loop would use its thread batch
                skipped += 1
                time.sleep(0.001)
                continue
            store.write_object("bkt", f"now/{i:05d}", b"x" * 100, hashlib.md5(b"x" * 100).hexdigest(), attrs)
            i += 1
    deadline = time.monotonic() + 10
    while index._checkpointing and time.monotonic() < deadline:
        time.sleep(0.01)
    mine = [sql for thread, sql in spy.calls if thread == me]
    for i, sql in enumerate(mine):
        if sql == "COMMIT":
            assert mine[i - 1] == "PRAGMA wal_autocheckpoint=0"  # none inside this commit
            assert mine[i + 1] == f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}"
    assert mine.count("COMMIT") == commits
    theirs = [sql for thread, sql in spy.calls if thread != me]
    assert theirs and set(theirs) == {"PRAGMA wal_checkpoint(PASSIVE)"}
    # Without a checkpoint the WAL holds every commit's pages; with them, about NOW_CHECKPOINT_EVERY's.
    wal = store.meta_dir / "objects.db-wal"
    pages = wal.stat().st_size / 4096
    assert pages < 4 * NOW_CHECKPOINT_EVERY, pages
    assert store.open_object("bkt", f"now/{commits - 1:05d}")[1].read() == b"x" * 100
