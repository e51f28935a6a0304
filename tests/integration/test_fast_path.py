"""InvokeEndpoint's fast path around ASGI (server/fast_path.py, middleware/connections.py), through a real
server and raw sockets: pipelined requests of both paths answered in order, the same answers as the ASGI
way, a client that leaves mid-request, keep-alive, and the request counter. The guard's refusals, the
slow-body timeout and signature checks on this route are tested in test_hardening.py and test_auth.py
(their requests take the fast path too)."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.helpers import PYTHON_IMAGE, ROLE, Server, deploy, tarball, wait_status

ECHO_CODE = """
import time

def model_fn(model_dir):
    return "echo"

def transform_fn(model, data, content_type, accept):
    text = data if isinstance(data, str) else data.decode()
    if text.startswith("slow"):
        time.sleep(0.5)
    return "echo:" + text, "text/plain"
"""


def s3_client(server: Server) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mh") / "data").start()
    try:
        srv.put_object("s3://models/fast/echo.tar.gz", tarball({"code/inference.py": ECHO_CODE}))
        sm, _ = srv.clients()
        s3_client(srv).create_bucket(Bucket="async-out")
        container = {"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/fast/echo.tar.gz"}
        deploy(sm, "fast-echo", container, wait=False)
        sm.create_model(ModelName="fast-async", ExecutionRoleArn=ROLE, PrimaryContainer=container)
        sm.create_endpoint_config(
            EndpointConfigName="fast-async",
            ProductionVariants=[
                {"VariantName": "AllTraffic", "ModelName": "fast-async", "InitialInstanceCount": 1}
                | {"InstanceType": "ml.m5.large"}
            ],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://async-out/fast/"}},
        )
        sm.create_endpoint(EndpointName="fast-async", EndpointConfigName="fast-async")
        for name in ("fast-echo", "fast-async"):
            desc = wait_status(sm, name, ("InService", "Failed"))
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        yield srv
    finally:
        srv.stop()


def invoke(
    port: int, body: bytes, name: str = "fast-echo", chunked: bool = False, operation: str = "invocations"
) -> bytes:
    head = f"POST /endpoints/{name}/{operation} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\n"
    if chunked:  # the ASGI way: the fast path takes only bodies of a known length
        chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunk + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses from one connection, in the order they came."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(out)} answers: {buf!r}"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
        out.append((int(lines[0].split()[1]), headers, buf[:length]))
        buf = buf[length:]
    return out


def exchange(port: int, data: bytes, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        return read_answers(sock, count)


def test_pipelined_requests_of_both_paths_are_answered_in_order(server: Server) -> None:
    port = server.port
    ping = f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    data = invoke(port, b"slow-1") + invoke(port, b"two") + ping + invoke(port, b"three", chunked=True)
    data += invoke(port, b"four")
    answers = exchange(port, data, 5)
    assert [a[0] for a in answers] == [200] * 5
    assert [a[2] for a in answers] == [b"echo:slow-1", b"echo:two", answers[2][2], b"echo:three", b"echo:four"]
    ids = [a[1]["x-amzn-requestid"] for a in answers]
    assert len(set(ids)) == 5  # one id per request, whichever path


def test_the_fast_and_the_asgi_path_answer_alike(server: Server) -> None:
    port = server.port
    for name, body in (("fast-echo", b"same"), ("no-such-endpoint", b"x"), ("bad_name", b"x")):
        fast, slow = (exchange(port, invoke(port, body, name, chunked), 1)[0] for chunked in (False, True))
        assert fast[0] == slow[0]
        assert fast[2] == slow[2]
        assert fast[1].keys() == slow[1].keys()
        for header in ("content-type", "content-length", "server", "x-amzn-errortype"):
            assert fast[1].get(header) == slow[1].get(header)
    for name, body in (("fast-async", b""), ("fast-echo", b"x"), ("fast-async", b"x" * 128001)):
        # InvokeEndpointAsync: no input at all; not an async endpoint; an inline body over 128000 bytes.
        fast, slow = (
            exchange(port, invoke(port, body, name, chunked, "async-invocations"), 1)[0] for chunked in (0, 1)
        )
        assert (fast[0], fast[2]) == (slow[0], slow[2])
        assert (fast[0], fast[1]["x-amzn-errortype"]) == (400, "ValidationError"), fast
        assert fast[1].keys() == slow[1].keys()
    status, headers, body = exchange(port, invoke(port, b"x", "no-such-endpoint"), 1)[0]
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")
    assert json.loads(body)["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
    assert "date" in headers  # uvicorn's default headers, on the fast path too


def test_keep_alive_serves_many_requests_on_one_connection(server: Server) -> None:
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for i in range(50):
            sock.sendall(invoke(port, b"n%d" % i))
            status, headers, body = read_answers(sock, 1)[0]
            assert (status, body) == (200, b"echo:n%d" % i)
            assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"
            assert "connection" not in headers


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server: Server) -> None:
    """uvicorn's 5 s keep-alive timeout, kept by one timer per server (middleware/keep_alive.py): a
    connection that just got an answer (either path) stays open for it, then the server closes it."""
    port = server.port
    ping = f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for request in (invoke(port, b"k"), ping):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(request)
            assert read_answers(sock, 1)[0][0] == 200
            time.sleep(3.5)
            sock.sendall(invoke(port, b"still open"))  # within 5 s of the last answer: served
            assert read_answers(sock, 1)[0][2] == b"echo:still open"
            answered = time.monotonic()
            assert sock.recv(1) == b""  # blocks until the server closes it
            idle = time.monotonic() - answered
        assert 4.5 <= idle < 8.0, idle


def test_a_client_that_leaves_mid_request_disturbs_nothing(server: Server) -> None:
    port = server.port
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.sendall(invoke(port, b"slow-gone"))
        sock.close()  # gone before the model answers
    half = socket.create_connection(("127.0.0.1", port), timeout=20)
    half.sendall(invoke(port, b"0123456789")[:-5])  # a body that never ends, then gone
    half.close()
    time.sleep(1.0)  # the slow requests finish with nobody to answer
    assert exchange(port, invoke(port, b"after"), 1)[0][2] == b"echo:after"
    log = server.log_path.read_text()
    assert "Traceback" not in log and "fast path" not in log, log[-2000:]


def counter(server: Server, code: str) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    match = re.search(rf'modelhost_http_requests_total{{code="{code}",route="invoke"}} (\S+)', text) or re.search(
        rf'modelhost_http_requests_total{{route="invoke",code="{code}"}} (\S+)', text
    )
    return float(match.group(1)) if match else 0.0


def test_the_fast_path_counts_its_requests(server: Server) -> None:
    port = server.port
    before_ok, before_bad = counter(server, "200"), counter(server, "400")
    answers: list[Any] = exchange(port, b"".join(invoke(port, b"c%d" % i) for i in range(7)), 7)
    answers += exchange(port, invoke(port, b"x", "no-such-endpoint") * 2, 2)
    assert [a[0] for a in answers] == [200] * 7 + [400] * 2
    assert counter(server, "200") - before_ok == 7
    assert counter(server, "400") - before_bad == 2


def test_async_invocations_take_the_fast_path_and_complete(server: Server) -> None:
    port = server.port
    data = b"".join(invoke(port, b"async-%d" % i, "fast-async", operation="async-invocations") for i in range(3))
    answers = exchange(port, data, 3)
    assert [a[0] for a in answers] == [202] * 3
    s3 = s3_client(server)
    for i, answer in enumerate(answers):
        location = answer[1]["x-amzn-sagemaker-outputlocation"]
        assert location.startswith("s3://async-out/fast/")
        bucket, _, key = location.removeprefix("s3://").partition("/")
        deadline = time.monotonic() + 30
        while True:
            try:
                assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"echo:async-%d" % i
                break
            except s3.exceptions.NoSuchKey:
                assert time.monotonic() < deadline, f"no output at {location}"
                time.sleep(0.1)
