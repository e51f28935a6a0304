"""The Lambda API against a real server with boto3's ``lambda`` client and the AWS CLI: seed 001 (a
spaCy NER handler loading its model from S3) end to end, then the same model as a serverless
SageMaker endpoint; function errors, timeouts, throttling, Event / DryRun / Tail, waiters, updates,
listing, tags, concurrency, bad requests, and scale to zero."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from tests.helpers import ROLE, Server
from tests.integration.test_runtimes import OFFLINE_PIP, SPACY_ENTS, SPACY_IMAGE, SPACY_TEXT, spacy_pipeline_files
from tests.integration.test_serverless import instance_pids, logged_pids, wait_until
from tests.runtime_artifacts import make_wheel

IDLE = 3

# Seed 001's science_ie.py, with the model fetched from S3 by boto3 (AWS_ENDPOINT_URL points at
# modelhost) instead of an https URL, and the cache dir from the environment instead of /mnt.
SEED_HANDLER = """
import os
from pathlib import Path
from zipfile import ZipFile

import boto3
import spacy


def download(model, dest):
    save_path = Path(dest) / model
    if not os.path.exists(save_path):
        print("Downloading...")
        filename = Path(dest) / f"{model}.zip"
        boto3.client("s3").download_file("lambda-models", f"{model}.zip", str(filename))
        with ZipFile(filename, "r") as f:
            f.extractall(path=dest)
            print("finished extracting")
    return save_path


def handler(event, context):
    doc = nlp(event["text"])
    response = [
        {"text": ent.text, "label": ent.label_, "start": ent.start_char, "end": ent.end_char}
        for ent in doc.ents
    ]
    return response


model = "model-last"
mnt_path = os.environ["MODEL_CACHE"]
model_path = download(model, mnt_path)
nlp = spacy.load(model_path)
"""

TOOLS = """
import json, os, time
import boto3

INIT_PID = os.getpid()
CALLS = 0


def context_handler(event, context):
    global CALLS
    CALLS += 1
    print("seen", json.dumps(event))
    keys = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_ENDPOINT_URL", "GREETING"]
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "env": {k: os.environ.get(k) for k in keys},
        "pid": INIT_PID,
        "calls": CALLS,
        "cwd": os.getcwd(),
    }


def failing(event, context):
    raise ValueError("bad input: " + str(event.get("x")))


def sleepy(event, context):
    time.sleep(event.get("sleep", 0))
    return {"slept": event.get("sleep", 0)}


def to_s3(event, context):
    boto3.client("s3").put_object(Bucket="lambda-out", Key="events/" + context.aws_request_id, Body=json.dumps(event))
    return "stored"
"""


def zipped(files: dict[str, str | bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("lam") / "data",
        env={"MODELHOST_SERVERLESS_IDLE_SECONDS": str(IDLE), "MODELHOST_RECONCILE_INTERVAL": "0.5"},
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    return session.client(
        "lambda", endpoint_url=server.url, config=Config(read_timeout=120, retries={"max_attempts": 0})
    )


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    client = session.client("s3", endpoint_url=server.url)
    client.create_bucket(Bucket="lambda-out")
    return client


def create(lam: Any, name: str, handler: str, code: bytes, **extra: Any) -> dict:
    resp = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler=handler,
        Code={"ZipFile": code},
        **extra,
    )
    assert resp["State"] == "Pending"
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return resp


def invoke(lam: Any, name: str, event: Any, **extra: Any) -> tuple[dict, Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **extra)
    return resp, json.loads(resp["Payload"].read())


@pytest.fixture(scope="module")
def tools(lam: Any, s3: Any) -> str:
    code = zipped({"tools.py": TOOLS})
    for name, handler, extra in [
        ("ctx", "tools.context_handler", {"Environment": {"Variables": {"GREETING": "hi"}}, "MemorySize": 256}),
        ("fails", "tools.failing", {}),
        ("sleepy", "tools.sleepy", {"Timeout": 1}),
        ("events", "tools.to_s3", {}),
    ]:
        create(lam, name, handler, code, **extra)
    return "ok"


@pytest.mark.slow
def test_seed_001_spacy_function_and_serverless_endpoint(server: Server, lam: Any, s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="lambda-models")
    pipeline = {k: v for k, v in spacy_pipeline_files().items()}
    s3.put_object(Bucket="lambda-models", Key="model-last.zip", Body=zipped(pipeline))
    resp = create(
        lam,
        "science-ie",
        "science_ie.handler",
        zipped({"science_ie.py": SEED_HANDLER}),
        MemorySize=2048,
        Timeout=60,
        Environment={"Variables": {"MODEL_CACHE": str(tmp_path)}},
    )
    assert resp["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:science-ie"
    out, ents = invoke(lam, "science-ie", {"text": SPACY_TEXT})
    assert out["StatusCode"] == 200 and "FunctionError" not in out
    assert ents == SPACY_ENTS
    assert (tmp_path / "model-last" / "config.cfg").is_file()  # downloaded through boto3 from our S3
    # ... and the same model as a SageMaker serverless endpoint with the spaCy runtime.
    sm, rt = server.clients()
    tar = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=tar, mode="w:gz") as tf:
        for name, data in pipeline.items():
            info = tarfile.TarInfo(name)
            raw = data.encode() if isinstance(data, str) else data
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    s3.put_object(Bucket="lambda-models", Key="spacy/model.tar.gz", Body=tar.getvalue())
    sm.create_model(
        ModelName="science-ie",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SPACY_IMAGE, "ModelDataUrl": "s3://lambda-models/spacy/model.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="science-ie",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "science-ie",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="science-ie", EndpointConfigName="science-ie")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="science-ie", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    body = rt.invoke_endpoint(
        EndpointName="science-ie", Body=json.dumps({"text": SPACY_TEXT}), ContentType="application/json"
    )["Body"].read()
    assert json.loads(body) == ents
    assert "from the spacy template" in server.logs("science-ie")


def test_context_environment_and_warm_reuse(lam: Any, tools: str) -> None:
    out, first = invoke(lam, "ctx", {"a": 1}, LogType="Tail")
    assert first["function_name"] == "ctx"
    assert first["function_version"] == "$LATEST"
    assert first["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:ctx"
    assert first["memory_limit_in_mb"] == 256
    assert first["log_group_name"] == "/aws/lambda/ctx"
    assert "[$LATEST]" in first["log_stream_name"]
    assert 0 < first["remaining"] <= 3000
    assert first["aws_request_id"] == out["ResponseMetadata"]["RequestId"]
    env = first["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "ctx" and env["AWS_REGION"] == "us-east-1"
    assert env["GREETING"] == "hi" and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert first["cwd"] == env["LAMBDA_TASK_ROOT"]
    tail = base64.b64decode(out["LogResult"]).decode()
    assert f"START RequestId: {first['aws_request_id']}" in tail and 'seen {"a": 1}' in tail and "REPORT" in tail
    _, second = invoke(lam, "ctx", {})
    assert second["pid"] == first["pid"] and second["calls"] == 2  # init ran once: a warm, reused process
    dry = lam.invoke(FunctionName="ctx", InvocationType="DryRun")
    assert dry["StatusCode"] == 204


def test_logs_in_cloudwatch_group(server: Server, lam: Any, tools: str) -> None:
    invoke(lam, "ctx", {"logged": True})
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    logs = session.client("logs", endpoint_url=server.url)
    streams = logs.describe_log_streams(logGroupName="/aws/lambda/ctx")["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["[$LATEST]ctx"]
    events = logs.get_log_events(logGroupName="/aws/lambda/ctx", logStreamName="[$LATEST]ctx", startFromHead=True)
    messages = [e["message"] for e in events["events"]]
    assert any(m.startswith("START RequestId: ") for m in messages)
    assert any(m.startswith("REPORT RequestId: ") and "Max Memory Used" in m for m in messages)
    assert 'seen {"logged": true}' in messages
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.describe_log_streams(logGroupName="/aws/lambda/nope")


def test_modelhost_logs_of_a_function(server: Server, lam: Any, tools: str) -> None:
    invoke(lam, "ctx", {"cli": True})
    exe = str(Path(sys.executable).parent / "modelhost")
    proc = subprocess.run(
        [exe, "logs", "--function", "ctx", "--url", server.url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert 'seen {"cli": true}' in proc.stdout
    assert "REPORT RequestId: " in proc.stdout
    missing = subprocess.run(
        [exe, "logs", "--function", "nope", "--url", server.url], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and "No logs for function nope." in missing.stderr
    bad = subprocess.run(
        [exe, "logs", "--function", "no.dots", "--url", server.url], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "functionName" in bad.stderr


def test_function_error_is_200_unhandled(lam: Any, tools: str) -> None:
    out, body = invoke(lam, "fails", {"x": 7})
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert body["errorMessage"] == "bad input: 7"
    assert body["errorType"] == "ValueError"
    assert isinstance(body["stackTrace"], list) and any("tools.py" in line for line in body["stackTrace"])


def test_timeout(lam: Any, tools: str) -> None:
    out, body = invoke(lam, "sleepy", {"sleep": 3})
    assert out["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    out, body = invoke(lam, "sleepy", {"sleep": 0})  # a fresh instance answers
    assert body == {"slept": 0} and "FunctionError" not in out


def test_reserved_concurrency_throttles_with_429(lam: Any, tools: str) -> None:
    assert (
        lam.put_function_concurrency(FunctionName="sleepy", ReservedConcurrentExecutions=1)[
            "ReservedConcurrentExecutions"
        ]
        == 1
    )
    assert lam.get_function_concurrency(FunctionName="sleepy")["ReservedConcurrentExecutions"] == 1
    time.sleep(1.5)  # the control loop applies it
    outcomes: list[str] = []

    def call() -> None:
        try:
            invoke(lam, "sleepy", {"sleep": 0.8})
            outcomes.append("ok")
        except botocore.exceptions.ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            assert exc.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
            outcomes.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["TooManyRequestsException"] * 2 + ["ok"], outcomes
    lam.delete_function_concurrency(FunctionName="sleepy")
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="sleepy")


def test_event_invocations_run_once(lam: Any, s3: Any, tools: str) -> None:
    ids = []
    for i in range(3):
        resp = lam.invoke(FunctionName="events", InvocationType="Event", Payload=json.dumps({"i": i}).encode())
        assert resp["StatusCode"] == 202
        ids.append(resp["ResponseMetadata"]["RequestId"])

    def stored() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket="lambda-out", Prefix="events/").get("Contents", [])]

    wait_until(lambda: len(stored()) >= 3, 30, "event invocations")
    time.sleep(1)
    assert sorted(stored()) == sorted(f"events/{i}" for i in ids)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        lam.invoke(FunctionName="events", InvocationType="Event", Payload=b'{"x": "' + b"a" * 262144 + b'"}')
    assert info.value.response["Error"]["Code"] == "RequestTooLargeException"


def test_update_code_and_configuration_with_waiters(lam: Any) -> None:
    create(lam, "upd", "app.handler", zipped({"app.py": "def handler(e, c):\n    return 'v1'\n"}))
    assert invoke(lam, "upd", {})[1] == "v1"
    resp = lam.update_function_code(
        FunctionName="upd", ZipFile=zipped({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    )
    assert resp["LastUpdateStatus"] == "InProgress"
    lam.get_waiter("function_updated_v2").wait(FunctionName="upd", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert invoke(lam, "upd", {})[1] == "v2"
    lam.update_function_configuration(FunctionName="upd", Environment={"Variables": {"K": "V"}}, Timeout=5)
    lam.get_waiter("function_updated_v2").wait(FunctionName="upd", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    config = lam.get_function_configuration(FunctionName="upd")
    assert config["Timeout"] == 5 and config["Environment"] == {"Variables": {"K": "V"}}
    assert config["State"] == "Active" and config["LastUpdateStatus"] == "Successful"


def test_list_get_tags_delete(lam: Any, tools: str) -> None:
    names = []
    marker = None
    while True:
        page = lam.list_functions(MaxItems=2, **({"Marker": marker} if marker else {}))
        names += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert {"ctx", "fails", "sleepy", "events"} <= set(names) and len(names) == len(set(names))
    arn = lam.get_function(FunctionName="fails")["Configuration"]["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"team": "nlp"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "nlp"}
    assert lam.get_function(FunctionName="fails")["Tags"] == {"team": "nlp"}
    lam.untag_resource(Resource=arn, TagKeys=["team"])
    assert lam.list_tags(Resource=arn)["Tags"] == {}
    create(lam, "gone", "app.handler", zipped({"app.py": "def handler(e, c):\n    return 1\n"}))
    lam.delete_function(FunctionName="gone")
    for call in (lambda: lam.get_function(FunctionName="gone"), lambda: invoke(lam, "gone", {})):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as info:
            call()
        assert "Function not found: arn:aws:lambda:us-east-1:123456789012:function:gone" in str(info.value)


def test_bad_requests(lam: Any) -> None:
    code = zipped({"app.py": "def handler(e, c):\n    return 1\n"})
    base = {"FunctionName": "bad", "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler"}
    cases = [
        (
            {**base, "PackageType": "Image", "Code": {"ImageUri": "123.dkr.ecr.us-east-1.amazonaws.com/x:1"}},
            "InvalidParameterValueException",
            "Zip",
        ),
        ({**base, "Code": {"ZipFile": code}, "MemorySize": 20000}, "ValidationException", "memorySize"),
        (
            {**base, "Code": {"ZipFile": code}, "Environment": {"Variables": {"AWS_REGION": "x"}}},
            "InvalidParameterValueException",
            "AWS_REGION",
        ),
        ({**base, "Code": {"ZipFile": b"not a zip"}}, "InvalidParameterValueException", "unzip"),
        ({**base, "Runtime": "nodejs20.x", "Code": {"ZipFile": code}}, "InvalidParameterValueException", "nodejs20.x"),
    ]
    for request, error, words in cases:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            lam.create_function(**request)
        assert info.value.response["Error"]["Code"] == error, request
        assert words in info.value.response["Error"]["Message"]
    create(lam, "dup", "app.handler", code)
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function(**{**base, "FunctionName": "dup", "Code": {"ZipFile": code}})
    with pytest.raises(botocore.exceptions.ClientError) as info:
        lam.invoke(FunctionName="dup", Payload=b"{not json")
    assert info.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_aws_cli_invoke(server: Server, tools: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1"}
    import os

    proc = subprocess.run(
        [
            "aws",
            "lambda",
            "invoke",
            "--function-name",
            "fails",
            "--payload",
            '{"x": 1}',
            "--endpoint-url",
            server.url,
            str(out),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(proc.stdout)["FunctionError"] == "Unhandled"
    assert json.loads(out.read_text())["errorMessage"] == "bad input: 1"


def test_functions_scale_to_zero(server: Server, lam: Any, tools: str) -> None:
    invoke(lam, "ctx", {})
    assert instance_pids(server)
    wait_until(lambda: not _function_pids(server, "ctx"), IDLE + 10, "the function to scale to zero")
    assert invoke(lam, "ctx", {})[1]["calls"] == 1  # a new instance: init ran again


def _function_pids(server: Server, name: str) -> set[int]:
    log = server.data_dir / "logs" / "lambda" / f"{name}.log"
    return logged_pids(server, log.read_text() if log.exists() else "")


def function_log(server: Server, name: str) -> str:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    logs = session.client("logs", endpoint_url=server.url)
    group = f"/aws/lambda/{name}"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    return "\n".join(
        e["message"]
        for s in streams
        for e in logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"], startFromHead=True)["events"]
    )


REQS_APP = """
import mhreqpkg


def handler(event, context):
    return {"greeting": mhreqpkg.GREETING, "where": mhreqpkg.__file__}
"""


def test_requirements_txt_in_the_zip_is_installed_once_per_content(server: Server, lam: Any, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "mhreqpkg", "1.0", "GREETING = 'hello from a zipped wheel'\n")
    code = zipped(
        {"app.py": REQS_APP, "requirements.txt": f"wheels/{wheel.name}\n", f"wheels/{wheel.name}": wheel.read_bytes()}
    )
    env = {"Environment": {"Variables": OFFLINE_PIP}}
    create(lam, "reqs-a", "app.handler", code, **env)
    create(lam, "reqs-b", "app.handler", code, **env)
    _, first = invoke(lam, "reqs-a", {})
    assert first["greeting"] == "hello from a zipped wheel"
    _, second = invoke(lam, "reqs-b", {})
    # same requirements content: the second function's cold start reuses the first one's install
    assert second == first
    assert "installed 1 package(s)" in function_log(server, "reqs-a")
    assert "reusing the packages" in function_log(server, "reqs-b")

    broken = zipped({"app.py": REQS_APP, "requirements.txt": "no-such-package-xyz==9.9\n"})
    create(lam, "reqs-broken", "app.handler", broken, **env)
    resp, body = invoke(lam, "reqs-broken", {})
    # as Lambda answers an init failure: 200, FunctionError Unhandled, the reason in errorMessage
    assert (resp["StatusCode"], resp.get("FunctionError")) == (200, "Unhandled"), body
    assert "Failed to install requirements.txt" in body["errorMessage"], body
    assert "no-such-package-xyz==9.9" in body["errorMessage"], body
    for name in ("reqs-a", "reqs-b", "reqs-broken"):
        lam.delete_function(FunctionName=name)
