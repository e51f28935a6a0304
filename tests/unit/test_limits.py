"""The front door's guard (hosts, cross-site, header and body limits, slow bodies, connection limit
flag), deep JSON, the raw-path endpoint match and the S3 PUT size checks, with tiny ASGI apps."""

from __future__ import annotations

import asyncio
import json
import shutil
import xml.etree.ElementTree as ET
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from modelhost.errors import SerializationException
from modelhost.server import protocols
from modelhost.server.asgi import ENDPOINT, OVER_CONNECTION_LIMIT
from modelhost.server.front_door import FrontDoor, Route, anything, is_invoke, is_invoke_async, is_s3, is_sts
from modelhost.server.json_wire import MAX_DEPTH, decode_body
from modelhost.server.middleware import STACK, Guard, HostPolicy, Limits
from modelhost.server.middleware.hosts import hostname, presigned
from modelhost.server.s3 import objects
from modelhost.store.buckets import S3StoreError


class Reader:
    """An ASGI app that reads the whole body, then answers 200 with it."""

    def __init__(self) -> None:
        self.bodies: list[bytes | None] = []  # None: it saw a disconnect

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.bodies.append(None)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def door(limits: Limits | None = None, hosts: HostPolicy | None = None) -> tuple[FrontDoor, Reader]:
    app = Reader()
    routes = [
        Route("s3", is_s3, app, protocols.REST_XML),
        Route("sts", is_sts, app, protocols.QUERY),
        Route("invoke", is_invoke, app, protocols.REST_JSON),
        Route("invoke-async", is_invoke_async, app, protocols.REST_JSON),
        Route("api", anything, app, protocols.JSON),
    ]
    stack = tuple((lambda a: Guard(a, hosts, limits)) if m is Guard else m for m in STACK)
    return FrontDoor(routes, stack), app


def scope(method: str, path: str, headers: dict[str, str] | None = None, raw_path: bytes | None = None) -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": b"",
        "client": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }


JSON_API = {"X-Amz-Target": "SageMaker.ListEndpoints"}
SIGNED = (
    "AWS4-HMAC-SHA256 Credential=AKIDTEST/20240101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=ab"
)


def call(app: Any, sc: dict, messages: list[dict] | None = None, stall: bool = False) -> tuple[int, dict, bytes]:
    queue = list(messages if messages is not None else [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict] = []

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(sc, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


# --- hosts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("bkt.localhost:9000", "bkt.localhost"),
        ("localhost.", "localhost"),
        ("host:", ""),
        ("host:abc", ""),
        ("[::1]x", ""),
    ],
)
def test_hostname(value: str, name: str) -> None:
    assert hostname(value) == name


def test_host_policy() -> None:
    default = HostPolicy()
    for ok in (b"localhost:1", b"127.0.0.1", b"127.1.2.3:8", b"[::1]:8", b"b.localhost", b"LOCALHOST"):
        assert default.allows(ok), ok
    for bad in (b"attacker.example", b"10.0.0.5", b"localhost.attacker.example", b"", b"evil:80x"):
        assert not default.allows(bad), bad
    bound = HostPolicy("10.0.0.5", ["models.internal", "*.corp.example", ".zone"])
    assert bound.allows(b"10.0.0.5:8080") and bound.allows(b"models.internal")
    assert bound.allows(b"a.b.corp.example") and bound.allows(b"x.zone") and not bound.allows(b"corp.example.evil")
    assert not bound.allows(b"10.0.0.6")
    wildcard = HostPolicy("0.0.0.0")
    assert wildcard.allows(b"192.168.1.20:8080") and wildcard.allows(b"[fe80::1]") and not wildcard.allows(b"a.example")
    assert HostPolicy.parse("127.0.0.1", "*").allows(b"anything.example")
    assert HostPolicy.parse("127.0.0.1", "").names == {"localhost", "127.0.0.1", "::1"}


def test_host_cache_is_bounded() -> None:
    policy = HostPolicy()
    for i in range(3000):
        policy.allows(b"h%d.example" % i)
    assert len(policy._cache) == 1024


def test_origins_and_presigned_queries() -> None:
    policy = HostPolicy()
    assert policy.allows_origin(b"http://localhost:8080") and policy.allows_origin(b"https://127.0.0.1")
    for bad in (b"null", b"http://attacker.example", b"file://", b"http://localhost@attacker.example"):
        assert not policy.allows_origin(bad), bad
    assert presigned(b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab")
    assert presigned(b"AWSAccessKeyId=AK&Signature=ab&Expires=1") and not presigned(b"prefix=a")


# --- the guard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sc", "status", "code"),
    [
        (scope("POST", "/", {**JSON_API, "Host": "attacker.example"}), 400, "ValidationException"),
        (scope("POST", "/endpoints/e/invocations", {"Host": "attacker.example"}), 400, "ValidationError"),
        (scope("GET", "/b/k", {"Host": "attacker.example"}), 400, "InvalidArgument"),
        (
            scope("POST", "/", {"Host": "evil", "Authorization": "AWS4-HMAC-SHA256 Credential=A/d/r/sts/aws4_request"}),
            400,
            "ValidationError",
        ),
    ],
)
def test_a_foreign_host_in_each_protocol(sc: dict, status: int, code: str) -> None:
    got, headers, body = call(door()[0], sc)
    assert got == status
    if "x-amzn-errortype" in headers:
        assert headers["x-amzn-errortype"] == code
    else:
        assert [el.text for el in ET.fromstring(body).iter() if el.tag.endswith("Code")] == [code]
    assert headers["connection"] == "close"


def test_no_host_header_is_served() -> None:  # HTTP/1.0 clients; a browser always sends one
    assert call(door()[0], scope("GET", "/ping"))[0] == 200


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Origin": "http://attacker.example"}, True),
        ({"Origin": "null"}, True),
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-origin"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": "http://attacker.example", "Authorization": SIGNED}, False),
    ],
)
def test_cross_site_state_changes_need_a_signature(headers: dict[str, str], refused: bool) -> None:
    front, app = door()
    status, out, body = call(front, scope("POST", "/endpoints/e/invocations", {**headers, "Content-Length": "1"}))
    if refused:
        assert (status, out["x-amzn-errortype"]) == (403, "AccessDeniedException")
        assert json.loads(body)["Message"].startswith("Cross-site request refused: ")
        assert app.bodies == []
    else:
        assert status == 200
    # reads are never refused for it
    assert call(front, scope("GET", "/ping", headers))[0] == 200


def test_header_limits() -> None:
    front, app = door()
    status, out, body = call(front, scope("POST", "/", {**JSON_API, **{f"x-h{i}": "v" for i in range(100)}}))
    assert (status, out["x-amzn-errortype"]) == (400, "RequestHeaderSectionTooLarge")
    assert json.loads(body)["message"].startswith("Your request header section exceeds the maximum allowed size: 101 ")
    status, _, body = call(front, scope("GET", "/b/k", {"x-big": "a" * 16 * 1024}))
    assert (status, ET.fromstring(body).findtext("Code")) == (400, "RequestHeaderSectionTooLarge")
    assert call(front, scope("GET", "/b/k", {"x-big": "a" * 16000}))[0] == 200
    assert app.bodies == [b""]


def test_over_the_connection_limit() -> None:
    sc = scope("POST", "/endpoints/e/invocations")
    sc[OVER_CONNECTION_LIMIT] = True
    status, out, body = call(door(Limits(max_connections_per_client=7))[0], sc)
    assert (status, out["x-amzn-errortype"], out["connection"]) == (503, "ServiceUnavailable", "close")
    assert json.loads(body)["Message"].startswith("Too many open connections from 127.0.0.1: the limit is 7 ")


def test_json_bodies_are_bounded_and_handed_on_whole() -> None:
    front, app = door(Limits(max_api_body=10))
    status, out, body = call(front, scope("POST", "/", {**JSON_API, "Content-Length": "11"}))
    assert (status, out["x-amzn-errortype"]) == (413, "SerializationException")
    assert json.loads(body)["message"] == "Request body is 11 bytes; the maximum for this API is 10 bytes (1 MiB)."
    pieces = [{"type": "http.request", "body": b"12345", "more_body": True}] * 3
    status, out, body = call(front, scope("POST", "/", {**JSON_API, "Transfer-Encoding": "chunked"}), pieces)
    assert (status, out["x-amzn-errortype"]) == (413, "SerializationException")
    pieces = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"67890", "more_body": False},
    ]
    assert call(front, scope("POST", "/", {**JSON_API, "Transfer-Encoding": "chunked"}), pieces)[2] == b"1234567890"
    assert app.bodies == [b"1234567890"]


@pytest.mark.parametrize(
    ("sc", "status", "code"),
    [
        (scope("POST", "/", JSON_API), 408, "RequestTimeoutException"),
        (scope("POST", "/endpoints/e/invocations"), 408, "RequestTimeoutException"),
        (scope("PUT", "/b/k"), 400, "RequestTimeout"),
    ],
)
def test_a_stalled_body_is_answered_and_the_handler_sees_a_disconnect(sc: dict, status: int, code: str) -> None:
    front, app = door(Limits(body_timeout=0.05))
    sc["headers"].append((b"content-length", b"10"))
    got, out, body = call(front, sc, [{"type": "http.request", "body": b"12345", "more_body": True}], stall=True)
    assert (got, out["connection"]) == (status, "close")
    if "x-amzn-errortype" in out:
        assert out["x-amzn-errortype"] == code
        text = json.loads(body).get("message") or json.loads(body)["Message"]
    else:
        assert ET.fromstring(body).findtext("Code") == code
        text = ET.fromstring(body).findtext("Message") or ""
    assert text.endswith("(No request body bytes arrived for 0.05 s.)")
    assert app.bodies == ([] if code == "RequestTimeoutException" and sc["path"] == "/" else [None])


def test_a_body_in_time_is_not_cut_off() -> None:
    front, app = door(Limits(body_timeout=0.05))
    sc = scope("POST", "/endpoints/e/invocations", {"Content-Length": "3"})
    assert call(front, sc, [{"type": "http.request", "body": b"abc", "more_body": False}])[:1] == (200,)
    assert app.bodies == [b"abc"]


# --- JSON nesting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b'{"a":' * 100_000, b'{"A": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"],
)
def test_too_deep_json(raw: bytes) -> None:
    with pytest.raises(SerializationException) as info:
        decode_body(raw)
    assert info.value.message == "Request body is not valid JSON: arrays and objects nest deeper than 100 levels."


def test_deep_enough_json_and_brackets_in_strings() -> None:
    nested = b'{"A": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert decode_body(nested)["A"]
    assert decode_body(b'{"A": "' + b"[" * 500 + b'"}') == {"A": "[" * 500}
    assert decode_body(b'{"A": "\\\\", "B": "' + b"{" * 500 + b'\\""}')["B"] == "{" * 500 + '"'
    assert decode_body(b'{"A": [' + b'{"a": 1},' * 1000 + b"{}]}")["A"][-1] == {}


# --- the endpoint name from the raw path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"/endpoints/my-ep/invocations", "my-ep"),
        (b"/endpoints/..%2f..%2fetc/invocations", "../../etc"),
        (b"/endpoints/%2e%2e/invocations", ".."),
        (b"/endpoints/a/b/invocations", "a/b"),
    ],
)
def test_invoke_matches_on_the_raw_path(raw: bytes, name: str) -> None:
    sc = scope("POST", "(decoded)", raw_path=raw)
    assert is_invoke(sc) and sc[ENDPOINT] == name


def test_an_encoded_slash_does_not_end_the_name() -> None:
    sc = scope("POST", "/endpoints/ep/invocations", raw_path=b"/endpoints/ep%2Finvocations")
    assert not is_invoke(sc)


# --- S3 PUT sizes ----------------------------------------------------------------------------------

Store = namedtuple("Store", "tmp_dir")


def test_put_size_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store: Any = Store(tmp_path)
    objects.check_put_size(store, {"content-length": str(objects.MAX_PUT_SIZE)}, False)  # 5 GiB itself is fine
    with pytest.raises(S3StoreError) as info:
        objects.check_put_size(store, {"content-length": "5368709121"}, False)
    assert (info.value.code, info.value.fields) == (
        "EntityTooLarge",
        {"ProposedSize": "5368709121", "MaxSizeAllowed": "5368709120"},
    )
    with pytest.raises(S3StoreError):  # aws-chunked: the decoded length counts
        objects.check_put_size(store, {"content-length": "10", "x-amz-decoded-content-length": "5368709121"}, True)
    objects.check_put_size(store, {"content-length": "10", "x-amz-copy-source": "/b/k"}, False)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(100, 90, 2 * 1024 * 1024))
    objects.check_put_size(store, {"content-length": str(2 * 1024 * 1024)}, False)
    with pytest.raises(S3StoreError) as info:
        objects.check_put_size(store, {"content-length": str(3 * 1024 * 1024)}, False)
    assert info.value.code == "EntityTooLarge"
    assert info.value.message == (
        "Your proposed upload exceeds the maximum allowed size: the server has 2097152 bytes of free disk space "
        "under its data directory."
    )
    assert info.value.fields["MaxSizeAllowed"] == "2097152"
