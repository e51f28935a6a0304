"""SigV4 verification (security/sigv4.py) against requests signed by botocore's own signers."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modelhost.security import sigv4
from modelhost.security.credentials import parse_credentials
from modelhost.security.sigv4 import AuthFailure, ChunkSigner, Verifier

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
FILE = """
[admin]
aws_access_key_id = AKIDADMIN
aws_secret_access_key = admin-secret
[temp]
aws_access_key_id = AKIDTEMP
aws_secret_access_key = temp-secret
aws_session_token = the-token
"""
KEYS = parse_credentials(FILE, "123456789012")


def verifier(now: datetime.datetime = NOW) -> Verifier:
    return Verifier(KEYS, clock=lambda: now.timestamp())


def sign(
    signer_class: type = SigV4Auth,
    method: str = "POST",
    url: str = "http://127.0.0.1:8080/endpoints/my-ep/invocations",
    body: bytes = b"1,2,3",
    headers: dict[str, str] | None = None,
    service: str = "sagemaker",
    key: tuple[str, str, str | None] = ("AKIDADMIN", "admin-secret", None),
    when: datetime.datetime = NOW,
    **kwargs: Any,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {"Content-Type": "text/csv"})
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer_class(Credentials(*key), service, "us-east-1", **kwargs).add_auth(request)
    return request


def wire(request: AWSRequest) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(raw path, raw query, headers) as the server receives them (host added by the HTTP client)."""
    parts = urlsplit(request.url)
    headers = [(b"host", parts.netloc.encode())]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in request.headers.items()]
    return parts.path.encode(), parts.query.encode(), headers


def check(request: AWSRequest, v: Verifier | None = None, body: bytes | None = None, path: bytes | None = None) -> Any:
    raw_path, raw_query, headers = wire(request)
    header = request.headers.get("Authorization")
    if header is not None:
        signed = sigv4.parse_authorization(header)
        query = sigv4.split_query(raw_query)
    else:
        signed = sigv4.parse_presigned(sigv4.split_query(raw_query))
        query = signed.query or []
    data = request.body if body is None else body
    content_sha = request.headers.get("X-Amz-Content-SHA256")
    payload = content_sha or ("UNSIGNED-PAYLOAD" if signed.presigned else hashlib.sha256(data or b"").hexdigest())
    return (v or verifier()).verify(signed, request.method, path or raw_path, query, headers, payload)


def test_botocore_signed_request_verifies() -> None:
    verified = check(sign())
    assert verified.key.name == "admin" and verified.signed.service == "sagemaker"


def test_wrong_secret_unknown_key_and_tampering() -> None:
    with pytest.raises(AuthFailure) as info:
        check(sign(key=("AKIDADMIN", "wrong", None)))
    assert info.value.kind == sigv4.BAD_SIGNATURE
    with pytest.raises(AuthFailure) as info:
        check(sign(key=("AKIDNOBODY", "x", None)))
    assert info.value.kind == sigv4.UNKNOWN_KEY
    with pytest.raises(AuthFailure) as info:
        check(sign(), body=b"1,2,4")  # the server hashed another body
    assert info.value.kind == sigv4.BAD_SIGNATURE
    with pytest.raises(AuthFailure):
        check(sign(), path=b"/endpoints/other/invocations")


def test_canonical_path_is_the_raw_encoded_one() -> None:
    url = "http://127.0.0.1:8080/endpoints/a%20b/invocations"
    assert check(sign(url=url))
    with pytest.raises(AuthFailure):  # the decoded path is not what was signed
        check(sign(url=url), path=b"/endpoints/a b/invocations")
    s3_url = "http://127.0.0.1:8080/bucket/dir/a%2Bb%20c.txt?list-type=2&prefix=a%2Fb"
    request = sign(S3SigV4Auth, "GET", s3_url, b"", {}, "s3")
    assert check(request).signed.service == "s3"


def test_only_signed_headers_count() -> None:
    request = sign(headers={"Content-Type": "text/csv", "User-Agent": "botocore"})
    assert "user-agent" not in request.headers["Authorization"]
    raw_path, raw_query, headers = wire(request)
    headers = [(k, b"changed" if k == b"user-agent" else v) for k, v in headers] + [(b"x-extra", b"1")]
    signed = sigv4.parse_authorization(request.headers["Authorization"])
    payload = hashlib.sha256(b"1,2,3").hexdigest()
    assert verifier().verify(signed, "POST", raw_path, [], headers, payload)
    tampered = [(k, b"application/json" if k == b"content-type" else v) for k, v in headers]
    with pytest.raises(AuthFailure):
        verifier().verify(
            sigv4.parse_authorization(request.headers["Authorization"]), "POST", raw_path, [], tampered, payload
        )


def test_clock_skew() -> None:
    request = sign(when=NOW - datetime.timedelta(minutes=16))
    with pytest.raises(AuthFailure) as info:
        check(request)
    assert info.value.kind == sigv4.EXPIRED
    assert info.value.detail == (
        "Signature expired: 20240501T114400Z is now earlier than 20240501T114500Z (20240501T120000Z - 15 min.)"
    )
    with pytest.raises(AuthFailure) as info:
        check(sign(when=NOW + datetime.timedelta(minutes=16)))
    assert info.value.kind == sigv4.NOT_YET
    assert check(sign(when=NOW - datetime.timedelta(minutes=14)))


def test_security_token() -> None:
    assert check(sign(key=("AKIDTEMP", "temp-secret", "the-token"))).key.name == "temp"
    for token in (None, "other-token"):
        with pytest.raises(AuthFailure) as info:
            check(sign(key=("AKIDTEMP", "temp-secret", token)))
        assert info.value.kind == sigv4.BAD_TOKEN
    with pytest.raises(AuthFailure) as info:  # a key without a token: none may be sent
        check(sign(key=("AKIDADMIN", "admin-secret", "x")))
    assert info.value.kind == sigv4.BAD_TOKEN


def test_presigned_s3() -> None:
    request = sign(S3SigV4QueryAuth, "GET", "http://127.0.0.1:8080/bkt/key.txt", b"", {}, "s3", expires=60)
    assert "X-Amz-Signature=" in request.url
    assert check(request).signed.presigned
    with pytest.raises(AuthFailure) as info:
        check(request, verifier(NOW + datetime.timedelta(seconds=61)))
    assert (info.value.kind, info.value.detail) == (sigv4.PRESIGNED_EXPIRED, "Request has expired")
    tampered = AWSRequest(method="GET", url=request.url.replace("key.txt", "other.txt"))
    with pytest.raises(AuthFailure) as info:
        check(tampered)
    assert info.value.kind == sigv4.BAD_SIGNATURE


def test_malformed_headers() -> None:
    for header in ("Bearer x", "AWS4-HMAC-SHA256 Credential=AK/20240501/us-east-1/s3/aws4_request"):
        with pytest.raises(AuthFailure) as info:
            sigv4.parse_authorization(header)
        assert info.value.kind == sigv4.INCOMPLETE


def test_signing_key_is_cached() -> None:
    v = verifier()
    check(sign(), v)
    check(sign(), v)
    assert len(v._keys) == 1


def test_chunk_signatures_chain() -> None:
    request = sign(
        S3SigV4Auth,
        "PUT",
        "http://127.0.0.1:8080/b/k",
        b"",
        {"X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"},
        "s3",
    )
    verified = check(request)
    signer = verified.chunk_signer()
    client = verified.chunk_signer()  # the same computation a client makes
    data_hash = hashlib.sha256(b"hello").hexdigest()
    good = client._expect("AWS4-HMAC-SHA256-PAYLOAD", f"{sigv4.EMPTY_SHA256_HASH}\n{data_hash}")
    assert signer.chunk(good, data_hash)
    assert not ChunkSigner(verified.signing_key, "20240501T120000Z", verified.signed.scope, "0" * 64).chunk(
        good, data_hash
    )
