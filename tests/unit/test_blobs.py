"""The BlobStore contract, for both implementations: LocalBlobStore (the embedded bucket store) and
RemoteBlobStore (a real S3 service: moto's server), plus the local-file part both share."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore, S3Uri
from modelhost.store.blobs_files import FileBlobs
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.blobs_remote import RemoteBlobStore
from modelhost.store.buckets import BucketStore
from modelhost.store.remote_s3 import RemoteS3
from tests.helpers import moto_s3


@dataclass
class Case:
    blobs: BlobStore
    bucket: str
    content_type: Any  # uri -> the stored Content-Type
    leftovers: Any  # () -> temp files left in the store's staging directory


def _local(tmp_path: Path) -> Case:
    buckets = BucketStore(tmp_path / "buckets", tmp_path)
    buckets.create_bucket("blobs")

    def content_type(uri: str) -> str:
        s3 = S3Uri.parse(uri)
        return buckets.head_object(s3.bucket, s3.key).attrs.content_type

    return Case(LocalBlobStore(buckets), "blobs", content_type, lambda: list(buckets.tmp_dir.iterdir()))


def _remote(tmp_path: Path, url: str) -> Case:
    bucket = f"blobs-{uuid.uuid4().hex[:12]}"
    client = moto_s3(url)
    client.create_bucket(Bucket=bucket)
    staging = tmp_path / "staging"
    blobs = RemoteBlobStore(RemoteS3(url, tmp_path / "mirror", "us-east-1"), staging)

    def content_type(uri: str) -> str:
        s3 = S3Uri.parse(uri)
        return str(client.head_object(Bucket=s3.bucket, Key=s3.key)["ContentType"])

    return Case(blobs, bucket, content_type, lambda: list(staging.iterdir()) if staging.exists() else [])


@pytest.fixture(params=["local", "remote"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    if request.param == "local":
        return _local(tmp_path)
    return _remote(tmp_path, request.getfixturevalue("moto_url"))


def test_put_stat_open_and_local_path(case: Case) -> None:
    blobs, uri = case.blobs, f"s3://{case.bucket}/dir/a.txt"
    blobs.put_bytes(uri, b"hello", "text/plain")
    info = blobs.stat(uri)
    assert (info.uri, info.size, info.etag) == (uri, 5, hashlib.md5(b"hello").hexdigest())
    assert case.content_type(uri) == "text/plain"
    reader = blobs.open(uri)
    try:
        assert reader.size == 5
        assert reader.read(2) + reader.read(100) == b"he" + b"llo"
        assert reader.read(100) == b""
    finally:
        reader.close()
    assert blobs.local_path(uri).read_bytes() == b"hello"
    blobs.put_bytes(uri, b"changed!")
    assert blobs.stat(uri).size == 8 and blobs.local_path(uri).read_bytes() == b"changed!"
    assert case.leftovers() == []


def test_missing_objects_are_blob_not_found(case: Case) -> None:
    blobs = case.blobs
    for uri in (f"s3://{case.bucket}/nope", "s3://no-such-bucket-here/x"):
        with pytest.raises(BlobNotFound, match="does not exist"):
            blobs.stat(uri)
        with pytest.raises(BlobNotFound, match="does not exist"):
            blobs.open(uri)
        with pytest.raises(BlobNotFound):
            blobs.local_path(uri)
    with pytest.raises(BlobNotFound, match="no objects under"):
        list(blobs.list(f"s3://{case.bucket}/empty/"))
    with pytest.raises(BlobNotFound, match="no objects under"):
        list(blobs.list("s3://no-such-bucket-here/"))


def test_list_is_sorted_with_prefix_semantics(case: Case) -> None:
    blobs, base = case.blobs, f"s3://{case.bucket}/"
    for key in ("in/b.csv", "in/a/z.csv", "in/a.csv", "in-other/x", "out/y"):
        blobs.put_bytes(base + key, key.encode())
    # S3's order is byte order: "in-" < "in/", "a.csv" < "a/z.csv"
    assert [i.uri for i in blobs.list(base + "in/")] == [base + k for k in ("in/a.csv", "in/a/z.csv", "in/b.csv")]
    assert [i.uri for i in blobs.list(base + "in")] == [
        base + k for k in ("in-other/x", "in/a.csv", "in/a/z.csv", "in/b.csv")
    ]
    assert [(i.uri, i.size) for i in blobs.list(base + "in/b.csv")] == [(base + "in/b.csv", 8)]
    assert len(list(blobs.list(base))) == 5


def test_put_file_installs_and_consumes_the_file(case: Case) -> None:
    blobs, uri = case.blobs, f"s3://{case.bucket}/out/result.out"
    blobs.put_bytes(uri, b"old")
    tmp = blobs.staging_dir() / "part"
    tmp.write_bytes(b"new contents")
    blobs.put_file(uri, tmp, "text/csv", hashlib.md5(b"new contents").hexdigest())
    assert not tmp.exists()
    assert blobs.local_path(uri).read_bytes() == b"new contents"
    assert blobs.stat(uri).etag == hashlib.md5(b"new contents").hexdigest()
    assert case.content_type(uri) == "text/csv"
    # a file from elsewhere, no md5 given
    other = Path(blobs.staging_dir().parent) / "elsewhere.bin"
    other.write_bytes(b"x" * 1000)
    blobs.put_file(uri, other)
    assert not other.exists() and blobs.stat(uri).size == 1000
    assert case.leftovers() == []


def test_failed_writes_leave_nothing(case: Case) -> None:
    blobs, uri = case.blobs, f"s3://{case.bucket}/keep"
    blobs.put_bytes(uri, b"kept")
    tmp = blobs.staging_dir() / "doomed"
    tmp.write_bytes(b"never visible")
    with pytest.raises(BlobError, match="no-such-bucket-here does not exist"):
        blobs.put_file("s3://no-such-bucket-here/k", tmp)
    assert not tmp.exists()
    with pytest.raises(BlobError, match="no-such-bucket-here does not exist"):
        blobs.put_bytes("s3://no-such-bucket-here/k", b"x")
    assert blobs.local_path(uri).read_bytes() == b"kept"
    assert case.leftovers() == []


def test_check_writable(case: Case) -> None:
    blobs = case.blobs
    blobs.check_writable(f"s3://{case.bucket}/out/x.out")
    blobs.check_writable(f"s3://{case.bucket}/out/")
    blobs.check_writable(f"s3://{case.bucket}/")
    with pytest.raises(BlobError, match="The bucket no-such-bucket-here does not exist"):
        blobs.check_writable("s3://no-such-bucket-here/out/")


def test_delete(case: Case) -> None:
    blobs, uri = case.blobs, f"s3://{case.bucket}/gone"
    blobs.put_bytes(uri, b"1")
    blobs.delete(uri)
    with pytest.raises(BlobNotFound):
        blobs.stat(uri)
    blobs.delete(uri)  # not there: no error
    blobs.delete("s3://no-such-bucket-here/x")


def test_local_files_in_both_stores(case: Case, tmp_path: Path) -> None:
    blobs = case.blobs
    path = tmp_path / "files" / "sub" / "f.txt"
    for uri in (str(path), f"file://{path}"):
        blobs.put_bytes(uri, b"local")
        assert blobs.stat(uri).size == 5 and blobs.local_path(uri) == path
        reader = blobs.open(uri)
        assert reader.read(10) == b"local"
        reader.close()
        blobs.delete(uri)
        with pytest.raises(BlobNotFound):
            blobs.stat(uri)
    assert not list((tmp_path / "files" / "sub").iterdir())  # no temp files beside the target


def test_file_blobs_listing_and_errors(tmp_path: Path) -> None:
    files = FileBlobs(tmp_path / "staging")
    for rel in ("in/b.csv", "in/a/z.csv", "in-x/c"):
        files.put_bytes(str(tmp_path / rel), b"1")
    root = str(tmp_path)
    assert [i.uri for i in files.list(root + "/in/")] == [f"{root}/in/a/z.csv", f"{root}/in/b.csv"]
    # a directory lists what is in it (its siblings are not walked); a partial name, the names it begins
    assert [i.uri for i in files.list(root + "/in")] == [f"{root}/in/a/z.csv", f"{root}/in/b.csv"]
    assert [i.uri for i in files.list(root + "/in-")] == [f"{root}/in-x/c"]
    assert [i.uri for i in files.list(f"file://{root}/in/b.csv")] == [f"file://{root}/in/b.csv"]
    with pytest.raises(BlobNotFound):
        list(files.list(root + "/nothing/"))
    with pytest.raises(BlobNotFound):
        files.stat(root + "/in")  # a directory is not an object
    with pytest.raises(BlobError, match="unsupported URI scheme"):
        files.stat("gs://bucket/key")
    with pytest.raises(BlobError):
        files.stat("s3://bucket/key")
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(BlobError, match="is not a directory"):
        files.check_writable(root + "/plain/under")
    files.check_writable(root + "/new/dir/x")


def test_local_store_keys_cannot_escape_their_bucket(tmp_path: Path) -> None:
    blobs = _local(tmp_path).blobs
    with pytest.raises(BlobError, match="escapes its bucket"):
        blobs.local_path("s3://blobs/../../etc/passwd")
    with pytest.raises(BlobError, match="cannot be written"):
        blobs.put_bytes("s3://blobs/a//b", b"x")  # a key the file-backed store cannot hold


def test_local_store_readers_see_whole_objects(tmp_path: Path) -> None:
    blobs = _local(tmp_path).blobs
    blobs.put_bytes("s3://blobs/k", b"first version")
    reader = blobs.open("s3://blobs/k")
    blobs.put_bytes("s3://blobs/k", b"second")
    try:
        assert reader.read(100) == b"first version"  # the open handle keeps the bytes it opened
    finally:
        reader.close()
    assert blobs.local_path("s3://blobs/k").read_bytes() == b"second"
