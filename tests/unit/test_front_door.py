"""The front door's route order and the middleware stack, with tiny ASGI apps (no server)."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from modelhost.hosting.metrics import REGISTRY
from modelhost.server import protocols
from modelhost.server.asgi import CALLER, ENDPOINT, REQUEST_ID, ROUTE, BodyTooLarge, read_body, request_id
from modelhost.server.front_door import FrontDoor, Route, anything, is_invoke, is_invoke_async, is_s3, is_sts
from modelhost.server.middleware import STACK, Caller

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDTEST/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=ab"
)
SAGEMAKER_SIGNED = {"Authorization": SIGV4.format(service="sagemaker")}


class Recorder:
    """An ASGI app that answers 200 and remembers the scopes it saw."""

    def __init__(self, name: str, own_request_id: bool = False) -> None:
        self.name = name
        self.own_request_id = own_request_id
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "lifespan":
            return
        headers = [(b"content-type", b"text/plain")]
        if self.own_request_id:  # as the runtime handlers do: reuse the middleware's id
            headers.append((b"x-amzn-requestid", request_id(scope).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.name.encode()})


def front_door() -> tuple[FrontDoor, dict[str, Recorder]]:
    apps = {
        "s3": Recorder("s3"),
        "sts": Recorder("sts"),
        "invoke": Recorder("invoke", own_request_id=True),
        "invoke-async": Recorder("invoke-async", own_request_id=True),
        "api": Recorder("api"),
    }
    routes = [
        Route("s3", is_s3, apps["s3"], protocols.REST_XML),
        Route("sts", is_sts, apps["sts"], protocols.QUERY),
        Route("invoke", is_invoke, apps["invoke"], protocols.REST_JSON),
        Route("invoke-async", is_invoke_async, apps["invoke-async"], protocols.REST_JSON),
        Route("api", anything, apps["api"], protocols.JSON),
    ]
    return FrontDoor(routes, STACK), apps


def http_scope(method: str, path: str, headers: dict[str, str] | None = None, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }


def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    assert start["type"] == "http.response.start"
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


CASES = [
    # (scope, route) in the order the front door must choose
    (http_scope("GET", "/bucket/key"), "s3"),  # unsigned and not one of ours: S3
    (http_scope("POST", "/endpoints/x/invocations", {"Authorization": SIGV4.format(service="s3")}), "s3"),
    (http_scope("GET", "/endpoints/obj", {"Authorization": SIGV4.format(service="s3")}), "s3"),  # bucket "endpoints"
    (http_scope("PUT", "/b/k", {"Authorization": "AWS AKID:c2ln"}), "s3"),  # SigV2
    (http_scope("GET", "/b/k", query=b"X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"), "s3"),
    (http_scope("POST", "/", {"Authorization": SIGV4.format(service="sts")}), "sts"),
    (http_scope("POST", "/endpoints/my-ep/invocations"), "invoke"),
    (
        http_scope("POST", "/endpoints/my-ep/invocations", {"Authorization": SIGV4.format(service="sagemaker")}),
        "invoke",
    ),
    (http_scope("POST", "/endpoints/my-ep/async-invocations"), "invoke-async"),
    (http_scope("POST", "/", {"X-Amz-Target": "SageMaker.ListModels"}), "api"),
    (http_scope("POST", "/", {"X-Amz-Target": "AnyScaleFrontendService.DescribeScalingPolicies"}), "api"),
    (http_scope("GET", "/ping"), "api"),
    (http_scope("GET", "/metrics"), "api"),
    (http_scope("GET", "/modelhost/endpoints/my-ep/logs"), "api"),
    # not an endpoint name: still the runtime's route, whose handler answers ValidationError
    (http_scope("POST", "/endpoints/a/b/invocations"), "invoke"),
    (http_scope("GET", "/endpoints/my-ep/invocations"), "api"),  # InvokeEndpoint is a POST
]


@pytest.mark.parametrize(("scope", "route"), CASES)
def test_routes_in_order_and_every_route_passes_through_the_stack(scope: dict[str, Any], route: str) -> None:
    door, apps = front_door()
    status, headers, body = call(door, scope)
    assert status == 200 and body == route.encode()
    assert [name for name, app in apps.items() if app.scopes] == [route]
    seen = apps[route].scopes[0]
    assert seen[ROUTE].name == route
    # the stack ran: one request id, the caller, and the id in the response exactly once
    rid = seen[REQUEST_ID]
    assert len(rid) == 36
    assert header_values(headers, b"x-amzn-requestid") == [rid.encode()]
    assert isinstance(seen[CALLER], Caller)


def test_endpoint_name_goes_into_the_scope() -> None:
    door, apps = front_door()
    call(door, http_scope("POST", "/endpoints/my-ep/invocations"))
    call(door, http_scope("POST", "/endpoints/other/async-invocations"))
    assert apps["invoke"].scopes[0][ENDPOINT] == "my-ep"
    assert apps["invoke-async"].scopes[0][ENDPOINT] == "other"


def test_caller_from_the_signature() -> None:
    door, apps = front_door()
    call(door, http_scope("POST", "/endpoints/e/invocations", SAGEMAKER_SIGNED))
    call(door, http_scope("GET", "/ping"))
    call(door, http_scope("PUT", "/b/k", {"Authorization": "AWS AKIDV2:c2ln"}))
    call(door, http_scope("GET", "/b/k", query=b"X-Amz-Credential=AKIDQ%2F20240101%2Feu-west-1%2Fs3%2Faws4_request"))
    assert apps["invoke"].scopes[0][CALLER] == Caller("AKIDTEST", "us-east-1")
    assert apps["api"].scopes[0][CALLER] == Caller(None, None)
    assert apps["s3"].scopes[0][CALLER] == Caller("AKIDV2", None)
    assert apps["s3"].scopes[1][CALLER] == Caller("AKIDQ", "eu-west-1")


def test_each_request_gets_its_own_id() -> None:
    door, apps = front_door()
    ids = [header_values(call(door, http_scope("GET", "/ping"))[1], b"x-amzn-requestid")[0] for _ in range(3)]
    assert len(set(ids)) == 3
    assert [s[REQUEST_ID].encode() for s in apps["api"].scopes] == ids


def test_lifespan_reaches_the_last_route_untouched() -> None:
    door, apps = front_door()

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: dict[str, Any]) -> None:
            pass

        await door({"type": "lifespan"}, receive, send)

    asyncio.run(run())
    assert len(apps["api"].scopes) == 1 and REQUEST_ID not in apps["api"].scopes[0]


MALFORMED = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/{service}/aws4_request"  # no SignedHeaders, Signature


def test_malformed_authorization_json_1_1() -> None:
    door, apps = front_door()
    for auth in ("Bearer abc", MALFORMED.format(service="sagemaker")):
        status, headers, body = call(
            door, http_scope("POST", "/", {"X-Amz-Target": "SageMaker.ListModels", "Authorization": auth})
        )
        assert status == 400  # IncompleteSignature: 400, as AWS's common errors
        doc = json.loads(body)
        assert doc["__type"] == "IncompleteSignatureException" and "Authorization header requires" in doc["message"]
        assert header_values(headers, b"x-amzn-errortype") == [b"IncompleteSignatureException"]
        assert header_values(headers, b"content-type") == [b"application/x-amz-json-1.1"]
        assert len(header_values(headers, b"x-amzn-requestid")) == 1
    assert not apps["api"].scopes


def test_malformed_authorization_runtime() -> None:
    door, apps = front_door()
    for path in ("/endpoints/e/invocations", "/endpoints/e/async-invocations"):
        status, headers, body = call(door, http_scope("POST", path, {"Authorization": "Bearer abc"}))
        assert status == 400  # IncompleteSignature: 400, as AWS's common errors
        doc = json.loads(body)
        assert set(doc) == {"Message"} and "AWS4-HMAC-SHA256" in doc["Message"]
        assert header_values(headers, b"x-amzn-errortype") == [b"IncompleteSignatureException"]
        assert header_values(headers, b"content-type") == [b"application/json"]
    assert not apps["invoke"].scopes and not apps["invoke-async"].scopes


def test_malformed_authorization_s3() -> None:
    door, apps = front_door()
    status, headers, body = call(door, http_scope("PUT", "/b/k", {"Authorization": MALFORMED.format(service="s3")}))
    assert status == 400
    root = ET.fromstring(body)
    assert root.tag == "Error" and root.findtext("Code") == "IncompleteSignatureException"
    rid = header_values(headers, b"x-amzn-requestid")[0].decode()
    assert root.findtext("RequestId") == rid and header_values(headers, b"x-amz-request-id") == [rid.encode()]
    assert not apps["s3"].scopes


def test_malformed_authorization_sts() -> None:
    door, apps = front_door()
    status, _, body = call(door, http_scope("POST", "/", {"Authorization": MALFORMED.format(service="sts")}))
    assert status == 400
    root = ET.fromstring(body)
    ns = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
    assert root.findtext("s:Error/s:Code", namespaces=ns) == "IncompleteSignatureException"
    assert not apps["sts"].scopes


def test_request_metrics_count_by_route_and_status() -> None:
    door, _ = front_door()
    labels = {"route": "invoke", "code": "400"}
    before = REGISTRY.get_sample_value("modelhost_http_requests_total", labels) or 0.0
    call(door, http_scope("POST", "/endpoints/e/invocations", {"Authorization": "Bearer x"}))
    assert REGISTRY.get_sample_value("modelhost_http_requests_total", labels) == before + 1


def test_the_last_route_must_take_everything() -> None:
    with pytest.raises(ValueError):
        FrontDoor([Route("invoke", is_invoke, Recorder("x"), protocols.REST_JSON)])


def test_read_body_limit() -> None:
    def receiver(chunks: list[bytes]) -> Any:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return receive

    assert asyncio.run(read_body(receiver([b"abc"]), 3)) == b"abc"
    assert asyncio.run(read_body(receiver([b"ab", b"", b"cd"]), 4)) == b"abcd"
    with pytest.raises(BodyTooLarge) as info:
        asyncio.run(read_body(receiver([b"abcd"]), 3))
    assert info.value.size == 4 and info.value.limit == 3
    with pytest.raises(BodyTooLarge) as info:
        asyncio.run(read_body(receiver([b"ab", b"cd", b"ef"]), 3))
    assert info.value.size == 4
