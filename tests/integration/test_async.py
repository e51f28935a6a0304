"""Asynchronous inference (issue 6) against a real server: the seed's boto3 flow, the SDK flow,
SNS (moto's server) and webhook notifications, failures (model error, timeout, missing input,
TTL expiry), a 200 MB payload, scale to zero and back, validation, and kill -9 durability."""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.exceptions import ClientError

import modelhost
from tests.helpers import PYTHON_IMAGE, ROLE, Server, free_port, stored_keys, tarball, wait_status

pytestmark = pytest.mark.slow
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

# The body's first bytes pick a behaviour; anything else is answered upper-cased.
MODEL = """
import os
import time


def model_fn(model_dir):
    return None


def input_fn(data, content_type):
    return data


def predict_fn(data, model):
    if isinstance(data, str):
        data = data.encode()
    head = bytes(data[:64])
    if head.startswith(b"fail"):
        raise RuntimeError("model says no")
    if head.startswith(b"sleep:"):
        time.sleep(float(head.split(b":")[1].split(b" ")[0]))
    if head.startswith(b"append:"):
        with open(os.environ["APPEND_FILE"], "a") as f:
            f.write(head.decode().split(":")[1].strip() + "\\n")
        time.sleep(float(os.environ.get("APPEND_SLEEP", "0.3")))
    if len(data) > 1024 * 1024:
        return data  # large payloads are echoed
    return bytes(data).upper()


def output_fn(prediction, accept):
    return prediction, accept if accept and accept.startswith("application/x-") else "text/plain"
"""
MODEL_URI = "s3://models/async/model.tar.gz"
BUCKET = "async-results"
ACCOUNT = "123456789012"


def wait_for(pred: Callable[[], Any], timeout: float = 30, what: str = "condition", poll: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


# --- external parties: moto's SNS server and a webhook receiver on loopback -----------------------


class Moto:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        self.log = open(tmp / "moto.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                assert self.proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        session = boto3.Session(aws_access_key_id="moto", aws_secret_access_key="moto", region_name="us-east-1")
        self.sns = session.client("sns", endpoint_url=self.url)
        self.sqs = session.client("sqs", endpoint_url=self.url)

    def topic_with_queue(self, name: str) -> tuple[str, str]:
        """(topic ARN, SQS queue URL subscribed to it with raw delivery)."""
        arn = self.sns.create_topic(Name=name)["TopicArn"]
        queue = self.sqs.create_queue(QueueName=f"{name}-q")["QueueUrl"]
        qarn = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
        return arn, queue

    def messages(self, queue: str) -> list[dict]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            msgs = got.get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


class Webhook:
    """Collects every JSON POST by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    hook.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [m for p, m in self.received if p == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    m = Moto(tmp_path_factory.mktemp("moto"))
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto: Moto) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("async") / "data",
        env={
            "MODELHOST_SNS_ENDPOINT_URL": moto.url,
            "MODELHOST_AUTOSCALE_INTERVAL": "0.5",
            "MODELHOST_AUTOSCALE_WINDOW": "2",
            "MODELHOST_STOP_GRACE": "5",
            "MODELHOST_WEBHOOK_ALLOW": "127.0.0.1",  # the test webhook receivers
        },
    ).start()
    srv.put_object(MODEL_URI, tarball({"code/inference.py": MODEL}))
    try:
        yield srv
    finally:
        srv.stop()


def s3_client(server: Server) -> Any:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    return session.client("s3", endpoint_url=server.url)


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    client = s3_client(server)
    client.create_bucket(Bucket=BUCKET)
    return client


def split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def get_object(s3: Any, uri: str, timeout: float = 30) -> dict:
    """GetObject of ``uri`` once it exists: {"body", "content_type"}."""
    bucket, key = split(uri)

    def fetch() -> dict | None:
        try:
            got = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey", exc
            return None
        return {"body": got["Body"].read(), "content_type": got["ContentType"]}

    return wait_for(fetch, timeout, f"object {uri}")


def exists(s3: Any, uri: str) -> bool:
    bucket, key = split(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


def model(sm: Any, name: str, env: dict[str, str] | None = None) -> None:
    container: dict[str, Any] = {"Image": PYTHON_IMAGE, "ModelDataUrl": MODEL_URI}
    if env:
        container["Environment"] = env
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)


def async_endpoint(
    sm: Any,
    name: str,
    output: dict,
    concurrency: int | None = None,
    instances: int = 1,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> None:
    model(sm, name, env)
    config: dict[str, Any] = {"OutputConfig": output}
    if concurrency is not None:
        config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": concurrency}
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": instances,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig=config,
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if wait:
        assert wait_status(sm, name, ("InService", "Failed"))["EndpointStatus"] == "InService"


def metrics(server: Server) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics") as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.index("}") + 1]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# --- the TTL request is queued at the start of the module and checked at its end -------------------


@pytest.fixture(scope="module")
def ttl_request(server: Server, s3: Any) -> dict:
    """One instance, one request at a time: a 65 s request, then one with RequestTTLSeconds=60
    behind it, which is dequeued after its TTL and must expire."""
    sm, rt = server.clients()
    async_endpoint(
        sm, "async-ttl", {"S3OutputPath": f"s3://{BUCKET}/ttl", "S3FailurePath": f"s3://{BUCKET}/ttl-f"}, concurrency=1
    )
    blocker = rt.invoke_endpoint_async(EndpointName="async-ttl", Body=b"sleep:65", InvocationTimeoutSeconds=120)
    expiring = rt.invoke_endpoint_async(EndpointName="async-ttl", Body=b"never runs", RequestTTLSeconds=60)
    return {"blocker": blocker, "expiring": expiring, "submitted": time.monotonic()}


# --- tests ---------------------------------------------------------------------------------------


def test_seed_boto3_flow_with_sns(server: Server, s3: Any, moto: Moto, ttl_request: dict) -> None:
    """003_*.txt: create_model -> create_endpoint_config(AsyncInferenceConfig) -> create_endpoint ->
    invoke_endpoint_async -> read the output object; SNS test, success and error notifications."""
    sm, rt = server.clients()
    success_arn, success_q = moto.topic_with_queue("async-success")
    error_arn, error_q = moto.topic_with_queue("async-error")
    sm.create_model(
        ModelName="seed-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": MODEL_URI},
    )
    config = {
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/saved_models/output",
            "NotificationConfig": {"SuccessTopic": success_arn, "ErrorTopic": error_arn},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    sm.create_endpoint_config(
        EndpointConfigName="seed-config",
        ProductionVariants=[
            {
                "VariantName": "variant1",
                "ModelName": "seed-model",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
        AsyncInferenceConfig=config,
    )
    assert sm.describe_endpoint_config(EndpointConfigName="seed-config")["AsyncInferenceConfig"] == config
    sm.create_endpoint(EndpointName="seed-endpoint", EndpointConfigName="seed-config")
    desc = wait_status(sm, "seed-endpoint", ("InService", "Failed"))
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert desc["AsyncInferenceConfig"] == config

    test = {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}
    assert wait_for(lambda: moto.messages(success_q), what="test notification (success topic)") == [test]
    assert wait_for(lambda: moto.messages(error_q), what="test notification (error topic)") == [test]

    s3.put_object(Bucket=BUCKET, Key="input/input-data.csv", Body=b"1,2,3\n")
    sent = time.time()
    resp = rt.invoke_endpoint_async(
        EndpointName="seed-endpoint", ContentType="text/csv", InputLocation=f"s3://{BUCKET}/input/input-data.csv"
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
    inference_id = resp["InferenceId"]
    assert re.fullmatch(r"[0-9a-f-]{36}", inference_id)
    assert resp["OutputLocation"] == f"s3://{BUCKET}/saved_models/output/{inference_id}.out"
    assert "FailureLocation" not in resp  # no S3FailurePath configured
    out = get_object(s3, resp["OutputLocation"])
    assert out == {"body": b"1,2,3\n".upper(), "content_type": "text/plain"}

    (note,) = wait_for(lambda: moto.messages(success_q), what="success notification")
    assert set(note) == {
        "awsRegion",
        "eventTime",
        "receivedTime",
        "invocationStatus",
        "requestParameters",
        "responseParameters",
        "inferenceId",
        "eventVersion",
        "eventSource",
        "eventName",
    }
    assert note["awsRegion"] == "us-east-1"
    assert note["invocationStatus"] == "Completed"
    assert note["requestParameters"] == {
        "contentType": "text/csv",
        "endpointName": "seed-endpoint",
        "inputLocation": f"s3://{BUCKET}/input/input-data.csv",
    }
    assert note["responseParameters"] == {"contentType": "text/plain", "outputLocation": resp["OutputLocation"]}
    assert note["inferenceId"] == inference_id
    assert (note["eventVersion"], note["eventSource"], note["eventName"]) == ("1.0", "aws:sagemaker", "InferenceResult")
    assert ISO_MS.fullmatch(note["eventTime"]) and ISO_MS.fullmatch(note["receivedTime"])
    assert note["receivedTime"] <= note["eventTime"]
    assert abs(calendar.timegm(time.strptime(note["receivedTime"][:19], "%Y-%m-%dT%H:%M:%S")) - sent) < 5

    # A model error: no S3FailurePath, so the error notification is the only report.
    s3.put_object(Bucket=BUCKET, Key="input/bad.csv", Body=b"fail now")
    resp = rt.invoke_endpoint_async(
        EndpointName="seed-endpoint", InputLocation=f"s3://{BUCKET}/input/bad.csv", InferenceId="seed-failure-1"
    )
    assert resp["InferenceId"] == "seed-failure-1"
    (note,) = wait_for(lambda: moto.messages(error_q), what="error notification")
    assert note["invocationStatus"] == "Failed"
    assert note["inferenceId"] == "seed-failure-1"
    assert note["failureReason"].startswith('ClientError: Received server error (500) from primary with message "')
    assert "model says no" in note["failureReason"]
    assert note["requestParameters"] == {
        "endpointName": "seed-endpoint",
        "inputLocation": f"s3://{BUCKET}/input/bad.csv",
    }
    assert "responseParameters" not in note
    assert not exists(s3, resp["OutputLocation"])

    # A missing input object is a failure of that request, reported like any other.
    resp = rt.invoke_endpoint_async(EndpointName="seed-endpoint", InputLocation=f"s3://{BUCKET}/input/nothing.csv")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
    (note,) = wait_for(lambda: moto.messages(error_q), what="missing-input notification")
    assert note["inferenceId"] == resp["InferenceId"]
    assert note["failureReason"] == (
        f"RequestDownloadFailure: Could not download s3://{BUCKET}/input/nothing.csv: the object does not exist."
    )
    assert moto.messages(success_q) == []
    text = metrics(server)
    assert metric(text, "modelhost_async_request_download_failures_total", endpoint="seed-endpoint") == 1
    assert metric(text, "modelhost_async_invocation_failures_total", endpoint="seed-endpoint") == 1
    assert metric(text, "modelhost_async_invocations_processed_total", endpoint="seed-endpoint") == 1
    wait_for(
        lambda: metric(metrics(server), "modelhost_approximate_backlog_size", endpoint="seed-endpoint") == 0,
        what="an empty backlog",
    )


def test_webhooks_failure_objects_and_naming(server: Server, s3: Any, webhook: Webhook) -> None:
    sm, rt = server.clients()
    output = {
        "S3OutputPath": f"s3://{BUCKET}/hooks/out",
        "S3FailurePath": f"s3://{BUCKET}/hooks/failed",
        "NotificationConfig": {
            "SuccessTopic": f"{webhook.url}/success",
            "ErrorTopic": f"{webhook.url}/error",
            "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
        },
    }
    async_endpoint(sm, "async-hooks", output, concurrency=2)
    test = {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}
    wait_for(lambda: webhook.at("/success") and webhook.at("/error"), what="test notifications")
    assert webhook.at("/success") == [test] and webhook.at("/error") == [test]

    # An inline body, the output path extension and a file name; the response is embedded.
    inputs = server.data_dir / "async" / "inputs"
    waiting = set(inputs.iterdir())  # the TTL endpoint's requests
    resp = rt.invoke_endpoint_async(
        EndpointName="async-hooks",
        Body=b"inline body",
        ContentType="text/plain",
        Accept="application/x-upper",
        CustomAttributes="trace=1",
        S3OutputPathExtension="daily/2024",
        Filename="result.txt",
    )
    assert resp["OutputLocation"] == f"s3://{BUCKET}/hooks/out/daily/2024/result.txt"
    assert resp["FailureLocation"] == f"s3://{BUCKET}/hooks/failed/daily/2024/result.txt-error.out"
    assert get_object(s3, resp["OutputLocation"]) == {"body": b"INLINE BODY", "content_type": "application/x-upper"}
    (note,) = wait_for(lambda: webhook.at("/success")[1:], what="success webhook")
    assert note["invocationStatus"] == "Completed"
    assert note["requestParameters"] == {"contentType": "text/plain", "endpointName": "async-hooks"}
    assert note["responseParameters"] == {
        "contentType": "application/x-upper",
        "outputLocation": resp["OutputLocation"],
    }
    assert note["responseBody"] == {"content": "INLINE BODY", "encoding": "UTF8"}
    assert not exists(s3, resp["FailureLocation"])
    assert set(inputs.iterdir()) == waiting  # the inline body is gone once done

    # A model error: the failure object and the error notification (with its location).
    resp = rt.invoke_endpoint_async(EndpointName="async-hooks", Body=b"fail please", InferenceId="hook-fail")
    assert resp["FailureLocation"] == f"s3://{BUCKET}/hooks/failed/hook-fail-error.out"
    failure = get_object(s3, resp["FailureLocation"])
    assert failure["content_type"] == "text/plain"
    assert failure["body"].startswith(b'ClientError: Received server error (500) from primary with message "')
    assert b"model says no" in failure["body"]
    (note,) = wait_for(lambda: webhook.at("/error")[1:], what="error webhook")
    assert note["invocationStatus"] == "Failed" and note["inferenceId"] == "hook-fail"
    assert note["failureReason"] == failure["body"].decode()
    assert note["responseParameters"] == {"failureLocation": resp["FailureLocation"]}
    assert not exists(s3, resp["OutputLocation"])

    # InvocationTimeoutSeconds: the request fails, the hung instance is replaced, the next one runs.
    resp = rt.invoke_endpoint_async(EndpointName="async-hooks", Body=b"sleep:30", InvocationTimeoutSeconds=1)
    started = time.monotonic()
    failure = get_object(s3, resp["FailureLocation"])
    assert time.monotonic() - started < 15
    assert b"Your invocation timed out while waiting for a response from container primary" in failure["body"]
    assert b"(InvocationTimeoutSeconds: 1)" in failure["body"]
    resp = rt.invoke_endpoint_async(EndpointName="async-hooks", Body=b"after the timeout")
    assert get_object(s3, resp["OutputLocation"])["body"] == b"AFTER THE TIMEOUT"

    # A missing input object: failure object + notification, not a 400.
    resp = rt.invoke_endpoint_async(EndpointName="async-hooks", InputLocation=f"s3://{BUCKET}/no/such/object")
    failure = get_object(s3, resp["FailureLocation"])
    assert (
        failure["body"]
        == (
            f"RequestDownloadFailure: Could not download s3://{BUCKET}/no/such/object: the object does not exist."
        ).encode()
    )
    wait_for(
        lambda: [n for n in webhook.at("/error") if n.get("inferenceId") == resp["InferenceId"]],
        what="missing-input webhook",
    )
    assert len(webhook.at("/success")) == 3  # test + inline + after the timeout
    assert metric(metrics(server), "modelhost_async_notification_failures_total", endpoint="async-hooks") == 0


def test_webhook_failures_are_counted(server: Server, s3: Any) -> None:
    sm, rt = server.clients()
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    async_endpoint(
        sm, "async-deadhook", {"S3OutputPath": f"s3://{BUCKET}/dead", "NotificationConfig": {"SuccessTopic": dead}}
    )
    resp = rt.invoke_endpoint_async(EndpointName="async-deadhook", Body=b"x")
    assert get_object(s3, resp["OutputLocation"])["body"] == b"X"
    # the test notification and the success notification, each after its retries (~8 s)
    wait_for(
        lambda: metric(metrics(server), "modelhost_async_notification_failures_total", endpoint="async-deadhook") == 2,
        timeout=30,
        what="NotificationFailures == 2",
    )


def test_validation(server: Server, s3: Any) -> None:
    sm, rt = server.clients()
    # async endpoint refuses InvokeEndpoint; a real-time one refuses InvokeEndpointAsync
    async_endpoint(sm, "async-valid", {"S3OutputPath": f"s3://{BUCKET}/valid"})
    with pytest.raises(ClientError) as exc:
        rt.invoke_endpoint(EndpointName="async-valid", Body=b"x")
    assert exc.value.response["Error"]["Code"] == "ValidationError"
    assert "asynchronous inference endpoint" in exc.value.response["Error"]["Message"]
    model(sm, "realtime-valid")
    sm.create_endpoint_config(
        EndpointConfigName="realtime-valid",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "realtime-valid",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="realtime-valid", EndpointConfigName="realtime-valid")
    wait_status(sm, "realtime-valid", ("InService",))
    assert rt.invoke_endpoint(EndpointName="realtime-valid", Body=b"sync")["Body"].read() == b"SYNC"
    with pytest.raises(ClientError) as exc:
        rt.invoke_endpoint_async(EndpointName="realtime-valid", Body=b"x")
    assert exc.value.response["Error"]["Code"] == "ValidationError"
    assert "not an asynchronous inference endpoint" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        rt.invoke_endpoint_async(EndpointName="no-such-endpoint", Body=b"x")
    assert exc.value.response["Error"]["Message"] == f"Endpoint no-such-endpoint of account {ACCOUNT} not found."

    def refused(**kwargs: Any) -> str:
        with pytest.raises(ClientError) as exc:
            rt.invoke_endpoint_async(EndpointName="async-valid", **kwargs)
        assert exc.value.response["Error"]["Code"] == "ValidationError"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return str(exc.value.response["Error"]["Message"])

    assert "less than or equal to 21600" in refused(Body=b"x", RequestTTLSeconds=21601)
    assert "less than or equal to 3600" in refused(Body=b"x", InvocationTimeoutSeconds=3601)
    assert "less than or equal to 128000" in refused(Body=b"x" * 128001)
    assert "not both" in refused(Body=b"x", InputLocation=f"s3://{BUCKET}/a")
    assert "is required" in refused()
    assert "filename" in refused(Body=b"x", Filename="a.b.c")
    # botocore checks minimums itself: send a TTL of 59 raw
    req = urllib.request.Request(
        f"{server.url}/endpoints/async-valid/async-invocations",
        data=b"x",
        method="POST",
        headers={"X-Amzn-SageMaker-RequestTTLSeconds": "59"},
    )
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req)
    assert http.value.code == 400 and http.value.headers["x-amzn-ErrorType"] == "ValidationError"
    assert "greater than or equal to 60" in json.loads(http.value.read())["Message"]
    # exactly 128000 bytes inline is accepted
    resp = rt.invoke_endpoint_async(EndpointName="async-valid", Body=b"y" * 128000)
    assert get_object(s3, resp["OutputLocation"])["body"] == b"Y" * 128000

    # CreateEndpointConfig rules
    def config_refused(async_config: dict) -> str:
        with pytest.raises(ClientError) as exc:
            sm.create_endpoint_config(
                EndpointConfigName="bad-async",
                AsyncInferenceConfig=async_config,
                ProductionVariants=[
                    {
                        "VariantName": "v",
                        "ModelName": "async-valid",
                        "InitialInstanceCount": 1,
                        "InstanceType": "ml.m5.large",
                    }
                ],
            )
        assert exc.value.response["Error"]["Code"] == "ValidationException"
        return str(exc.value.response["Error"]["Message"])

    assert "S3OutputPath is required" in config_refused({"OutputConfig": {}})
    assert "less than or equal to 1000" in config_refused(
        {"OutputConfig": {"S3OutputPath": "s3://b/o"}, "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1001}}
    )
    assert "regular expression pattern" in config_refused(
        {"OutputConfig": {"S3OutputPath": "s3://b/o", "NotificationConfig": {"SuccessTopic": "not-a-topic"}}}
    )
    assert "no ErrorTopic" in config_refused(
        {
            "OutputConfig": {
                "S3OutputPath": "s3://b/o",
                "NotificationConfig": {"IncludeInferenceResponseIn": ["ERROR_NOTIFICATION_TOPIC"]},
            }
        }
    )


def test_sdk_flow(server: Server) -> None:
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.predictor_async import AsyncPredictor

    sess = modelhost.sagemaker_session(server.url)
    bucket = sess.default_bucket()
    m = Model(
        image_uri=PYTHON_IMAGE,
        model_data=MODEL_URI,
        role=ROLE,
        sagemaker_session=sess,
        name="sdk-async",
        predictor_cls=Predictor,
    )
    predictor = m.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.large",
        endpoint_name="sdk-async",
        async_inference_config=AsyncInferenceConfig(
            output_path=f"s3://{bucket}/sdk-async/out",
            failure_path=f"s3://{bucket}/sdk-async/failed",
            max_concurrent_invocations_per_instance=2,
        ),
    )
    assert isinstance(predictor, AsyncPredictor)
    response = predictor.predict_async(data=b"from the sdk")
    assert response.output_path.startswith(f"s3://{bucket}/sdk-async/out/")
    assert response.get_result(WaiterConfig(max_attempts=60, delay=0.5)) == b"FROM THE SDK"
    # predict() on an AsyncPredictor uploads, invokes and waits
    assert predictor.predict(b"blocking", waiter_config=WaiterConfig(max_attempts=60, delay=0.5)) == b"BLOCKING"
    failed = predictor.predict_async(data=b"fail from the sdk")
    with pytest.raises(AsyncInferenceModelError) as exc:
        failed.get_result(WaiterConfig(max_attempts=60, delay=0.5))
    assert "model says no" in str(exc.value)
    desc = sess.sagemaker_client.describe_endpoint(EndpointName="sdk-async")
    assert desc["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{bucket}/sdk-async/out"
    predictor.delete_endpoint()


def test_cli_invoke_async(server: Server) -> None:
    env = {**os.environ, "MODELHOST_URL": server.url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelhost.cli",
            "invoke",
            "async-valid",
            "--async",
            "--content-type",
            "text/plain",
            "--body",
            "from the cli",
        ],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"FROM THE CLI\n"
    assert b"queued " in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", "invoke", "async-hooks", "--async", "--body", "fail in the cli"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"the request failed" in result.stderr and b"model says no" in result.stderr


def test_large_payload_streams(server: Server, s3: Any) -> None:
    """200 MB through the queue: in from the bucket store, out to it; the server's RSS stays flat."""
    sm, rt = server.clients()
    async_endpoint(sm, "async-large", {"S3OutputPath": f"s3://{BUCKET}/large"}, concurrency=1)
    size = 200 * 1024 * 1024
    path = server.data_dir / "buckets" / BUCKET / "large-in" / "payload.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            piece = i.to_bytes(4, "big") + block[4:]
            f.write(piece)
            digest.update(piece)
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    before = proc.memory_info().rss
    peak = before
    resp = rt.invoke_endpoint_async(
        EndpointName="async-large",
        InputLocation=f"s3://{BUCKET}/large-in/payload.bin",
        ContentType="application/octet-stream",
    )
    out = server.data_dir / "buckets" / BUCKET / "large" / f"{resp['InferenceId']}.out"
    deadline = time.monotonic() + 120
    while not out.exists():
        peak = max(peak, proc.memory_info().rss)
        assert time.monotonic() < deadline, "no output for the 200 MB request"
        time.sleep(0.02)
    assert out.stat().st_size == size
    got = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()
    head = s3.head_object(Bucket=BUCKET, Key=f"large/{resp['InferenceId']}.out")
    assert head["ContentLength"] == size and head["ContentType"] == "text/plain"
    growth = (peak - before) / 2**20
    assert growth < 64, f"server RSS grew by {growth:.0f} MiB for a 200 MiB payload"


def test_scale_to_zero_and_back(server: Server, s3: Any) -> None:
    sm, rt = server.clients()
    async_endpoint(sm, "async-zero", {"S3OutputPath": f"s3://{BUCKET}/zero"}, concurrency=2)
    aas = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1").client(
        "application-autoscaling", endpoint_url=server.url
    )
    resource = "endpoint/async-zero/variant/AllTraffic"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=0,
        MaxCapacity=2,
    )
    aas.put_scaling_policy(
        PolicyName="backlog",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": "async-zero"}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 1,
            "ScaleOutCooldown": 1,
        },
    )

    def count() -> int:
        return int(sm.describe_endpoint(EndpointName="async-zero")["ProductionVariants"][0]["CurrentInstanceCount"])

    wait_for(lambda: count() == 0, timeout=30, what="scale-in to zero")
    assert wait_status(sm, "async-zero", ("InService",))["ProductionVariants"][0]["DesiredInstanceCount"] == 0
    assert metric(metrics(server), "modelhost_has_backlog_without_capacity", endpoint="async-zero") == 0
    started = time.monotonic()
    resp = rt.invoke_endpoint_async(EndpointName="async-zero", Body=b"wake up")
    assert get_object(s3, resp["OutputLocation"], timeout=60)["body"] == b"WAKE UP"
    cold = time.monotonic() - started
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)
    details = [a["Details"] for a in activities["ScalingActivities"]]
    assert any("1 -> 0" in d for d in details) and any("0 -> 1" in d for d in details), details
    wait_for(lambda: count() == 0, timeout=30, what="drained back to zero")
    print(f"cold start: {cold:.1f}s")


def test_metrics_exposed(server: Server) -> None:
    time.sleep(1)  # gauges are refreshed every 0.5 s
    text = metrics(server)
    for name in (
        "modelhost_approximate_backlog_size",
        "modelhost_approximate_backlog_size_per_instance",
        "modelhost_approximate_age_of_oldest_request_seconds",
        "modelhost_has_backlog_without_capacity",
    ):
        assert metric(text, name, endpoint="async-hooks") == 0, name
    assert metric(text, "modelhost_async_invocations_processed_total", endpoint="async-hooks") == 2
    assert metric(text, "modelhost_async_time_in_backlog_milliseconds_count", endpoint="async-hooks") == 6


def test_ttl_expiry(server: Server, s3: Any, ttl_request: dict) -> None:
    """Queued behind a 65 s request with RequestTTLSeconds=60: expires when dequeued."""
    expiring = ttl_request["expiring"]
    remaining = 90 - (time.monotonic() - ttl_request["submitted"])
    failure = get_object(s3, expiring["FailureLocation"], timeout=max(remaining, 5))
    assert failure["body"].startswith(b"ExpiredRequest: The request waited ")
    assert failure["body"].endswith(b"longer than its RequestTTLSeconds (60).")
    assert not exists(s3, expiring["OutputLocation"])
    assert get_object(s3, ttl_request["blocker"]["OutputLocation"])["body"] == b"SLEEP:65"
    assert metric(metrics(server), "modelhost_async_expired_requests_total", endpoint="async-ttl") == 1


# --- durability: its own server, killed with -9 -----------------------------------------------------


def test_kill9_durability(tmp_path: Path, webhook: Webhook) -> None:
    """kill -9 with requests queued and in flight: after the restart every accepted request
    completes exactly once (one output, one Completed row) and none is lost; an instance killed
    mid-request has its request retried."""
    append_file = tmp_path / "executions.txt"
    srv = Server(tmp_path / "data", env={"MODELHOST_WEBHOOK_ALLOW": "127.0.0.1"}).start()
    try:
        srv.put_object(MODEL_URI, tarball({"code/inference.py": MODEL}))
        sm, rt = srv.clients()
        s3c = s3_client(srv)
        s3c.create_bucket(Bucket=BUCKET)
        async_endpoint(
            sm,
            "durable",
            {
                "S3OutputPath": f"s3://{BUCKET}/durable",
                "NotificationConfig": {"SuccessTopic": f"{webhook.url}/durable"},
            },
            concurrency=2,
            env={"APPEND_FILE": str(append_file), "APPEND_SLEEP": "0.5"},
        )
        ids = [f"req-{i:02d}" for i in range(16)]
        accepted = {}
        for i in ids:
            resp = rt.invoke_endpoint_async(EndpointName="durable", Body=f"append:{i}".encode(), InferenceId=i)
            accepted[i] = resp["OutputLocation"]

        def outputs() -> list[str]:
            return stored_keys(srv.data_dir, BUCKET, "durable/")

        wait_for(lambda: len(outputs()) >= 3, timeout=30, what="3 outputs")
        srv.kill9()
        done_before = len(outputs())
        assert done_before < len(ids), "everything finished before the kill"
        srv.start()
        for i, uri in accepted.items():
            assert get_object(s3c, uri, timeout=60)["body"] == f"APPEND:{i}".upper().encode()
        assert outputs() == sorted(f"durable/{i}.out" for i in ids)
        db = sqlite3.connect(srv.data_dir / "modelhost.db")
        rows = db.execute("SELECT inference_id, status, attempts FROM async_requests ORDER BY seq").fetchall()
        db.close()
        assert [r[0] for r in rows] == ids  # one row per accepted request, in order
        assert {r[1] for r in rows} == {"Completed"}
        executions = append_file.read_text().split()
        assert set(executions) == set(ids)
        reruns = len(executions) - len(ids)
        assert reruns <= 2, f"{reruns} re-executions; at most the 2 in flight at the kill may run again"
        # (attempts counts runs that were started: at most 2 requests were caught in flight)
        assert sum(r[2] for r in rows) <= len(ids) + 2
        print(f"kill -9 after {done_before}/{len(ids)} outputs; {reruns} re-executions after the restart")
        completed = wait_for(
            lambda: {n.get("inferenceId") for n in webhook.at("/durable")} >= set(ids) or None,
            timeout=30,
            what="a success notification per request",
        )
        assert completed

        # an instance killed mid-request: the request runs again on the restarted instance
        resp = rt.invoke_endpoint_async(EndpointName="durable", Body=b"sleep:2", InferenceId="instance-crash")
        assert srv.proc is not None

        def worker() -> psutil.Process | None:
            for child in psutil.Process(srv.proc.pid).children():  # type: ignore[union-attr]
                if "modelhost.serving.worker" in " ".join(child.cmdline()):
                    return child
            return None

        time.sleep(0.7)
        victim = wait_for(worker, what="the instance process")
        victim.kill()
        assert get_object(s3c, resp["OutputLocation"], timeout=60)["body"] == b"SLEEP:2"
        assert "lost its instance" in srv.logs("durable") and "re-queued" in srv.logs("durable")
    finally:
        srv.stop()
