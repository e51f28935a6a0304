"""Small objects kept inline in the bucket index (what async outputs, failure objects and capture
files become) behave like any other object through real boto3 calls; an index from before inline
objects keeps its file-backed objects readable."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from modelhost.store.buckets import BucketStore, ObjectAttrs
from modelhost.store.buckets.store import INLINE_LIMIT
from tests.helpers import Server

BUCKET = "inline"
BIG = b"L" * (INLINE_LIMIT + 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("mh-inline") / "data"
    store = BucketStore(data / "buckets", data)  # written as the async queue writes them
    store.create_bucket(BUCKET)
    for key, body, ctype in (
        ("out/a.out", b"hello inline", "text/x-upper"),
        ("out/b.out", b"0123456789", "application/octet-stream"),
        ("out/sub/c.out", b"deeper", "text/plain"),
        ("swap/small-then-large", b"small", "text/plain"),
        ("swap/large-then-small", BIG, "text/plain"),
        ("del/me", b"bye", "text/plain"),
    ):
        store.write_object(BUCKET, key, body, hashlib.md5(body).hexdigest(), ObjectAttrs(ctype, {"k": "v"}))
    (data / "buckets" / BUCKET / "file-backed").write_bytes(b"a plain file")  # put there by hand
    store.index.close()
    srv = Server(data).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    return boto3.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1").client(
        "s3", endpoint_url=server.url
    )


def test_inline_objects_are_not_files(server: Server) -> None:
    assert not (server.data_dir / "buckets" / BUCKET / "out").exists()


def test_get_range_head(s3: Any) -> None:
    got = s3.get_object(Bucket=BUCKET, Key="out/a.out")
    assert got["Body"].read() == b"hello inline"
    assert got["ETag"] == f'"{hashlib.md5(b"hello inline").hexdigest()}"'
    assert (got["ContentType"], got["Metadata"], got["ContentLength"]) == ("text/x-upper", {"k": "v"}, 12)
    part = s3.get_object(Bucket=BUCKET, Key="out/b.out", Range="bytes=2-5")
    assert (part["Body"].read(), part["ContentRange"]) == (b"2345", "bytes 2-5/10")
    assert s3.get_object(Bucket=BUCKET, Key="out/b.out", Range="bytes=-3")["Body"].read() == b"789"
    head = s3.head_object(Bucket=BUCKET, Key="out/sub/c.out")
    assert (head["ContentLength"], head["ContentType"]) == (6, "text/plain")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key="out/sub/c.out", IfNoneMatch=head["ETag"])
    assert info.value.response["Error"]["Code"] == "304"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key="out/b.out", Range="bytes=20-30")
    assert info.value.response["Error"]["Code"] == "InvalidRange"


def test_list_merges_inline_and_file_objects_in_order(s3: Any) -> None:
    listed = s3.list_objects_v2(Bucket=BUCKET)
    assert [o["Key"] for o in listed["Contents"]] == [
        "del/me",
        "file-backed",
        "out/a.out",
        "out/b.out",
        "out/sub/c.out",
        "swap/large-then-small",
        "swap/small-then-large",
    ]
    sizes = {o["Key"]: (o["Size"], o["ETag"]) for o in listed["Contents"]}
    assert sizes["out/b.out"] == (10, f'"{hashlib.md5(b"0123456789").hexdigest()}"')
    assert sizes["file-backed"] == (12, f'"{hashlib.md5(b"a plain file").hexdigest()}"')
    by_delim = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/", Delimiter="/")
    assert [o["Key"] for o in by_delim["Contents"]] == ["out/a.out", "out/b.out"]
    assert [p["Prefix"] for p in by_delim["CommonPrefixes"]] == ["out/sub/"]
    page = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=2, StartAfter="file-backed")
    assert [o["Key"] for o in page["Contents"]] == ["out/a.out", "out/b.out"] and page["IsTruncated"]
    rest = s3.list_objects_v2(Bucket=BUCKET, ContinuationToken=page["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]][0] == "out/sub/c.out"


def test_copy_from_and_onto_inline_objects(s3: Any) -> None:
    s3.copy_object(Bucket=BUCKET, Key="copies/a", CopySource={"Bucket": BUCKET, "Key": "out/a.out"})
    got = s3.get_object(Bucket=BUCKET, Key="copies/a")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"hello inline", "text/x-upper", {"k": "v"})
    s3.copy_object(
        Bucket=BUCKET,
        Key="copies/a",
        CopySource={"Bucket": BUCKET, "Key": "file-backed"},
        MetadataDirective="REPLACE",
        ContentType="text/new",
    )
    got = s3.get_object(Bucket=BUCKET, Key="copies/a")
    assert (got["Body"].read(), got["ContentType"]) == (b"a plain file", "text/new")


def test_overwrite_small_to_large_and_large_to_small(s3: Any, server: Server) -> None:
    s3.put_object(Bucket=BUCKET, Key="swap/small-then-large", Body=BIG)
    assert s3.get_object(Bucket=BUCKET, Key="swap/small-then-large")["Body"].read() == BIG
    s3.put_object(Bucket=BUCKET, Key="swap/large-then-small", Body=b"tiny")
    got = s3.get_object(Bucket=BUCKET, Key="swap/large-then-small")
    assert (got["Body"].read(), got["ContentLength"]) == (b"tiny", 4)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="swap/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [
        ("swap/large-then-small", 4),
        ("swap/small-then-large", len(BIG)),
    ]


def test_a_key_cannot_be_an_inline_object_and_a_prefix(s3: Any) -> None:
    for key in ("out/a.out/x", "out/sub"):
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert info.value.response["Error"]["Code"] == "InvalidArgument"


def test_delete_and_bucket_not_empty(s3: Any) -> None:
    s3.delete_object(Bucket=BUCKET, Key="del/me")
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=BUCKET, Key="del/me")
    assert info.value.response["Error"]["Code"] == "404"
    s3.create_bucket(Bucket="inline-only")
    s3.copy_object(Bucket="inline-only", Key="k", CopySource={"Bucket": BUCKET, "Key": "out/b.out"})
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="inline-only")
    assert info.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_objects(Bucket="inline-only", Delete={"Objects": [{"Key": "k"}]})
    s3.delete_bucket(Bucket="inline-only")


def test_an_index_from_before_inline_objects_still_serves_its_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "buckets" / "old").mkdir(parents=True)
    path = data / "buckets" / "old" / "k"
    path.write_bytes(b"old object")
    st = path.stat()
    (data / "buckets-meta").mkdir()
    db = sqlite3.connect(data / "buckets-meta" / "objects.db")
    db.execute(
        "CREATE TABLE objects (bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER, mtime_ns INTEGER, "
        "ino INTEGER, etag TEXT, content_type TEXT, attrs TEXT, PRIMARY KEY (bucket, key)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO objects VALUES ('old','k',?,?,?,'feedbeef','text/kept','{}')",
        (st.st_size, st.st_mtime_ns, st.st_ino),
    )
    db.commit()
    db.close()
    srv = Server(data).start()
    try:
        s3 = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1").client(
            "s3", endpoint_url=srv.url
        )
        got = s3.get_object(Bucket="old", Key="k")
        assert (got["Body"].read(), got["ETag"], got["ContentType"]) == (b"old object", '"feedbeef"', "text/kept")
    finally:
        srv.stop()
