"""Signature verification and permissions on every route (issue 10), with real clients against a real
server started with a two-section credentials file: an admin key (``*``) and an application key that
may only invoke ``prod-*`` endpoints."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.helpers import ROLE, SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, free_port, sklearn_model

ADMIN = ("AKIDADMINEXAMPLE", "admin-secret-key")
APP = ("AKIDAPPEXAMPLE", "app-secret-key")
CREDENTIALS = f"""
[admin]
aws_access_key_id = {ADMIN[0]}
aws_secret_access_key = {ADMIN[1]}
permissions = *

[app]
aws_access_key_id = {APP[0]}
aws_secret_access_key = {APP[1]}
permissions = sagemaker:InvokeEndpoint=arn:aws:sagemaker:*:*:endpoint/prod-*
"""
SIG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
S3_SIG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your key and signing method."
)
INVALID_TOKEN = "The security token included in the request is invalid."
CONFIG = Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=60)
ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("auth")
    creds = root / "credentials"
    creds.write_text(CREDENTIALS)
    srv = Server(root / "data", credentials_file=creds).start()
    try:
        yield srv
    finally:
        srv.stop()


def client(server: Server, service: str, key: tuple[str, str] = ADMIN, **kwargs: Any) -> Any:
    session = boto3.Session(aws_access_key_id=key[0], aws_secret_access_key=key[1], region_name="us-east-1")
    return session.client(service, endpoint_url=server.url, config=kwargs.pop("config", CONFIG), **kwargs)


@pytest.fixture(scope="module")
def endpoints(server: Server) -> dict[str, Any]:
    tarball, model = sklearn_model()
    s3 = client(server, "s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="model.tar.gz", Body=tarball)
    sm = client(server, "sagemaker")
    container = {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/model.tar.gz"}
    desc = deploy(sm, "prod-ep", container)
    assert desc["EndpointStatus"] == "InService", desc
    sm.create_model(ModelName="dev-ep", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    x, _ = diabetes()
    return {"model": model, "row": csv_row(x[0]), "x": x}


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Message", "")


def raw(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url, data=body if method in ("POST", "PUT") else None, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def signed(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "sagemaker",
    key: tuple[str, str] = ADMIN,
    when: datetime.datetime | None = None,
) -> AWSRequest:
    """A request signed by botocore (``when``: a shifted clock)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(Credentials(*key), service, "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            signer.add_auth(request)
    return request


def send(request: AWSRequest, url: str | None = None, body: bytes | None = None, **override: str) -> tuple[int, Any]:
    """(status, body) of the signed request sent as is or tampered with; a JSON error body gets
    the code the runtime sends in x-amzn-ErrorType as ``__type``."""
    headers = {k: v for k, v in request.headers.items()}
    headers.update(override)
    status, data, got = raw(request.method, url or request.url, headers, request.body if body is None else body)
    if status >= 400 and got.get("x-amzn-ErrorType") and data.startswith(b"{"):
        data = json.dumps({"__type": got["x-amzn-ErrorType"], **json.loads(data)}).encode()
    return status, data


def json_error(data: bytes) -> tuple[str, str]:
    doc = json.loads(data)
    return doc.get("__type", ""), doc.get("message") or doc.get("Message", "")


def s3_error(data: bytes) -> tuple[str, str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(data)
    return root.findtext("Code") or "", root.findtext("Message") or ""


# --- every service: the right key, a wrong secret, an unknown key, no signature


@pytest.mark.parametrize(
    ("service", "call", "bad_code", "unknown_code"),
    [
        ("sagemaker", lambda c: c.list_models(), "InvalidSignatureException", "UnrecognizedClientException"),
        (
            "application-autoscaling",
            lambda c: c.describe_scalable_targets(ServiceNamespace="sagemaker"),
            "InvalidSignatureException",
            "UnrecognizedClientException",
        ),
        ("sts", lambda c: c.get_caller_identity(), "SignatureDoesNotMatch", "InvalidClientTokenId"),
        ("lambda", lambda c: c.list_functions(), "InvalidSignatureException", "UnrecognizedClientException"),
        ("s3", lambda c: c.list_buckets(), "SignatureDoesNotMatch", "InvalidAccessKeyId"),
    ],
)
def test_keys_per_service(server: Server, service: str, call: Any, bad_code: str, unknown_code: str) -> None:
    call(client(server, service))
    with pytest.raises(ClientError) as info:
        call(client(server, service, (ADMIN[0], "wrong-secret")))
    code, status, message = error(info)
    assert (code, status) == (bad_code, 403)
    assert message == (S3_SIG_MISMATCH if service == "s3" else SIG_MISMATCH)
    with pytest.raises(ClientError) as info:
        call(client(server, service, ("AKIDNOBODY", "x")))
    code, status, message = error(info)
    assert (code, status) == (unknown_code, 403)
    if service == "s3":
        assert message == "The AWS Access Key Id you provided does not exist in our records."
    else:
        assert message == INVALID_TOKEN
    with pytest.raises(ClientError) as info:
        call(client(server, service, config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1})))
    code, status, message = error(info)
    expected = {
        "sagemaker": ("MissingAuthenticationTokenException", "Missing Authentication Token"),
        "application-autoscaling": ("MissingAuthenticationTokenException", "Missing Authentication Token"),
        "lambda": ("MissingAuthenticationTokenException", "Missing Authentication Token"),
        "sts": ("MissingAuthenticationToken", "Request is missing Authentication Token"),
        "s3": ("AccessDenied", "Access Denied"),
    }[service]
    assert (code, status, message) == (*expected[:1], 403, expected[1])


def test_runtime_keys_and_permissions(server: Server, endpoints: dict[str, Any]) -> None:
    row = endpoints["row"]
    for key in (ADMIN, APP):
        rt = client(server, "sagemaker-runtime", key)
        out = rt.invoke_endpoint(EndpointName="prod-ep", Body=row, ContentType="text/csv")
        assert json.loads(out["Body"].read()) == pytest.approx(
            endpoints["model"].predict(endpoints["x"][:1]).tolist(), rel=1e-4
        )
    with pytest.raises(ClientError) as info:
        client(server, "sagemaker-runtime", (APP[0], "nope")).invoke_endpoint(
            EndpointName="prod-ep", Body=row, ContentType="text/csv"
        )
    assert error(info) == ("InvalidSignatureException", 403, SIG_MISMATCH)
    with pytest.raises(ClientError) as info:  # not prod-*: denied before the endpoint is even looked up
        client(server, "sagemaker-runtime", APP).invoke_endpoint(
            EndpointName="dev-ep", Body=row, ContentType="text/csv"
        )
    assert error(info) == (
        "AccessDeniedException",
        400,
        f"User: arn:aws:iam::{ACCOUNT}:user/app is not authorized to perform: sagemaker:InvokeEndpoint on resource: "
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/dev-ep because no identity-based policy allows the "
        "sagemaker:InvokeEndpoint action",
    )
    status, data = send(signed("POST", f"{server.url}/endpoints/prod-ep/invocations", b"1,2"))  # unsigned: below
    assert status in (200, 424)
    status, data, _ = raw("POST", f"{server.url}/endpoints/prod-ep/invocations", {"Content-Type": "text/csv"}, b"1")
    assert (status, json_error(data)[1]) == (403, "Missing Authentication Token")


def test_app_key_cannot_create_or_read_s3(server: Server, endpoints: dict[str, Any]) -> None:
    sm = client(server, "sagemaker", APP)
    with pytest.raises(ClientError) as info:
        sm.create_model(ModelName="evil", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": SKLEARN_IMAGE})
    assert error(info) == (
        "AccessDeniedException",
        400,
        f"User: arn:aws:iam::{ACCOUNT}:user/app is not authorized to perform: sagemaker:CreateModel on resource: "
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/evil because no identity-based policy allows the "
        "sagemaker:CreateModel action",
    )
    with pytest.raises(ClientError) as info:
        sm.delete_endpoint(EndpointName="prod-ep")
    assert error(info)[:2] == ("AccessDeniedException", 400)
    with pytest.raises(ClientError) as info:
        client(server, "s3", APP).get_object(Bucket="models", Key="model.tar.gz")
    assert error(info) == (
        "AccessDenied",
        403,
        f"User: arn:aws:iam::{ACCOUNT}:user/app is not authorized to perform: s3:GetObject on resource: "
        '"arn:aws:s3:::models/model.tar.gz" because no identity-based policy allows the s3:GetObject action',
    )


def test_sts_returns_the_keys_identity(server: Server) -> None:
    for (access, _), name in ((ADMIN, "admin"), (APP, "app")):
        ident = client(server, "sts", ADMIN if name == "admin" else APP).get_caller_identity()
        assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/{name}"
        assert ident["UserId"] == access and ident["Account"] == ACCOUNT


# --- tampering and time


def test_tampered_body_path_query_header(server: Server, endpoints: dict[str, Any]) -> None:
    url = f"{server.url}/endpoints/prod-ep/invocations"
    request = signed("POST", url, endpoints["row"].encode(), {"Content-Type": "text/csv"})
    assert send(request)[0] == 200
    for status, data in (
        send(request, body=b"9" + endpoints["row"].encode()),  # body
        send(request, url=url.replace("prod-ep", "prod-eq")),  # path
        send(request, **{"Content-Type": "application/json"}),  # a signed header
    ):
        assert (status, json_error(data)) == (403, ("InvalidSignatureException", SIG_MISMATCH))
    listing = signed("GET", f"{server.url}/models?list-type=2&prefix=model", service="s3")
    assert send(listing)[0] == 200
    status, data = send(listing, url=listing.url.replace("prefix=model", "prefix=other"))  # query
    assert (status, s3_error(data)) == (403, ("SignatureDoesNotMatch", S3_SIG_MISMATCH))
    # S3: a body that is not the one x-amz-content-sha256 names
    put = signed("PUT", f"{server.url}/models/tampered.txt", b"original", service="s3")
    status, data = send(put, body=b"tampered")
    assert (status, s3_error(data)[0]) == (400, "XAmzContentSHA256Mismatch")
    with pytest.raises(ClientError):
        client(server, "s3").head_object(Bucket="models", Key="tampered.txt")


def test_skewed_clock(server: Server) -> None:
    stale = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    body = b"{}"
    request = signed(
        "POST",
        f"{server.url}/",
        body,
        {"X-Amz-Target": "SageMaker.ListModels", "Content-Type": "application/x-amz-json-1.1"},
        when=stale,
    )
    status, data = send(request)
    code, message = json_error(data)
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith(f"Signature expired: {stale.strftime('%Y%m%dT%H%M%SZ')} is now earlier than ")
    assert message.endswith(" - 15 min.)")
    status, data = send(signed("GET", f"{server.url}/models", service="s3", when=stale))
    assert (status, s3_error(data)) == (
        403,
        ("RequestTimeTooSkewed", "The difference between the request time and the current time is too large."),
    )


# --- S3 presigned URLs, aws-chunked uploads


def test_presigned_urls(server: Server, endpoints: dict[str, Any]) -> None:
    v2 = client(server, "s3")  # botocore presigns with SigV2 by default in us-east-1: refused
    v2.put_object(Bucket="models", Key="hello.txt", Body=b"hello")
    url = v2.generate_presigned_url("get_object", Params={"Bucket": "models", "Key": "hello.txt"})
    assert "AWSAccessKeyId=" in url
    status, data, _ = raw("GET", url)
    assert (status, s3_error(data)) == (
        400,
        (
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ),
    )
    s3 = client(server, "s3", config=Config(signature_version="s3v4", retries={"max_attempts": 1}))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "models", "Key": "hello.txt"}, ExpiresIn=300)
    assert raw("GET", url)[:2] == (200, b"hello")
    status, data, _ = raw("GET", url.replace("hello.txt", "model.tar.gz"))
    assert (status, s3_error(data)) == (403, ("SignatureDoesNotMatch", S3_SIG_MISMATCH))
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "models", "Key": "up.txt"}, ExpiresIn=300)
    assert raw("PUT", put_url, body=b"uploaded")[0] == 200
    assert s3.get_object(Bucket="models", Key="up.txt")["Body"].read() == b"uploaded"
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "models", "Key": "hello.txt"}, ExpiresIn=1)
    time.sleep(2.1)
    status, data, _ = raw("GET", short)
    assert (status, s3_error(data)) == (403, ("AccessDenied", "Request has expired"))
    sigv2 = "AWS " + ADMIN[0] + ":c2lnbmF0dXJl"
    status, data, _ = raw("GET", f"{server.url}/models/hello.txt", {"Authorization": sigv2})
    assert (status, s3_error(data)) == (
        400,
        (
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ),
    )


def test_upload_file_20mb(server: Server, endpoints: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(20 * 1024 * 1024)
    path.write_bytes(data)
    s3 = client(server, "s3")
    s3.upload_file(str(path), "models", "big.bin")  # multipart (8 MB parts), each part signed
    assert (
        hashlib.md5(s3.get_object(Bucket="models", Key="big.bin")["Body"].read()).digest() == hashlib.md5(data).digest()
    )


class _StreamingSigner(S3SigV4Auth):
    def payload(self, request: Any) -> str:
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def _aws_chunked(server: Server, key: str, chunks: list[bytes], tamper: int | None = None) -> tuple[int, bytes]:
    """A signed aws-chunked PUT (what the Java / Go SDKs send), each chunk signed, the chain from the seed."""
    total = sum(len(c) for c in chunks)
    encoded_len = sum(len(f"{len(c):x};chunk-signature=".encode()) + 64 + 2 + len(c) + 2 for c in [*chunks, b""])
    request = AWSRequest(
        method="PUT",
        url=f"{server.url}/models/{key}",
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(total),
            "Content-Length": str(encoded_len),
        },
    )
    _StreamingSigner(Credentials(*ADMIN), "s3", "us-east-1").add_auth(request)
    ts = request.headers["X-Amz-Date"]
    scope = f"{ts[:8]}/us-east-1/s3/aws4_request"
    k = ("AWS4" + ADMIN[1]).encode()
    for part in (ts[:8], "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    previous = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    body = b""
    empty = hashlib.sha256(b"").hexdigest()
    for i, chunk in enumerate([*chunks, b""]):
        sts = f"AWS4-HMAC-SHA256-PAYLOAD\n{ts}\n{scope}\n{previous}\n{empty}\n{hashlib.sha256(chunk).hexdigest()}"
        previous = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        sent = chunk[:-1] + b"X" if i == tamper else chunk
        body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
    assert len(body) == encoded_len
    headers = {k2: v for k2, v in request.headers.items()}
    status, data, _ = raw("PUT", request.url, headers, body)
    return status, data


def test_signed_aws_chunked_upload_and_a_tampered_chunk(server: Server, endpoints: dict[str, Any]) -> None:
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), b"tail"]
    status, data = _aws_chunked(server, "chunked.bin", chunks)
    assert status == 200, data
    s3 = client(server, "s3")
    assert s3.get_object(Bucket="models", Key="chunked.bin")["Body"].read() == b"".join(chunks)
    status, data = _aws_chunked(server, "tampered.bin", chunks, tamper=1)
    assert (status, s3_error(data)) == (403, ("SignatureDoesNotMatch", S3_SIG_MISMATCH))
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="models", Key="tampered.bin")
    assert error(info)[1] == 404


# --- other clients


def test_aws_cli(server: Server, endpoints: dict[str, Any]) -> None:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ADMIN[0]}
    env.pop("AWS_PROFILE", None)
    aws = str(Path(sys.executable).parent / "aws")
    args = [aws, "sagemaker", "list-models", "--endpoint-url", server.url]
    ok = subprocess.run(
        args, env={**env, "AWS_SECRET_ACCESS_KEY": ADMIN[1]}, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert "prod-ep" in ok.stdout
    bad = subprocess.run(
        args, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"}, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "InvalidSignatureException" in bad.stderr


def test_sagemaker_sdk_deploys_and_invokes(server: Server, endpoints: dict[str, Any], monkeypatch: Any) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer

    import modelhost

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ADMIN[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ADMIN[1])
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    sess = modelhost.sagemaker_session(server.url)
    model = Model(
        image_uri=SKLEARN_IMAGE,
        model_data="s3://models/model.tar.gz",
        role=ROLE,
        sagemaker_session=sess,
        name="prod-sdk",
    )
    model.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="prod-sdk")
    predictor = Predictor(
        "prod-sdk", sagemaker_session=sess, serializer=CSVSerializer(), deserializer=JSONDeserializer()
    )
    out = predictor.predict(endpoints["row"])
    assert out == pytest.approx(endpoints["model"].predict(endpoints["x"][:1]).tolist(), rel=1e-4)
    predictor.delete_endpoint()


# --- our own routes, the audit log


def test_logs_route_needs_a_signature(server: Server, endpoints: dict[str, Any]) -> None:
    url = f"{server.url}/modelhost/endpoints/prod-ep/logs?offset=0"
    status, data, _ = raw("GET", url)
    assert (status, json_error(data)) == (403, ("MissingAuthenticationTokenException", "Missing Authentication Token"))
    assert send(signed("GET", url))[0] == 200
    status, data = send(signed("GET", url, key=APP))
    assert status == 400 and "logs:GetLogEvents" in json_error(data)[1]
    assert raw("GET", f"{server.url}/ping")[0] == 200  # liveness stays open


def test_modelhost_logs_cli_signs_its_requests(server: Server, endpoints: dict[str, Any]) -> None:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ADMIN[0]}
    env.pop("AWS_PROFILE", None)
    cli = [sys.executable, "-m", "modelhost.cli", "logs", "prod-ep", "--url", server.url]
    ok = subprocess.run(cli, env={**env, "AWS_SECRET_ACCESS_KEY": ADMIN[1]}, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "endpoint is InService" in ok.stdout
    bad = subprocess.run(cli, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "InvalidSignatureException" in bad.stdout + bad.stderr


def test_audit_log(server: Server, endpoints: dict[str, Any]) -> None:
    lines = [json.loads(x) for x in (server.data_dir / "logs" / "audit.jsonl").read_text().splitlines()]
    actions = [(e["key"], e["action"], e["resource"], e["result"]) for e in lines]
    model_arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/prod-ep"
    assert ("admin", "sagemaker:CreateModel", model_arn, "success") in actions
    assert ("admin", "sagemaker:CreateEndpoint", model_arn.replace("model/", "endpoint/"), "success") in actions
    assert ("admin", "s3:PutObject", "arn:aws:s3:::models/model.tar.gz", "success") in actions
    assert all(e["key"] != "app" for e in lines)  # denials are not accepted calls; invokes do not mutate
    assert not any(a == "sagemaker:InvokeEndpoint" or a.startswith("sagemaker:Describe") for _, a, _, _ in actions)
    assert oct(os.stat(server.data_dir / "logs" / "audit.jsonl").st_mode & 0o777) == "0o600"


# --- serve without credentials


def test_serve_refuses_a_public_host_without_credentials(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "modelhost.cli", "serve", "--data-dir", str(tmp_path / "d"), "--port"]
    refused = subprocess.run([*base, str(free_port()), "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "not a loopback address" in refused.stderr and "--insecure" in refused.stderr
    port = free_port()
    proc = subprocess.Popen([*base, str(port), "--host", "0.0.0.0", "--insecure"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.2)
        else:
            pytest.fail("serve --insecure did not start")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "requests are not authenticated" in err


def test_lambda_functions_need_the_permission(server: Server) -> None:
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {'echo': event}\n")
    admin = client(server, "lambda")
    admin.create_function(
        FunctionName="auth-fn",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": code.getvalue()},
    )
    admin.get_waiter("function_active_v2").wait(FunctionName="auth-fn", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    out = admin.invoke(FunctionName="auth-fn", Payload=b'{"x": 1}')
    assert json.loads(out["Payload"].read()) == {"echo": {"x": 1}}
    app = client(server, "lambda", APP)  # may invoke prod-* endpoints only
    for call in (
        lambda: app.invoke(FunctionName="auth-fn", Payload=b"{}"),
        lambda: app.delete_function(FunctionName="auth-fn"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        code_, status, message = error(info)
        assert (code_, status) == ("AccessDeniedException", 403), message
        assert f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:auth-fn" in message
    with pytest.raises(ClientError) as info:
        client(server, "lambda", (APP[0], "nope")).invoke(FunctionName="auth-fn", Payload=b"{}")
    assert error(info)[:2] == ("InvalidSignatureException", 403)
    admin.delete_function(FunctionName="auth-fn")
