"""Bucket store behaviour below the wire: names, keys, ordering, atomic commits, the metadata index,
multipart assembly."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from modelhost.store.blobs_files import FileBlobs
from modelhost.store.buckets import (
    BucketStore,
    ObjectAttrs,
    S3StoreError,
    check_key,
    check_new_bucket_name,
)
from modelhost.store.multipart import MIN_PART_SIZE, MultipartUploads


@pytest.fixture
def store(tmp_path: Path) -> BucketStore:
    return BucketStore(tmp_path / "buckets", tmp_path)


def _put(store: BucketStore, bucket: str, key: str, data: bytes, **attrs: object) -> None:
    writer = store.new_writer(bucket, key)
    writer.write(data)
    writer.verify()
    store.commit(bucket, key, writer.path, writer.md5.hexdigest(), ObjectAttrs(**attrs))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["abc", "my-bucket.v2", "a" * 63, "0bucket9"])
def test_valid_bucket_names(name: str) -> None:
    check_new_bucket_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Abc",
        "a_b",
        "-ab",
        "ab-",
        ".ab",
        "a..b",
        "a.-b",
        "10.0.0.1",
        "xn--abc",
        "abc-s3alias",
        "a b",
        "../x",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3StoreError) as info:
        check_new_bucket_name(name)
    assert info.value.code == "InvalidBucketName"


@pytest.mark.parametrize("key", ["", "/a", "a//b", "a/", ".", "..", "a/../b", "a/./b", "x" * 256, "a\0b"])
def test_unstorable_keys(key: str) -> None:
    with pytest.raises(S3StoreError) as info:
        check_key(key)
    assert info.value.code == "InvalidArgument"


def test_key_too_long() -> None:
    with pytest.raises(S3StoreError) as info:
        check_key("/".join(["k" * 200] * 6))
    assert info.value.code == "KeyTooLongError"


def test_listing_is_in_utf8_byte_order_and_prunes(store: BucketStore) -> None:
    store.create_bucket("bkt")
    keys = ["a/b", "a-c", "a.d", "a0", "a/bz", "ab", "é", "z", "Z", "a/a/a/a"]
    for k in keys:
        _put(store, "bkt", k, k.encode())
    listed = [k for k, _ in store.iter_keys("bkt")]
    assert listed == sorted(keys, key=lambda k: k.encode())
    assert [k for k, _ in store.iter_keys("bkt", prefix="a/")] == ["a/a/a/a", "a/b", "a/bz"]
    assert [k for k, _ in store.iter_keys("bkt", prefix="a/b")] == ["a/b", "a/bz"]
    assert [k for k, _ in store.iter_keys("bkt", start_after="a/b")] == ["a/bz", "a0", "ab", "z", "é"]
    assert [k for k, _ in store.iter_keys("bkt", start_after="a/\U0010ffff")] == ["a0", "ab", "z", "é"]


def test_object_and_directory_cannot_share_a_key(store: BucketStore) -> None:
    store.create_bucket("bkt")
    _put(store, "bkt", "a/b", b"1")
    for key in ("a", "a/b/c"):
        with pytest.raises(S3StoreError) as info:
            _put(store, "bkt", key, b"2")
        assert info.value.code == "InvalidArgument"
    assert os.listdir(store.tmp_dir) == []


def test_failed_verification_leaves_nothing(store: BucketStore) -> None:
    store.create_bucket("bkt")
    writer = store.new_writer("bkt", "k", sha256=True, checksums=("crc32",))
    writer.write(b"data")
    with pytest.raises(S3StoreError) as info:
        writer.verify(content_md5=hashlib.md5(b"other").digest())
    assert info.value.code == "BadDigest"
    writer.discard()
    with pytest.raises(S3StoreError):
        writer2 = store.new_writer("bkt", "k", sha256=True)
        writer2.write(b"data")
        try:
            writer2.verify(sha256_hex="0" * 64)
        finally:
            writer2.discard()
    assert os.listdir(store.tmp_dir) == []
    assert not (store.buckets_dir / "bkt" / "k").exists()


def test_checksums_are_verified_and_stored(store: BucketStore) -> None:
    import zlib

    store.create_bucket("bkt")
    writer = store.new_writer("bkt", "k", checksums=("crc32", "sha256", "crc32c"))
    writer.write(b"abc")
    crc = base64.b64encode(zlib.crc32(b"abc").to_bytes(4, "big")).decode()
    stored = writer.verify(checksums={"crc32": crc, "crc32c": "unverifiable=="})
    assert stored["crc32"] == crc and stored["crc32c"] == "unverifiable=="
    assert stored["sha256"] == base64.b64encode(hashlib.sha256(b"abc").digest()).decode()
    writer.discard()


def test_index_is_a_cache_of_file_facts(store: BucketStore, tmp_path: Path) -> None:
    store.create_bucket("bkt")
    _put(store, "bkt", "k", b"one", content_type="text/plain", user={"a": "1"})
    meta = store.head_object("bkt", "k")
    assert (meta.etag, meta.attrs.content_type, meta.attrs.user) == (
        hashlib.md5(b"one").hexdigest(),
        "text/plain",
        {"a": "1"},
    )
    # a file written behind the index (a user copying files in): facts are re-derived
    FileBlobs().put_bytes(str(store.buckets_dir / "bkt" / "k"), b"two!")
    meta = store.head_object("bkt", "k")
    assert (meta.etag, meta.attrs.content_type, meta.size) == (
        hashlib.md5(b"two!").hexdigest(),
        "binary/octet-stream",
        4,
    )
    # a new store over the same data dir sees the same objects and metadata
    _put(store, "bkt", "k2", b"x", content_type="a/b")
    again = BucketStore(store.buckets_dir, tmp_path)
    assert again.head_object("bkt", "k2").attrs.content_type == "a/b"


def test_delete_prunes_empty_directories(store: BucketStore) -> None:
    store.create_bucket("bkt")
    _put(store, "bkt", "a/b/c/d", b"1")
    _put(store, "bkt", "a/x", b"1")
    store.delete_object("bkt", "a/b/c/d")
    assert not (store.buckets_dir / "bkt" / "a" / "b").exists()
    assert (store.buckets_dir / "bkt" / "a" / "x").exists()
    store.delete_object("bkt", "a/x")
    assert (store.buckets_dir / "bkt").is_dir() and not (store.buckets_dir / "bkt" / "a").exists()


def test_multipart_assembly(store: BucketStore, tmp_path: Path) -> None:
    store.create_bucket("bkt")
    uploads = MultipartUploads(store, tmp_path / "uploads")
    upload = uploads.create("bkt", "big", ObjectAttrs(content_type="x/y"))
    parts = [os.urandom(MIN_PART_SIZE), b"end"]
    etags = []
    for number, data in enumerate(parts, 1):
        writer = uploads.new_part_writer(upload)
        writer.write(data)
        writer.verify()
        etags.append(uploads.commit_part(upload, number, writer, {}).etag)
    assert not (store.buckets_dir / "bkt" / "big").exists()
    meta = uploads.complete(upload, [(1, f'"{etags[0]}"', {}), (2, etags[1], {})])
    expected = hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest() + "-2"
    assert meta.etag == expected and meta.attrs.content_type == "x/y"
    assert (store.buckets_dir / "bkt" / "big").read_bytes() == b"".join(parts)
    assert list((tmp_path / "uploads").iterdir()) == []
    with pytest.raises(S3StoreError) as info:
        uploads.get("bkt", "big", upload.upload_id)
    assert info.value.code == "NoSuchUpload"


def test_upload_ids_cannot_traverse(store: BucketStore, tmp_path: Path) -> None:
    store.create_bucket("bkt")
    uploads = MultipartUploads(store, tmp_path / "uploads")
    for bad in ("../buckets-meta", "..", "x/../../y" * 4):
        with pytest.raises(S3StoreError) as info:
            uploads.get("bkt", "k", bad)
        assert info.value.code == "NoSuchUpload"
