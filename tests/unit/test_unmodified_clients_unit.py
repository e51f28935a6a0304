"""The pieces that let unmodified clients target modelhost, without a server: IAM/STS answers parsed by
botocore's own query parser, the waiting Describe*, ``modelhost env``'s output, the botocore plugin."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import boto3
import botocore.parsers
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from modelhost import botocore_plugin, client_env
from modelhost.config import Settings
from modelhost.security.credentials import CredentialsError, parse_credentials
from modelhost.server import client_config, iam, long_poll
from modelhost.server.access import Caller
from modelhost.server.asgi import CALLER
from modelhost.server.sts import StsApp


def _call(app: Any, params: dict[str, str], scope_extra: dict[str, Any] | None = None) -> tuple[int, bytes]:
    body = urlencode(params).encode()
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b"", **(scope_extra or {})}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def _parse(service: str, operation: str, status: int, body: bytes) -> dict[str, Any]:
    """The answer as botocore's parser for that service reads it (what boto3 would return or raise)."""
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    model = client.meta.service_model.operation_model(operation)
    parser = botocore.parsers.create_parser(model.metadata["protocol"])
    parsed: dict[str, Any] = parser.parse(
        {"status_code": status, "headers": {}, "body": body, "context": {}}, model.output_shape
    )
    return parsed


def test_iam_get_role_and_errors_parse_as_botocore_reads_them() -> None:
    app = iam.IamApp("modelhost", "123456789012")
    status, body = _call(app, {"Action": "GetRole", "Version": iam.VERSION, "RoleName": "modelhost"})
    role = _parse("iam", "GetRole", status, body)["Role"]
    assert status == 200 and role["Arn"] == "arn:aws:iam::123456789012:role/modelhost"
    assert role["RoleId"].startswith("AROA") and json.loads(unquote(role["AssumeRolePolicyDocument"]))["Version"]
    status, body = _call(app, {"Action": "GetRole", "Version": iam.VERSION, "RoleName": "other"})
    err = _parse("iam", "GetRole", status, body)["Error"]
    assert (status, err["Code"]) == (404, "NoSuchEntity") and "other" in err["Message"]
    status, body = _call(app, {"Action": "CreateUser", "Version": iam.VERSION, "UserName": "x"})
    assert (status, _parse("iam", "CreateUser", status, body)["Error"]["Code"]) == (400, "InvalidAction")
    status, body = _call(app, {"Action": "GetRole", "Version": iam.VERSION})
    assert (status, _parse("iam", "GetRole", status, body)["Error"]["Code"]) == (400, "ValidationError")
    listed = _parse("iam", "ListRoles", *_call(app, {"Action": "ListRoles", "Version": iam.VERSION}))
    assert [r["RoleName"] for r in listed["Roles"]] == ["modelhost"]


def test_sts_answers_an_assumed_role_and_hands_unsigned_iam_on() -> None:
    app = StsApp("123456789012", "ml-role")
    out = _parse("sts", "GetCallerIdentity", *_call(app, {"Action": "GetCallerIdentity", "Version": "2011-06-15"}))
    assert out["Arn"] == "arn:aws:sts::123456789012:assumed-role/ml-role/modelhost"
    assert out["UserId"].endswith(":modelhost") and out["Account"] == "123456789012"
    status, body = _call(app, {"Action": "GetRole", "Version": iam.VERSION, "RoleName": "ml-role"})
    assert _parse("iam", "GetRole", status, body)["Role"]["RoleName"] == "ml-role"


def test_a_key_with_a_role_is_a_session_of_it() -> None:
    keys = parse_credentials(
        "[app]\naws_access_key_id = AKAPP\naws_secret_access_key = s\nrole = deployer\n"
        "[plain]\naws_access_key_id = AKPLAIN\naws_secret_access_key = s\n",
        "123456789012",
    )
    app = StsApp("123456789012")
    for access_key, arn in (
        ("AKAPP", "arn:aws:sts::123456789012:assumed-role/deployer/app"),
        ("AKPLAIN", "arn:aws:iam::123456789012:user/plain"),
    ):
        key = keys.get(access_key)
        assert key is not None
        caller = Caller(access_key, "us-east-1", key.name, key.account, key)
        params = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
        assert _parse("sts", "GetCallerIdentity", *_call(app, params, {CALLER: caller}))["Arn"] == arn
    with pytest.raises(CredentialsError, match="role must be an IAM role name"):
        parse_credentials("[a]\naws_access_key_id = K\naws_secret_access_key = s\nrole = a/b\n", "1")


def test_only_waiting_clients_wait() -> None:
    waiter_ua = "Boto3/1.44 md/Botocore#1.44 ua/2.1 os/linux m/B,E,g botocore/1.44"
    assert long_poll.is_waiting(waiter_ua)
    assert long_poll.is_waiting("Boto3/1.44 m/E,g lib/AWS-SageMaker-Python-SDK#2.257.7")
    assert not long_poll.is_waiting("Boto3/1.44 ua/2.1 m/E,g,N botocore/1.44")
    assert not long_poll.is_waiting(None)
    creating = {"EndpointName": "e", "EndpointStatus": "Creating"}
    assert long_poll.applies("DescribeEndpoint", waiter_ua, creating)
    assert not long_poll.applies("DescribeEndpoint", waiter_ua, {"EndpointStatus": "InService"})
    assert not long_poll.applies("ListEndpoints", waiter_ua, creating)
    assert long_poll.applies("DescribeProcessingJob", waiter_ua, {"ProcessingJobStatus": "InProgress"})


def test_the_wait_ends_at_the_change_or_the_bound() -> None:
    states = iter(["Creating", "Creating", "InService"])
    calls: list[str] = []

    async def describe() -> dict[str, Any]:
        status = next(states)
        calls.append(status)
        return {"EndpointStatus": status, "ModelhostProgress": len(calls)}

    first = {"EndpointStatus": "Creating", "ModelhostProgress": 0}
    got = asyncio.run(long_poll.until_changed(describe, first, max_wait=5, interval=0.01))
    assert got["EndpointStatus"] == "InService" and calls == ["Creating", "Creating", "InService"]

    async def never() -> dict[str, Any]:
        return {"TransformJobStatus": "InProgress"}

    got = asyncio.run(long_poll.until_changed(never, {"TransformJobStatus": "InProgress"}, 0.05, interval=0.01))
    assert got == {"TransformJobStatus": "InProgress"}
    assert asyncio.run(long_poll.until_changed(never, {"TransformJobStatus": "InProgress"}, 0)) is not None


def test_sdk_defaults_file_and_env_lines(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, region="eu-west-1", account_id="111122223333")
    path = client_config.write_sdk_defaults(settings)
    doc = json.loads(path.read_text())
    import yaml  # what the SDK reads it with

    assert yaml.safe_load(path.read_text()) == doc
    assert doc["SageMaker"]["PythonSDK"]["Modules"]["Session"]["DefaultS3Bucket"] == "sagemaker-eu-west-1-111122223333"
    info = client_env.ServerInfo("eu-west-1", "111122223333", settings.role_arn, False, str(path), doc)
    env, warning = client_env.variables("http://127.0.0.1:9/", info, str(path))
    assert warning is None and env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and env["AWS_ACCESS_KEY_ID"]
    sh = client_env.render({"A": "it's", "B": ""}, "sh")
    assert subprocess.run(["sh", "-c", sh + 'printf "%s|%s" "$A" "$B"'], capture_output=True, text=True).stdout == (
        "it's|"
    )
    assert client_env.render({"A": "x y"}, "dotenv") == 'A="x y"\n'
    assert client_env.render({"A": "v"}, "fish") == "set -gx A 'v';\n"
    assert client_env.render({"A": "it's"}, "powershell") == "$Env:A = 'it''s'\n"


def test_cli_env_refuses_an_unknown_shell() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", "env", "--url", "http://127.0.0.1:9", "--shell", "tcsh"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "--shell must be one of sh, fish, powershell, dotenv" in proc.stderr


def test_plugin_moves_only_explicit_aws_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    session = botocore.session.get_session()
    sent: list[str] = []

    def capture(request: Any, **_: Any) -> AWSResponse:
        auth = request.headers["Authorization"]
        sent.append(f"{request.url} auth={auth.decode() if isinstance(auth, bytes) else auth}")
        raise ClientError({"Error": {"Code": "Captured", "Message": ""}}, "x")

    for url in ("https://sts.us-east-1.amazonaws.com", "https://example.com"):
        client = session.create_client(
            "sts", region_name="us-east-1", endpoint_url=url, aws_access_key_id="a", aws_secret_access_key="b"
        )
        botocore_plugin.initialize_client_plugin(client)
        client.meta.events.register("before-send", capture)
        with pytest.raises(ClientError):
            client.get_caller_identity()
    assert sent[0].startswith("http://127.0.0.1:9/ ")
    assert "/sts/aws4_request" in sent[0]
    assert sent[1].startswith("https://example.com/")  # not an AWS URL: the user's own choice stays
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    client = session.create_client(
        "sts",
        region_name="us-east-1",
        endpoint_url="https://sts.us-east-1.amazonaws.com",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    botocore_plugin.initialize_client_plugin(client)
    client.meta.events.register("before-send", capture)
    with pytest.raises(ClientError):
        client.get_caller_identity()
    assert sent[2].startswith("https://sts.us-east-1.amazonaws.com/")
