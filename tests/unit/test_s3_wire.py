"""S3 wire-layer logic: aws-chunked decoding, request classification, ranges, tokens, XML errors."""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum

from modelhost.server import s3
from modelhost.store.buckets import NoSuchKey, S3StoreError


def _decode(body: bytes, split: int) -> tuple[bytes, dict[str, str]]:
    decoder = s3.AwsChunkedDecoder()
    out = b"".join(b"".join(decoder.feed(body[i : i + split])) for i in range(0, len(body), split))
    decoder.finish()
    assert decoder.decoded == len(out)
    return out, decoder.trailers


@pytest.mark.parametrize("split", [1, 2, 3, 7, 100, 4096, 10**9])
@pytest.mark.parametrize("size", [0, 1, 1000, 70_000])
def test_decodes_botocore_unsigned_trailer_bodies(split: int, size: int) -> None:
    data = os.urandom(size)
    body = AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32", chunk_size=16 * 1024
    ).read()
    out, trailers = _decode(body, split)
    checksum = Crc32Checksum()
    checksum.update(data)
    assert out == data
    assert trailers == {"x-amz-checksum-crc32": checksum.b64digest()}


def test_decodes_signed_chunks_without_trailer() -> None:
    data = os.urandom(5000)
    body = b""
    for i in range(0, len(data), 1024):
        piece = data[i : i + 1024]
        body += f"{len(piece):x};chunk-signature={'f' * 64}\r\n".encode() + piece + b"\r\n"
    body += f"0;chunk-signature={'e' * 64}\r\n\r\n".encode()
    for split in (1, 5, 1024, len(body)):
        out, trailers = _decode(body, split)
        assert out == data and trailers == {}


def test_decodes_signed_trailer() -> None:
    body = b"5\r\nhello\r\n0\r\nx-amz-checksum-sha256:abc=\r\nx-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    out, trailers = _decode(body, 3)
    assert out == b"hello"
    # the trailer's signature is verification data (checked when a signer is set), not a trailer of the object
    assert trailers == {"x-amz-checksum-sha256": "abc="}


def test_botocore_sha256_trailer_name() -> None:
    body = AwsChunkedWrapper(
        io.BytesIO(b"abc"), checksum_cls=Sha256Checksum, checksum_name="x-amz-checksum-sha256"
    ).read()
    assert set(_decode(body, 2)[1]) == {"x-amz-checksum-sha256"}


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhello\r\n",  # no final chunk
        b"5\r\nhel",  # cut inside a chunk
        b"",
    ],
)
def test_truncated_bodies_are_incomplete(body: bytes) -> None:
    decoder = s3.AwsChunkedDecoder()
    decoder.feed(body)
    with pytest.raises(S3StoreError) as info:
        decoder.finish()
    assert info.value.code == "IncompleteBody"


@pytest.mark.parametrize(
    "body", [b"zz\r\nhello\r\n0\r\n\r\n", b"3\r\nhello\r\n0\r\n\r\n", b"0\r\nno-colon\r\n\r\n", b"1" * 10_000]
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(S3StoreError):
        s3.AwsChunkedDecoder().feed(body)


def _scope(method: str, path: str, headers: dict[str, str] | None = None, query: bytes = b"") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }


def _auth(service: str) -> dict[str, str]:
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AK/20250101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host, Signature=00"
    }


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (_scope("PUT", "/bucket/key", _auth("s3")), True),
        (_scope("POST", "/endpoints/x/invocations", _auth("s3")), True),  # a bucket named "endpoints"
        (_scope("POST", "/", {**_auth("sagemaker"), "X-Amz-Target": "SageMaker.ListModels"}), False),
        (_scope("POST", "/endpoints/x/invocations", _auth("sagemaker")), False),
        (_scope("GET", "/bucket/key", _auth("sagemaker")), False),
        (_scope("GET", "/bucket/key", {"Authorization": "AWS AKID:c2ln"}), True),  # SigV2
        (
            _scope(
                "GET",
                "/b/k",
                query=b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20250101%2Fus-east-1%2Fs3"
                b"%2Faws4_request&X-Amz-Signature=00",
            ),
            True,
        ),
        (_scope("GET", "/b/k", query=b"X-Amz-Credential=AK%2F20250101%2Fus-east-1%2Fsagemaker%2Faws4_request"), False),
        (_scope("GET", "/b/k", query=b"AWSAccessKeyId=AK&Signature=x&Expires=1"), True),
        (_scope("GET", "/bucket/key"), True),  # unsigned, not ours
        (_scope("GET", "/"), True),
        (_scope("GET", "/ping"), False),
        (_scope("GET", "/metrics"), False),
        (_scope("GET", "/modelhost/endpoints/x/logs"), False),
        (_scope("POST", "/endpoints/x/invocations"), False),
        (_scope("POST", "/", {"X-Amz-Target": "SageMaker.ListModels"}), False),
        ({"type": "lifespan"}, False),
    ],
)
def test_is_s3_request(scope: dict, expected: bool) -> None:
    assert s3.is_s3_request(scope) is expected


def test_locate_path_and_virtual_host_style() -> None:
    app = s3.S3App(None, None, virtual_host_bases=("localhost", "s3.example.test"))  # type: ignore[arg-type]

    def locate(raw: bytes, host: str) -> tuple[str | None, str | None]:
        return app.locate({"raw_path": raw, "path": ""}, {"host": host})

    assert locate(b"/", "127.0.0.1:9000") == (None, None)
    assert locate(b"/b", "127.0.0.1:9000") == ("b", None)
    assert locate(b"/b/", "127.0.0.1:9000") == ("b", None)
    assert locate(b"/b/a%20b/%E9%8D%B5%2Bx", "127.0.0.1") == ("b", "a b/鍵+x")
    assert locate(b"/a+b", "b.localhost:9000") == ("b", "a+b")
    assert locate(b"/", "my.dotted.bucket.localhost:1") == ("my.dotted.bucket", None)
    assert locate(b"/k", "bkt.s3.example.test") == ("bkt", "k")
    assert locate(b"/b/k", "localhost:9000") == ("b", "k")
    with pytest.raises(S3StoreError) as info:
        locate(b"/b/%FF", "localhost")
    assert info.value.code == "InvalidURI"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-4", 10, (0, 4)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=3-100", 10, (3, 9)),
        ("bytes=4-2", 10, None),  # invalid: ignored, whole object
        ("items=0-1", 10, None),
        ("bytes=0-1,3-4", 10, None),  # multiple ranges: S3 sends the whole object
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert s3.parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=0-0", 0), ("bytes=-0", 10), ("bytes=-5", 0)])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(S3StoreError) as info:
        s3.parse_range(header, size)
    assert info.value.code == "InvalidRange" and s3.STATUS["InvalidRange"] == 416


def test_continuation_tokens_round_trip() -> None:
    assert s3.decode_token(s3.encode_token("a/ü b", False)) == ("a/ü b", "")
    assert s3.decode_token(s3.encode_token("dir/", True)) == ("dir/", "dir/")
    for bad in ("", "!!!", "bm90IGpzb24=", "e30="):
        with pytest.raises(S3StoreError):
            s3.decode_token(bad)


def test_error_xml_shape() -> None:
    reply = s3.error_reply(NoSuchKey("The specified key does not exist.", Key="a/b"), "REQ1", "/bkt/a/b")
    assert reply.status == 404
    root = ET.fromstring(reply.body)
    assert root.tag == "Error"
    assert {c.tag: c.text for c in root} == {
        "Code": "NoSuchKey",
        "Message": "The specified key does not exist.",
        "Key": "a/b",
        "RequestId": "REQ1",
        "HostId": "REQ1",
    }


def test_copy_source_parsing() -> None:
    assert s3.copy_source("bkt/a%20b/c%2Bd") == ("bkt", "a b/c+d")
    assert s3.copy_source("/bkt/k?versionId=null") == ("bkt", "k")
    with pytest.raises(S3StoreError):
        s3.copy_source("just-a-bucket")
