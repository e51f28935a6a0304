"""BucketStore.write_object (small objects from memory, e.g. async outputs) and S3Uri.parse's plain-URI path."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from modelhost.store.blobs import S3Uri
from modelhost.store.buckets import BucketStore, ObjectAttrs, S3StoreError


@pytest.fixture
def store(tmp_path: Path) -> BucketStore:
    s = BucketStore(tmp_path / "buckets", tmp_path)
    s.create_bucket("bkt")
    return s


def test_write_object_installs_bytes_and_records_them(store: BucketStore) -> None:
    data = b"hello"
    etag = hashlib.md5(data).hexdigest()
    meta = store.write_object("bkt", "deep/er/key.out", data, etag, ObjectAttrs("text/x-upper"))
    path = store.buckets_dir / "bkt" / "deep" / "er" / "key.out"
    assert path.read_bytes() == data and meta.size == 5
    assert os.listdir(store.tmp_dir) == []  # the temp file was renamed onto the key
    # The index row's stamp (taken before the rename) matches the file: served without re-hashing.
    head = store.head_object("bkt", "deep/er/key.out")
    assert (head.etag, head.attrs.content_type, head.mtime) == (etag, "text/x-upper", path.stat().st_mtime)
    # Replacing it: readers see one whole object or the other.
    store.write_object("bkt", "deep/er/key.out", b"second", hashlib.md5(b"second").hexdigest(), ObjectAttrs())
    assert path.read_bytes() == b"second"
    assert store.head_object("bkt", "deep/er/key.out").etag == hashlib.md5(b"second").hexdigest()


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
    assert (store.buckets_dir / "bkt" / "a" / "b").read_bytes() == b"1"


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
