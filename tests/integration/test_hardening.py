"""The front door against hostile input, through a real server: DNS rebinding (Host), unsigned
cross-site requests, header and body limits, the slow-body timeout, connections per client, deep
JSON, bad endpoint names in the path and the logs route's parameters. Each answer is checked as
the route's protocol words it; raw sockets where no client would send the request."""

from __future__ import annotations

import http.client
import json
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.helpers import Server

BAD_NAME = (
    "1 validation error detected: Value '{}' at 'endpointName' failed to satisfy constraint: "
    "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
)
TARGET = {"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"MODELHOST_BODY_TIMEOUT": "1", "MODELHOST_ALLOWED_HOSTS": "models.internal,*.corp.example"}
    srv = Server(tmp_path_factory.mktemp("mh") / "data", env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering

    def json(self) -> Any:
        return json.loads(self.body)

    def xml_code(self) -> str | None:
        return ET.fromstring(self.body).findtext("Code")


def raw(port: int, data: bytes, *, pause_after: bytes | None = None, timeout: float = 10) -> Answer:
    """Send ``data`` on a new connection (then, if given, ``pause_after`` never completes the body)
    and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"connection closed without an answer: {buf!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        s.settimeout(0.5)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
    return Answer(status, headers, rest[:length], closed)


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"", host: str | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body and "Content-Length" not in headers and "Transfer-Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _json_error(answer: Answer, status: int, code: str) -> str:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["x-amzn-errortype"] == code
    body = answer.json()
    return str(body.get("message") or body.get("Message"))


def _clients(server: Server, url: str | None = None) -> tuple[Any, Any]:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    config = Config(retries={"mode": "standard", "max_attempts": 1})
    url = url or server.url
    return session.client("sagemaker", endpoint_url=url, config=config), session.client(
        "s3", endpoint_url=url, config=config
    )


# --- 1. Host (DNS rebinding) ---------------------------------------------------------------------


def test_unknown_host_is_refused_in_each_protocol(server: Server) -> None:
    port = server.port
    evil = "attacker.example"
    message = _json_error(raw(port, request(port, "POST", "/", TARGET, b"{}", host=evil)), 400, "ValidationException")
    assert message.startswith("Host 'attacker.example' is not a host name this server answers to")
    message = _json_error(
        raw(port, request(port, "POST", "/endpoints/ep/invocations", {"Content-Type": "text/csv"}, b"1", host=evil)),
        400,
        "ValidationError",
    )
    assert "attacker.example" in message
    s3 = raw(port, request(port, "GET", "/bkt/key", {}, host=f"{evil}:{port}"))
    assert (s3.status, s3.xml_code()) == (400, "InvalidArgument")
    assert "Host 'attacker.example:" in (ET.fromstring(s3.body).findtext("Message") or "")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "bkt.localhost:{port}", "127.0.0.2:{port}"]
    + ["models.internal:{port}", "a.corp.example", "localhost.:{port}"],
)
def test_loopback_bind_and_configured_hosts_are_served(server: Server, host: str) -> None:
    port = server.port
    answer = raw(port, request(port, "GET", "/ping", {}, host=host.format(port=port)))
    assert answer.status == 200, answer.body


def test_real_clients_with_127_0_0_1_and_localhost(server: Server) -> None:
    for url in (server.url, f"http://localhost:{server.port}"):
        sm, s3 = _clients(server, url)
        assert sm.list_endpoints()["Endpoints"] == []
        assert "Buckets" in s3.list_buckets()


# --- 2. cross-site requests ---------------------------------------------------------------------


def test_cross_origin_text_plain_invoke_is_refused(server: Server) -> None:
    port = server.port
    headers = {"Content-Type": "text/plain", "Origin": "http://attacker.example"}
    answer = raw(port, request(port, "POST", "/endpoints/my-ep/invocations", headers, b"1,2,3"))
    message = _json_error(answer, 403, "AccessDeniedException")
    assert message == (
        "Cross-site request refused: Origin 'http://attacker.example' is not an allowed host, and the request is "
        "not signed. Requests that change state from a web page must be signed with AWS Signature Version 4."
    )
    # Sec-Fetch-Site alone (a browser that sends no Origin) and the S3 route
    answer = raw(port, request(port, "POST", "/", {**TARGET, "Sec-Fetch-Site": "cross-site"}, b"{}"))
    assert "Sec-Fetch-Site is cross-site" in _json_error(answer, 403, "AccessDeniedException")
    answer = raw(port, request(port, "PUT", "/bkt/k", {"Origin": "null"}, b"x"))
    assert (answer.status, answer.xml_code()) == (403, "AccessDenied")


def test_same_origin_reads_and_signed_requests_pass(server: Server) -> None:
    port = server.port
    # an allowed Origin reaches the handler (no such endpoint), as does a cross-site GET
    same = {"Content-Type": "text/csv", "Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin"}
    answer = raw(port, request(port, "POST", "/endpoints/my-ep/invocations", same, b"1"))
    assert "not found" in _json_error(answer, 400, "ValidationError")
    answer = raw(port, request(port, "GET", "/ping", {"Origin": "http://attacker.example"}))
    assert answer.status == 200
    # a signed request with a foreign Origin (a tool, not a page that cannot sign)
    sm, s3 = _clients(server)

    def add_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = "http://attacker.example"
        request.headers["Sec-Fetch-Site"] = "cross-site"

    sm.meta.events.register("before-sign.sagemaker.*", add_origin)
    assert sm.list_endpoints()["Endpoints"] == []
    s3.meta.events.register("before-sign.s3.*", add_origin)
    s3.create_bucket(Bucket="signed-from-anywhere")
    # presigned URLs are signed too
    plain = _clients(server)[1]
    url = plain.generate_presigned_url("put_object", Params={"Bucket": "signed-from-anywhere", "Key": "k"})
    path = url.split(str(port), 1)[1]
    answer = raw(port, request(port, "PUT", path, {"Origin": "http://attacker.example"}, b"data"))
    assert answer.status == 200, answer.body


# --- 3. header limits ----------------------------------------------------------------------------


def test_a_100_kb_header_is_refused_in_each_protocol(server: Server) -> None:
    port = server.port
    big = {"X-Big": "a" * 100_000}
    answer = raw(port, request(port, "POST", "/", {**TARGET, **big}, b"{}"))
    message = _json_error(answer, 400, "RequestHeaderSectionTooLarge")
    assert message.startswith("Your request header section exceeds the maximum allowed size: ")
    assert "(the limits are 100 headers and 16384 bytes)" in message and answer.closed
    answer = raw(port, request(port, "POST", "/endpoints/ep/invocations", big, b"1"))
    _json_error(answer, 400, "RequestHeaderSectionTooLarge")
    answer = raw(port, request(port, "GET", "/bkt/key", big))
    assert (answer.status, answer.xml_code()) == (400, "RequestHeaderSectionTooLarge")


def test_too_many_headers_and_a_header_section_too_large_to_parse(server: Server) -> None:
    port = server.port
    many = {f"X-H{i}": "v" for i in range(150)}
    answer = raw(port, request(port, "GET", "/bkt/key", many))
    assert (answer.status, answer.xml_code()) == (400, "RequestHeaderSectionTooLarge")
    assert "101 headers" in (ET.fromstring(answer.body).findtext("Message") or "")  # the rest were not kept
    # 1 MB of headers: cut off while arriving, before it is all buffered
    huge = {"X-Huge": "a" * 1_000_000}
    answer = raw(port, request(port, "GET", "/bkt/key", huge))
    assert (answer.status, answer.xml_code(), answer.closed) == (400, "RequestHeaderSectionTooLarge", True)
    answer = raw(port, request(port, "POST", "/", {**TARGET, **huge}, b"{}"))
    assert _json_error(answer, 400, "RequestHeaderSectionTooLarge").endswith("(262144 bytes).")
    assert raw(port, request(port, "GET", "/ping", {})).status == 200  # still serving


# --- 4. body limits and the slow-body timeout ----------------------------------------------------


def test_control_plane_body_over_1_mib_is_refused_at_once(server: Server) -> None:
    port = server.port
    started = time.monotonic()
    # headers only: the answer comes without the body being sent
    answer = raw(port, request(port, "POST", "/", {**TARGET, "Content-Length": str(2 * 1024 * 1024)}))
    assert time.monotonic() - started < 0.9  # before the 1 s body timeout
    message = _json_error(answer, 413, "SerializationException")
    assert message == "Request body is 2097152 bytes; the maximum for this API is 1048576 bytes (1 MiB)."
    assert answer.closed
    # chunked: refused as soon as it passes the limit
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    answer = raw(port, request(port, "POST", "/", {**TARGET, "Transfer-Encoding": "chunked"}, body))
    message = _json_error(answer, 413, "SerializationException")
    assert message == "Request body exceeds the maximum for this API of 1048576 bytes (1 MiB)."


def test_s3_put_over_5_gib_is_refused_at_once(server: Server) -> None:
    port = server.port
    _clients(server)[1].create_bucket(Bucket="bkt")
    started = time.monotonic()
    answer = raw(port, request(port, "PUT", "/bkt/huge", {"Content-Length": "5368709121"}))
    assert time.monotonic() - started < 0.9
    assert (answer.status, answer.xml_code(), answer.closed) == (400, "EntityTooLarge", True)
    root = ET.fromstring(answer.body)
    assert root.findtext("Message") == "Your proposed upload exceeds the maximum allowed size"
    assert (root.findtext("ProposedSize"), root.findtext("MaxSizeAllowed")) == ("5368709121", "5368709120")
    assert not list((server.data_dir / "buckets" / "bkt").iterdir())


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/", TARGET),
        ("POST", "/endpoints/ep/invocations", {"Content-Type": "text/csv"}),
        ("PUT", "/slow-bkt/key", {}),
    ],
)
def test_a_body_that_stops_arriving_is_cut_off(server: Server, method: str, path: str, headers: dict) -> None:
    port = server.port
    _clients(server)[1].create_bucket(Bucket="slow-bkt") if method == "PUT" else None
    started = time.monotonic()
    answer = raw(port, request(port, method, path, {**headers, "Content-Length": "100"}, b"0123456789"))
    waited = time.monotonic() - started
    assert 0.9 <= waited < 5, waited
    text = (
        "Your socket connection to the server was not read from or written to within the timeout period. "
        "Idle connections will be closed. (No request body bytes arrived for 1 s.)"
    )
    if method == "PUT":
        assert (answer.status, answer.xml_code()) == (400, "RequestTimeout")
        assert ET.fromstring(answer.body).findtext("Message") == text
        assert not list((server.data_dir / "buckets" / "slow-bkt").iterdir())
    else:
        assert _json_error(answer, 408, "RequestTimeoutException") == text
    assert answer.closed


# --- 6. JSON nesting ------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_serialization_exception(server: Server) -> None:
    port = server.port
    for body in (b"[" * 100_000, b'{"EndpointName": ' + b"[" * 101 + b"]" * 101 + b"}"):
        answer = raw(port, request(port, "POST", "/", TARGET, body))
        message = _json_error(answer, 400, "SerializationException")
        assert message == "Request body is not valid JSON: arrays and objects nest deeper than 100 levels."
    answer = raw(port, request(port, "POST", "/", TARGET, b"{not json"))
    assert "not valid JSON" in _json_error(answer, 400, "SerializationException")


# --- 7. endpoint names in the path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/endpoints/..%2f..%2fetc/invocations", "../../etc"),
        ("/endpoints/..%2F..%2Fetc/async-invocations", "../../etc"),
        ("/endpoints/%2e%2e/invocations", ".."),
        ("/endpoints/a/b/invocations", "a/b"),
        ("/endpoints/my_ep/invocations", "my_ep"),
    ],
)
def test_bad_endpoint_names_in_the_path_are_validation_errors(server: Server, path: str, name: str) -> None:
    port = server.port
    answer = raw(port, request(port, "POST", path, {"Content-Type": "text/csv"}, b"1"))
    assert _json_error(answer, 400, "ValidationError") == BAD_NAME.format(name)


def test_an_encoded_slash_is_not_a_path_separator(server: Server) -> None:
    # /endpoints/ep%2Finvocations is not InvokeEndpoint on "ep" (AWS routes on the raw path)
    port = server.port
    answer = raw(port, request(port, "POST", "/endpoints/ep%2Finvocations", {"Content-Type": "text/csv"}, b"1"))
    assert answer.status == 404


def test_the_runtime_client_names_a_bad_endpoint_the_same_way(server: Server) -> None:
    rt = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName="../../etc", Body=b"1", ContentType="text/csv")
    err = info.value.response["Error"]
    assert (err["Code"], err["Message"]) == ("ValidationError", BAD_NAME.format("../../etc"))


# --- 8. the logs route ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value"),
    [("offset=-99999999999999999999", "-99999999999999999999"), ("offset=abc", "abc"), ("offset=1e3", "1e3")]
    + [("offset=99999999999999999999", "99999999999999999999"), ("offset=" + "9" * 5000, "9" * 100 + "...")],
)
def test_logs_offset_must_be_a_non_negative_integer(server: Server, query: str, value: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/modelhost/endpoints/my-ep/logs?{query}")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert (resp.status, resp.headers["x-amzn-ErrorType"], body["__type"]) == (
        400,
        "ValidationException",
        "ValidationException",
    )
    assert body["message"] == (
        f"1 validation error detected: Value '{value}' at 'offset' failed to satisfy constraint: "
        "Member must be an integer between 0 and 9223372036854775807"
    )


@pytest.mark.parametrize(("path", "name"), [("..%2f..%2fetc", "../../etc"), ("%2e%2e", ".."), ("a_b", "a_b")])
def test_logs_name_must_be_an_endpoint_name(server: Server, path: str, name: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/modelhost/endpoints/{path}/logs?offset=0")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert (resp.status, body["__type"]) == (400, "ValidationException")
    assert body["message"] == (
        f"1 validation error detected: Value '{name}' at 'endpointName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
    )
    conn.request("GET", "/modelhost/endpoints/no-such-ep/logs?offset=0")  # a good name: as before
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (404, b"No logs for endpoint no-such-ep.\n")


# --- 5. connections per client address -----------------------------------------------------------


def test_connections_past_the_per_client_limit_get_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"MODELHOST_MAX_CONNECTIONS_PER_CLIENT": "4"}
    srv = Server(tmp_path_factory.mktemp("mh-conn") / "data", env=env).start()
    try:
        time.sleep(0.5)  # the start-up probe's connection is gone
        held = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10) for _ in range(4)]
        for conn in held:
            conn.request("GET", "/ping")
            assert conn.getresponse().read() == b""  # each stays open (keep-alive)
        port = srv.port
        answer = raw(port, request(port, "POST", "/", TARGET, b"{}"))
        message = _json_error(answer, 503, "ServiceUnavailable")
        assert message.startswith("Too many open connections from 127.0.0.1: the limit is 4 per client address")
        assert answer.closed
        answer = raw(port, request(port, "GET", "/bkt/key", {}))
        assert (answer.status, answer.xml_code()) == (503, "SlowDown")
        for conn in held:  # the held ones still work
            conn.request("GET", "/ping")
            assert conn.getresponse().status == 200
        held.pop().close()
        time.sleep(0.3)
        assert raw(port, request(port, "GET", "/ping", {})).status == 200
        for conn in held:
            conn.close()
    finally:
        srv.stop()
