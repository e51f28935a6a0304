"""The S3 API over the embedded bucket store, driven by real clients (boto3, s3transfer, the AWS CLI,
raw HTTP for what the SDK will not send over plain http: aws-chunked bodies, Host-style buckets)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, sklearn_model

MB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    return session.client("s3", endpoint_url=server.url, config=Config(retries={"mode": "standard", "max_attempts": 1}))


def _fails(call: Any, code: str, status: int, **kwargs: Any) -> dict:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == (code, status), err
    return err


def _bucket(s3: Any, name: str) -> str:
    s3.create_bucket(Bucket=name)
    return name


def _tmp_files(server: Server) -> list[Path]:
    tmp = server.data_dir / "buckets-meta" / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


# --- buckets -------------------------------------------------------------------------------------


def test_bucket_lifecycle(s3: Any, server: Server) -> None:
    s3.create_bucket(Bucket="life")
    s3.put_object(Bucket="life", Key="kept", Body=b"k")
    # us-east-1's legacy rule: re-creating a bucket you own there is 200 OK, and nothing in it is lost
    assert s3.create_bucket(Bucket="life")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket="life", Key="kept")["Body"].read() == b"k"
    s3.delete_object(Bucket="life", Key="kept")
    # another region's constraint, or a bucket located elsewhere: 409 as in every other region
    elsewhere = {"LocationConstraint": "eu-west-1"}
    _fails(s3.create_bucket, "BucketAlreadyOwnedByYou", 409, Bucket="life", CreateBucketConfiguration=elsewhere)
    s3.create_bucket(Bucket="life-eu", CreateBucketConfiguration=elsewhere)
    _fails(s3.create_bucket, "BucketAlreadyOwnedByYou", 409, Bucket="life-eu")
    s3.delete_bucket(Bucket="life-eu")
    s3.head_bucket(Bucket="life")
    assert "life" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket="life")["LocationConstraint"] is None

    s3.create_bucket(Bucket="west", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    assert s3.get_bucket_location(Bucket="west")["LocationConstraint"] == "us-west-2"

    s3.put_object(Bucket="life", Key="x/y", Body=b"1")
    _fails(s3.delete_bucket, "BucketNotEmpty", 409, Bucket="life")
    s3.delete_object(Bucket="life", Key="x/y")
    assert not (server.data_dir / "buckets" / "life" / "x").exists()  # empty "directories" are pruned
    s3.delete_bucket(Bucket="life")
    _fails(s3.head_bucket, "404", 404, Bucket="life")
    _fails(s3.delete_bucket, "NoSuchBucket", 404, Bucket="life")
    assert "life" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("name", ["ab", "Upper-case", "has_underscore", "-dash", "a..b", "192.168.5.4", "x" * 64])
def test_invalid_bucket_names(s3: Any, name: str) -> None:
    _fails(s3.create_bucket, "InvalidBucketName", 400, Bucket=name)


def test_missing_bucket_and_key(s3: Any) -> None:
    _fails(s3.get_object, "NoSuchBucket", 404, Bucket="no-such-bucket", Key="k")
    _fails(s3.put_object, "NoSuchBucket", 404, Bucket="no-such-bucket", Key="k", Body=b"x")
    _fails(s3.list_objects_v2, "NoSuchBucket", 404, Bucket="no-such-bucket")
    _bucket(s3, "missing-keys")
    err = _fails(s3.get_object, "NoSuchKey", 404, Bucket="missing-keys", Key="nope/k")
    assert err["Error"]["Key"] == "nope/k"
    _fails(s3.head_object, "404", 404, Bucket="missing-keys", Key="nope")
    s3.delete_object(Bucket="missing-keys", Key="nope")  # S3: deleting a missing key succeeds


# --- objects -------------------------------------------------------------------------------------


def test_put_get_head_metadata_range(s3: Any) -> None:
    b = _bucket(s3, "objects")
    data = bytes(range(256)) * 40
    put = s3.put_object(
        Bucket=b,
        Key="dir/obj.bin",
        Body=data,
        ContentType="application/x-test",
        Metadata={"Owner": "me", "stage": "2"},
        CacheControl="max-age=60",
    )
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ETag"] == etag

    got = s3.get_object(Bucket=b, Key="dir/obj.bin")
    assert got["Body"].read() == data
    assert (got["ETag"], got["ContentType"], got["ContentLength"]) == (etag, "application/x-test", len(data))
    assert got["Metadata"] == {"owner": "me", "stage": "2"}
    assert got["CacheControl"] == "max-age=60"

    head = s3.head_object(Bucket=b, Key="dir/obj.bin")
    assert (head["ETag"], head["ContentLength"], head["Metadata"]) == (etag, len(data), {"owner": "me", "stage": "2"})

    part = s3.get_object(Bucket=b, Key="dir/obj.bin", Range="bytes=100-199")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 100-199/{len(data)}"
    assert part["Body"].read() == data[100:200]
    assert s3.get_object(Bucket=b, Key="dir/obj.bin", Range="bytes=-10")["Body"].read() == data[-10:]
    assert s3.get_object(Bucket=b, Key="dir/obj.bin", Range="bytes=10000-")["Body"].read() == data[10000:]
    assert s3.get_object(Bucket=b, Key="dir/obj.bin", Range=f"bytes=0-{10**9}")["Body"].read() == data
    err = _fails(s3.get_object, "InvalidRange", 416, Bucket=b, Key="dir/obj.bin", Range=f"bytes={len(data)}-")
    assert err["Error"]["ActualObjectSize"] == str(len(data))

    # conditional GETs
    _fails(s3.get_object, "304", 304, Bucket=b, Key="dir/obj.bin", IfNoneMatch=etag)
    _fails(s3.get_object, "PreconditionFailed", 412, Bucket=b, Key="dir/obj.bin", IfMatch='"0000"')
    _fails(s3.get_object, "304", 304, Bucket=b, Key="dir/obj.bin", IfModifiedSince=head["LastModified"])
    assert s3.get_object(Bucket=b, Key="dir/obj.bin", IfMatch=etag)["Body"].read() == data

    # overwrite replaces bytes and metadata; an empty object works
    s3.put_object(Bucket=b, Key="dir/obj.bin", Body=b"new")
    got = s3.get_object(Bucket=b, Key="dir/obj.bin")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"new", "binary/octet-stream", {})
    s3.put_object(Bucket=b, Key="empty", Body=b"")
    assert s3.get_object(Bucket=b, Key="empty")["Body"].read() == b""
    _fails(s3.get_object, "InvalidRange", 416, Bucket=b, Key="empty", Range="bytes=0-0")


def test_conditional_put(s3: Any) -> None:
    b = _bucket(s3, "cond-put")
    s3.put_object(Bucket=b, Key="once", Body=b"1", IfNoneMatch="*")
    _fails(s3.put_object, "PreconditionFailed", 412, Bucket=b, Key="once", Body=b"2", IfNoneMatch="*")
    assert s3.get_object(Bucket=b, Key="once")["Body"].read() == b"1"


@pytest.mark.parametrize(
    "key",
    [
        "with space.txt",
        "plus+sign",
        "ünïcødé/ключ/鍵.bin",
        "a/b/c/d/e.json",
        "percent%20literal",
        "quote'\"&<>.xml",
        "?query#frag=1",
        "tilde~star*(x)",
    ],
)
def test_key_encoding(s3: Any, server: Server, key: str) -> None:
    b = "keys"
    if "keys" not in [x["Name"] for x in s3.list_buckets()["Buckets"]]:
        _bucket(s3, b)
    s3.put_object(Bucket=b, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=b, Key=key)["Body"].read() == key.encode()
    assert (server.data_dir / "buckets" / b / key).read_bytes() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=b, Prefix=key)["Contents"]]
    assert listed == [key]
    listed_v1 = [o["Key"] for o in s3.list_objects(Bucket=b, Prefix=key)["Contents"]]
    assert listed_v1 == [key]
    s3.delete_object(Bucket=b, Key=key)
    assert "Contents" not in s3.list_objects_v2(Bucket=b, Prefix=key)


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "a//b", "trailing/", "./x"])
def test_keys_may_not_escape_or_be_unstorable(s3: Any, server: Server, key: str) -> None:
    b = "unsafe-keys"
    if b not in [x["Name"] for x in s3.list_buckets()["Buckets"]]:
        _bucket(s3, b)
    _fails(s3.put_object, "InvalidArgument", 400, Bucket=b, Key=key, Body=b"x")
    assert not (server.data_dir / "buckets" / "escape").exists()
    assert not (server.data_dir / "escape").exists()


def test_content_md5(s3: Any, server: Server) -> None:
    b = _bucket(s3, "digests")
    good = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    s3.put_object(Bucket=b, Key="ok", Body=b"payload", ContentMD5=good)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    _fails(s3.put_object, "BadDigest", 400, Bucket=b, Key="bad", Body=b"payload", ContentMD5=wrong)
    _fails(s3.put_object, "InvalidDigest", 400, Bucket=b, Key="bad", Body=b"payload", ContentMD5="not-base64!")
    _fails(
        s3.put_object,
        "InvalidDigest",
        400,
        Bucket=b,
        Key="bad",
        Body=b"payload",
        ContentMD5=base64.b64encode(b"short").decode(),
    )
    _fails(s3.head_object, "404", 404, Bucket=b, Key="bad")
    assert _tmp_files(server) == []


def test_flexible_checksums(s3: Any) -> None:
    b = _bucket(s3, "checksums")
    for alg in ("CRC32", "SHA1", "SHA256"):
        put = s3.put_object(Bucket=b, Key=alg, Body=b"checked", ChecksumAlgorithm=alg)
        assert put[f"Checksum{alg}"]
        got = s3.get_object(Bucket=b, Key=alg, ChecksumMode="ENABLED")  # botocore validates it
        assert got["Body"].read() == b"checked"
    _fails(
        s3.put_object,
        "BadDigest",
        400,
        Bucket=b,
        Key="bad",
        Body=b"checked",
        ChecksumCRC32=base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode(),
    )
    _fails(s3.head_object, "404", 404, Bucket=b, Key="bad")


def test_copy_object(s3: Any) -> None:
    b = _bucket(s3, "copies")
    s3.put_object(Bucket=b, Key="src/a b+c", Body=b"copy me", ContentType="text/plain", Metadata={"k": "v"})
    out = s3.copy_object(Bucket=b, Key="dst/same-meta", CopySource={"Bucket": b, "Key": "src/a b+c"})
    assert out["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    got = s3.get_object(Bucket=b, Key="dst/same-meta")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"copy me", "text/plain", {"k": "v"})

    s3.copy_object(
        Bucket=b,
        Key="dst/new-meta",
        CopySource=f"{b}/src/a b+c",
        MetadataDirective="REPLACE",
        ContentType="application/json",
        Metadata={"n": "1"},
    )
    got = s3.get_object(Bucket=b, Key="dst/new-meta")
    assert (got["ContentType"], got["Metadata"]) == ("application/json", {"n": "1"})

    _bucket(s3, "copies-other")
    s3.copy_object(Bucket="copies-other", Key="x", CopySource={"Bucket": b, "Key": "src/a b+c"})
    assert s3.get_object(Bucket="copies-other", Key="x")["Body"].read() == b"copy me"

    _fails(s3.copy_object, "NoSuchKey", 404, Bucket=b, Key="y", CopySource={"Bucket": b, "Key": "missing"})
    _fails(
        s3.copy_object, "InvalidRequest", 400, Bucket=b, Key="src/a b+c", CopySource={"Bucket": b, "Key": "src/a b+c"}
    )


def test_delete_objects(s3: Any) -> None:
    b = _bucket(s3, "bulk-delete")
    keys = [f"d/{i}" for i in range(5)]
    for k in keys:
        s3.put_object(Bucket=b, Key=k, Body=b"x")
    out = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in [*keys[:3], "never-existed"]]})
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted([*keys[:3], "never-existed"])
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]] == keys[3:]
    quiet = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys[3:]], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert s3.list_objects_v2(Bucket=b)["KeyCount"] == 0


def test_malformed_xml(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("PUT", "/malformed-xml")  # unsigned requests are S3 too
    assert conn.getresponse().read() == b""
    conn.request("POST", "/malformed-xml?delete", body=b"<Delete><Object>", headers=_sig())
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 400 and "<Code>MalformedXML</Code>" in body and "<RequestId>" in body


# --- listing -------------------------------------------------------------------------------------

LISTING_KEYS = sorted(
    [f"data/2024/{m:02d}/part-{i}.csv" for m in (1, 2, 11) for i in range(3)]
    + [
        "data/readme.md",
        "data-old/x",
        "data/2024/summary.json",
        "models/a/model.tar.gz",
        "models/b/model.tar.gz",
        "top.txt",
        "data/2024-bak/y",
        "Zed",
        "data/ü.txt",
    ]
)


@pytest.fixture(scope="module")
def listing(s3: Any, server: Server) -> str:
    b = _bucket(s3, "listing")
    for k in LISTING_KEYS:
        s3.put_object(Bucket=b, Key=k, Body=k.encode())
    return b


def test_list_everything_in_order(s3: Any, listing: str) -> None:
    out = s3.list_objects_v2(Bucket=listing)
    keys = [o["Key"] for o in out["Contents"]]
    assert keys == sorted(LISTING_KEYS, key=lambda k: k.encode())  # UTF-8 byte order
    assert out["KeyCount"] == len(LISTING_KEYS) and not out["IsTruncated"]
    first = out["Contents"][0]
    assert first["Size"] == len(first["Key"]) and first["ETag"] == f'"{hashlib.md5(first["Key"].encode()).hexdigest()}"'


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    [
        ("", ""),
        ("data/", ""),
        ("", "/"),
        ("data/", "/"),
        ("data/2024", "/"),
        ("data", "/"),
        ("", "-"),
        ("data/2024/", "/"),
    ],
)
def test_paginators_return_every_key_once(s3: Any, listing: str, prefix: str, delimiter: str, page_size: int) -> None:
    expected_keys, expected_prefixes = [], []
    for k in sorted(LISTING_KEYS):
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix) :]
        if delimiter and delimiter in rest:
            cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if cp not in expected_prefixes:
                expected_prefixes.append(cp)
        else:
            expected_keys.append(k)
    for op in ("list_objects_v2", "list_objects"):
        keys, prefixes = [], []
        pages = s3.get_paginator(op).paginate(
            Bucket=listing, Prefix=prefix, Delimiter=delimiter, PaginationConfig={"PageSize": page_size}
        )
        for page in pages:
            keys += [o["Key"] for o in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert keys == expected_keys, op
        assert prefixes == expected_prefixes, op


def test_list_start_after_and_max_keys(s3: Any, listing: str) -> None:
    out = s3.list_objects_v2(Bucket=listing, StartAfter="data/2024/11/part-2.csv", MaxKeys=2, FetchOwner=True)
    assert [o["Key"] for o in out["Contents"]] == ["data/2024/summary.json", "data/readme.md"]
    assert out["IsTruncated"] and out["Contents"][0]["Owner"]["ID"]
    assert s3.list_objects_v2(Bucket=listing, MaxKeys=0)["KeyCount"] == 0
    _fails(s3.list_objects_v2, "InvalidArgument", 400, Bucket=listing, ContinuationToken="garbage!")


# --- multipart -----------------------------------------------------------------------------------


def test_upload_and_download_50mb(s3: Any, server: Server, tmp_path: Path) -> None:
    b = _bucket(s3, "big")
    src = tmp_path / "big.bin"
    chunk = os.urandom(MB)
    with open(src, "wb") as f:
        for i in range(50):
            f.write(bytes([i]) + chunk[1:])
    proc = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
    rss_before = proc.memory_info().rss
    config = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB)
    s3.upload_file(str(src), b, "nested/big.bin", Config=config)
    head = s3.head_object(Bucket=b, Key="nested/big.bin")
    assert head["ContentLength"] == 50 * MB
    data = src.read_bytes()
    parts = [hashlib.md5(data[i : i + 8 * MB]).digest() for i in range(0, len(data), 8 * MB)]
    assert head["ETag"] == f'"{hashlib.md5(b"".join(parts)).hexdigest()}-{len(parts)}"'
    dst = tmp_path / "back.bin"
    s3.download_file(b, "nested/big.bin", str(dst), Config=config)  # ranged GETs in parallel
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (server.data_dir / "buckets" / b / "nested" / "big.bin").stat().st_size == 50 * MB
    growth = proc.memory_info().rss - rss_before
    assert growth < 40 * MB, f"server RSS grew by {growth / MB:.1f} MiB moving a 50 MiB object"
    assert not any((server.data_dir / "uploads").iterdir())
    assert _tmp_files(server) == []


def test_multipart_api(s3: Any, server: Server) -> None:
    b = _bucket(s3, "mpu")
    part1, part2 = os.urandom(5 * MB), b"tail"
    up = s3.create_multipart_upload(Bucket=b, Key="obj", ContentType="text/x-mp", Metadata={"m": "1"})["UploadId"]
    e1 = s3.upload_part(Bucket=b, Key="obj", UploadId=up, PartNumber=1, Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=b, Key="obj", UploadId=up, PartNumber=2, Body=part2)["ETag"]
    listed = s3.list_parts(Bucket=b, Key="obj", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [(1, e1, 5 * MB), (2, e2, 4)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=b).get("Uploads", [])] == [up]
    _fails(s3.head_object, "404", 404, Bucket=b, Key="obj")  # nothing visible before Complete
    # a wrong ETag is InvalidPart, and leaves the upload open
    _fails(
        s3.complete_multipart_upload,
        "InvalidPart",
        400,
        Bucket=b,
        Key="obj",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}]},
    )
    _fails(
        s3.complete_multipart_upload,
        "InvalidPartOrder",
        400,
        Bucket=b,
        Key="obj",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]},
    )
    _fails(s3.head_object, "404", 404, Bucket=b, Key="obj")
    done = s3.complete_multipart_upload(
        Bucket=b,
        Key="obj",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    expected = hashlib.md5(bytes.fromhex(e1.strip('"')) + bytes.fromhex(e2.strip('"'))).hexdigest() + "-2"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket=b, Key="obj")
    assert got["Body"].read() == part1 + part2
    assert (got["ContentType"], got["Metadata"], got["ETag"]) == ("text/x-mp", {"m": "1"}, f'"{expected}"')
    # completed uploads are gone
    _fails(s3.upload_part, "NoSuchUpload", 404, Bucket=b, Key="obj", UploadId=up, PartNumber=3, Body=b"x")


def test_aborted_multipart_leaves_nothing(s3: Any, server: Server) -> None:
    b = _bucket(s3, "mpu-abort")
    up = s3.create_multipart_upload(Bucket=b, Key="never")["UploadId"]
    etag = s3.upload_part(Bucket=b, Key="never", UploadId=up, PartNumber=1, Body=b"partial")["ETag"]
    s3.abort_multipart_upload(Bucket=b, Key="never", UploadId=up)
    _fails(
        s3.complete_multipart_upload,
        "NoSuchUpload",
        404,
        Bucket=b,
        Key="never",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    _fails(s3.abort_multipart_upload, "NoSuchUpload", 404, Bucket=b, Key="never", UploadId=up)
    _fails(s3.list_parts, "NoSuchUpload", 404, Bucket=b, Key="never", UploadId="no-such-upload-id-at-all")
    _fails(s3.head_object, "404", 404, Bucket=b, Key="never")
    assert s3.list_objects_v2(Bucket=b)["KeyCount"] == 0
    assert not (server.data_dir / "uploads" / up).exists()


def test_multipart_small_part_and_part_numbers(s3: Any) -> None:
    b = _bucket(s3, "mpu-small")
    up = s3.create_multipart_upload(Bucket=b, Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"too small")["ETag"]
    e2 = s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=2, Body=b"last")["ETag"]
    _fails(
        s3.complete_multipart_upload,
        "EntityTooSmall",
        400,
        Bucket=b,
        Key="k",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    _fails(s3.upload_part, "InvalidArgument", 400, Bucket=b, Key="k", UploadId=up, PartNumber=10001, Body=b"x")
    # a single small part is a valid upload
    s3.complete_multipart_upload(
        Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}]}
    )
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"last"


def test_upload_part_copy(s3: Any) -> None:
    b = _bucket(s3, "mpu-copy")
    src = os.urandom(6 * MB)
    s3.put_object(Bucket=b, Key="src", Body=src)
    up = s3.create_multipart_upload(Bucket=b, Key="dst")["UploadId"]
    p1 = s3.upload_part_copy(
        Bucket=b,
        Key="dst",
        UploadId=up,
        PartNumber=1,
        CopySource={"Bucket": b, "Key": "src"},
        CopySourceRange=f"bytes=0-{5 * MB - 1}",
    )["CopyPartResult"]["ETag"]
    p2 = s3.upload_part_copy(
        Bucket=b,
        Key="dst",
        UploadId=up,
        PartNumber=2,
        CopySource={"Bucket": b, "Key": "src"},
        CopySourceRange=f"bytes={5 * MB}-{6 * MB - 1}",
    )["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(
        Bucket=b,
        Key="dst",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]},
    )
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == src


# --- raw wire: aws-chunked, virtual hosts, unsigned and presigned requests, disconnects --------------


def _sig(service: str = "s3") -> dict[str, str]:
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64
    }


def _chunked_body(data: bytes, chunk_size: int = 64 * 1024) -> bytes:
    """What botocore sends over https: aws-chunked with an unsigned CRC32 trailer (its own encoder)."""
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size
    )
    return wrapper.read()


def test_aws_chunked_unsigned_trailer(s3: Any, server: Server) -> None:
    b = _bucket(s3, "chunked")
    data = os.urandom(300 * 1024 + 7)
    body = _chunked_body(data)
    headers = {
        **_sig(),
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Type": "text/csv",
        "Content-Length": str(len(body)),
    }
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("PUT", f"/{b}/trailer.bin", body=body, headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert resp.getheader("x-amz-checksum-crc32") == crc
    got = s3.get_object(Bucket=b, Key="trailer.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"' and got["ContentType"] == "text/csv"
    assert "ContentEncoding" not in got  # aws-chunked is a transfer detail, not stored

    # a wrong trailer checksum is BadDigest and stores nothing
    bad = body.replace(f"x-amz-checksum-crc32:{crc}".encode(), b"x-amz-checksum-crc32:AAAAAA==")
    conn.request("PUT", f"/{b}/bad-trailer.bin", body=bad, headers={**headers, "Content-Length": str(len(bad))})
    resp = conn.getresponse()
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in resp.read()
    _fails(s3.head_object, "404", 404, Bucket=b, Key="bad-trailer.bin")

    # a truncated chunked body is IncompleteBody
    cut = body[: len(body) // 2]
    conn.request("PUT", f"/{b}/cut.bin", body=cut, headers={**headers, "Content-Length": str(len(cut))})
    resp = conn.getresponse()
    assert resp.status == 400 and b"<Code>IncompleteBody</Code>" in resp.read()
    _fails(s3.head_object, "404", 404, Bucket=b, Key="cut.bin")
    assert _tmp_files(server) == []


def test_aws_chunked_signed_chunks_and_upload_part(s3: Any, server: Server) -> None:
    b = _bucket(s3, "chunked-signed")
    data = os.urandom(100_000)
    body = b""
    for i in range(0, len(data), 30_000):
        piece = data[i : i + 30_000]
        body += f"{len(piece):x};chunk-signature={'a' * 64}\r\n".encode() + piece + b"\r\n"
    body += f"0;chunk-signature={'b' * 64}\r\n\r\n".encode()
    headers = {
        **_sig(),
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(len(body)),
    }
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("PUT", f"/{b}/signed.bin", body=body, headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    assert s3.get_object(Bucket=b, Key="signed.bin")["Body"].read() == data

    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    conn.request("PUT", f"/{b}/mp?partNumber=1&uploadId={up}", body=body, headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    assert resp.getheader("ETag") == f'"{hashlib.md5(data).hexdigest()}"'
    s3.complete_multipart_upload(
        Bucket=b, Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": resp.getheader("ETag")}]}
    )
    assert s3.get_object(Bucket=b, Key="mp")["Body"].read() == data


def test_payload_sha256_is_checked(s3: Any, server: Server) -> None:
    b = _bucket(s3, "sha-check")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("PUT", f"/{b}/k", body=b"abc", headers={**_sig(), "x-amz-content-sha256": "0" * 64})
    resp = conn.getresponse()
    assert resp.status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in resp.read()
    _fails(s3.head_object, "404", 404, Bucket=b, Key="k")


def test_virtual_host_style(s3: Any, server: Server) -> None:
    b = _bucket(s3, "vhost.bucket")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    host = {"Host": f"{b}.localhost:{server.port}", **_sig()}
    conn.request("PUT", "/dir/v%20key.txt", body=b"virtual", headers=host)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    assert s3.get_object(Bucket=b, Key="dir/v key.txt")["Body"].read() == b"virtual"
    conn.request("GET", "/?list-type=2&prefix=dir/", headers=host)
    resp = conn.getresponse()
    assert b"<Key>dir/v key.txt</Key>" in resp.read()
    # botocore's own virtual addressing, with the bucket host pinned to the loopback address
    vclient = boto3.client(
        "s3",
        endpoint_url=f"http://localhost:{server.port}",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "virtual"}),
    )
    seen: list[str] = []
    vclient.meta.events.register("before-send.s3", lambda request, **_: seen.append(request.url))
    original = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return original("127.0.0.1" if str(host).endswith(".localhost") else host, *args, **kwargs)

    socket.getaddrinfo = resolve  # type: ignore[assignment]
    try:
        vclient.create_bucket(Bucket="vhost-two")
        vclient.put_object(Bucket="vhost-two", Key="via/boto", Body=b"vb")
        assert vclient.get_object(Bucket="vhost-two", Key="via/boto")["Body"].read() == b"vb"
        assert [o["Key"] for o in vclient.list_objects_v2(Bucket="vhost-two")["Contents"]] == ["via/boto"]
    finally:
        socket.getaddrinfo = original  # type: ignore[assignment]
    assert seen[0].startswith(f"http://vhost-two.localhost:{server.port}")
    assert s3.get_object(Bucket="vhost-two", Key="via/boto")["Body"].read() == b"vb"


def test_unsigned_and_presigned_requests(s3: Any, server: Server) -> None:
    b = _bucket(s3, "unsigned")
    s3.put_object(Bucket=b, Key="pub/file.txt", Body=b"open")
    with urllib.request.urlopen(f"{server.url}/{b}/pub/file.txt", timeout=10) as r:
        assert r.read() == b"open"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "pub/file.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"open"
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "pub/up.txt"}, ExpiresIn=60)
    req = urllib.request.Request(put_url, data=b"presigned put", method="PUT")
    urllib.request.urlopen(req, timeout=10).close()
    assert s3.get_object(Bucket=b, Key="pub/up.txt")["Body"].read() == b"presigned put"
    # the server's own routes still answer
    with urllib.request.urlopen(f"{server.url}/ping", timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:
        assert r.status == 200


def test_bucket_named_like_a_server_route(s3: Any) -> None:
    _bucket(s3, "endpoints")
    s3.put_object(Bucket="endpoints", Key="x/invocations", Body=b"not an endpoint")
    assert s3.get_object(Bucket="endpoints", Key="x/invocations")["Body"].read() == b"not an endpoint"


def test_interrupted_put_leaves_nothing(s3: Any, server: Server) -> None:
    b = _bucket(s3, "interrupted")
    s3.put_object(Bucket=b, Key="k", Body=b"previous")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            f"PUT /{b}/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {4 * MB}\r\n"
            f"Authorization: {_sig()['Authorization']}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * (3 * MB))
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while _tmp_files(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tmp_files(server) == []
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"previous"


def test_objects_written_outside_s3_are_listed(s3: Any, server: Server) -> None:
    b = _bucket(s3, "outside")
    server.put_object(f"s3://{b}/by/hand.bin", b"made on disk")
    out = s3.list_objects_v2(Bucket=b)["Contents"]
    assert [(o["Key"], o["ETag"]) for o in out] == [("by/hand.bin", f'"{hashlib.md5(b"made on disk").hexdigest()}"')]
    got = s3.get_object(Bucket=b, Key="by/hand.bin")
    assert (got["Body"].read(), got["ContentType"]) == (b"made on disk", "binary/octet-stream")
    # and a file changed behind the index's back gets a fresh ETag
    s3.put_object(Bucket=b, Key="changed", Body=b"v1", ContentType="text/plain")
    time.sleep(0.01)
    (server.data_dir / "buckets" / b / "changed").write_bytes(b"v2 on disk")
    assert s3.head_object(Bucket=b, Key="changed")["ETag"] == f'"{hashlib.md5(b"v2 on disk").hexdigest()}"'


# --- the AWS CLI ---------------------------------------------------------------------------------


def _aws(server: Server, tmp_path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-creds"),
    }
    aws = Path(sys.executable).with_name("aws")
    proc = subprocess.run(
        [str(aws), "--endpoint-url", server.url, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_aws_cli_cp_ls_sync(s3: Any, server: Server, tmp_path: Path) -> None:
    _aws(server, tmp_path, "s3", "mb", "s3://cli-bucket")
    assert "cli-bucket" in _aws(server, tmp_path, "s3", "ls")
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.txt": b"alpha",
        "sub/b.json": b'{"b": 1}',
        "sub/deeper/c d.bin": os.urandom(10_000),
        "big.bin": os.urandom(9 * MB),
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    _aws(server, tmp_path, "s3", "cp", str(src / "a.txt"), "s3://cli-bucket/single/a.txt")
    assert s3.get_object(Bucket="cli-bucket", Key="single/a.txt")["Body"].read() == b"alpha"

    _aws(server, tmp_path, "s3", "sync", str(src), "s3://cli-bucket/synced")
    listing = _aws(server, tmp_path, "s3", "ls", "--recursive", "s3://cli-bucket/synced/")
    for name in files:
        assert f"synced/{name}" in listing
    top = _aws(server, tmp_path, "s3", "ls", "s3://cli-bucket/synced/")
    assert "PRE sub/" in top and "a.txt" in top
    # a second sync has nothing to do; a changed file goes up again
    assert _aws(server, tmp_path, "s3", "sync", str(src), "s3://cli-bucket/synced").strip() == ""
    (src / "a.txt").write_bytes(b"alpha v2")
    assert "upload:" in _aws(server, tmp_path, "s3", "sync", str(src), "s3://cli-bucket/synced")

    back = tmp_path / "back"
    _aws(server, tmp_path, "s3", "sync", "s3://cli-bucket/synced", str(back))
    for name in files:
        assert (back / name).read_bytes() == (src / name).read_bytes(), name
    _aws(server, tmp_path, "s3", "cp", "s3://cli-bucket/synced/big.bin", str(tmp_path / "big-back.bin"))
    assert (tmp_path / "big-back.bin").read_bytes() == files["big.bin"]
    _aws(server, tmp_path, "s3", "rm", "--recursive", "s3://cli-bucket/")
    _aws(server, tmp_path, "s3", "rb", "s3://cli-bucket")
    assert "cli-bucket" not in _aws(server, tmp_path, "s3", "ls")


# --- an object uploaded through S3 is a model ------------------------------------------------------


def test_model_uploaded_through_s3_serves(s3: Any, sm: Any, rt: Any) -> None:
    data, model = sklearn_model()
    _bucket(s3, "model-artifacts")
    s3.upload_fileobj(io.BytesIO(data), "model-artifacts", "sklearn/v1/model.tar.gz")
    deployed = deploy(
        sm, "from-s3", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://model-artifacts/sklearn/v1/model.tar.gz"}
    )
    assert deployed["EndpointStatus"] == "InService", deployed.get("FailureReason")
    x, _ = diabetes()
    row = csv_row(x[0])
    resp = rt.invoke_endpoint(EndpointName="from-s3", ContentType="text/csv", Body=row)
    got = json.loads(resp["Body"].read())
    assert abs(got[0] - model.predict([[float(v) for v in row.split(",")]])[0]) < 1e-9
    sm.delete_endpoint(EndpointName="from-s3")
