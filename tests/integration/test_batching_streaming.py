"""Dynamic batching and InvokeEndpointWithResponseStream through a real server, boto3 and the sagemaker SDK.
One server for the module; the endpoints deploy once, in parallel."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from tests.helpers import PYTHON_IMAGE, ROLE, stored_object, tarball, wait_status

HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
    "2.1.0-transformers4.37.0-cpu-py310-ubuntu22.04"
)

# Batches: predict_fn takes the list of inputs; each answer says how big its batch was.
BATCH_CODE = """
import json
import time

def model_fn(model_dir):
    return None

def input_fn(data, content_type):
    value = json.loads(data)
    if value == "undecodable":
        raise ValueError("cannot decode this one")
    return value

def predict_fn(inputs: list, model):
    time.sleep(0.3)
    if "poison" in inputs:
        raise RuntimeError("a poisoned batch")
    return [{"echo": value, "batch": len(inputs)} for value in inputs]

def output_fn(prediction, accept):
    if accept == "text/plain":
        return str(prediction["echo"]), "text/plain"
    return json.dumps(prediction), "application/json"
"""

# Streams: predict_fn returns a generator; "fail-late" raises after two chunks; "slow" keeps going until closed.
STREAM_CODE = """
import json
import os
import time

def model_fn(model_dir):
    return None

def input_fn(data, content_type):
    return json.loads(data)

def predict_fn(data, model, context):
    context.response_custom_attributes = "streamed=yes"
    if data.get("mode") == "fail-early":
        raise ValueError("refused before the first chunk")
    if data.get("mode") == "plain":
        return {"whole": True}
    return chunks(data)

def chunks(data):
    marker = data.get("marker")
    try:
        for i in range(data.get("n", 3)):
            if data.get("mode") == "fail-late" and i == 2:
                raise RuntimeError("broke after two chunks")
            yield json.dumps({"i": i}) + "\\n"
            if data.get("mode") == "slow":
                time.sleep(0.05)
    finally:
        if marker:
            with open(marker, "a") as f:
                f.write("closed\\n")

def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


@pytest.fixture(scope="module")
def endpoints(server, sm, tmp_path_factory):  # type: ignore[no-untyped-def]
    from tests.hf_models import dir_files, gpt2

    server.put_object("s3://models/bs/batch.tar.gz", tarball({"code/inference.py": BATCH_CODE}))
    server.put_object("s3://models/bs/stream.tar.gz", tarball({"code/inference.py": STREAM_CODE}))
    gpt = gpt2(tmp_path_factory.mktemp("gpt2"))
    server.put_object("s3://models/bs/gpt2.tar.gz", tarball(dir_files(gpt)))
    containers = {
        "bs-batch": {
            "Image": PYTHON_IMAGE,
            "ModelDataUrl": "s3://models/bs/batch.tar.gz",
            "Environment": {"SAGEMAKER_TS_BATCH_SIZE": "4", "SAGEMAKER_TS_MAX_BATCH_DELAY": "200"},
        },
        "bs-stream": {"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/bs/stream.tar.gz"},
        "bs-gen": {
            "Image": HF_IMAGE,
            "ModelDataUrl": "s3://models/bs/gpt2.tar.gz",
            "Environment": {"HF_TASK": "text-generation"},
        },
        "bs-badenv": {
            "Image": PYTHON_IMAGE,
            "ModelDataUrl": "s3://models/bs/batch.tar.gz",
            "Environment": {"SAGEMAKER_TS_BATCH_SIZE": "lots"},
        },
    }
    for name, container in containers.items():
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.create_endpoint_config(  # the batching model behind an asynchronous endpoint
        EndpointConfigName="bs-async",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "bs-batch",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": "s3://bs-jobs/async-out"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
        },
    )
    sm.create_endpoint(EndpointName="bs-async", EndpointConfigName="bs-async")
    for name in [*containers, "bs-async"]:
        wait_status(sm, name, ("InService", "Failed"), timeout=240)
    return containers


def test_bad_batch_setting_fails_the_endpoint_naming_the_variable(sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    desc = sm.describe_endpoint(EndpointName="bs-badenv")
    assert desc["EndpointStatus"] == "Failed"
    assert "SAGEMAKER_TS_BATCH_SIZE='lots' is not an integer" in desc["FailureReason"]


def test_concurrent_requests_are_batched_each_with_its_own_answer_error_and_accept(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    def call(value: Any, accept: str = "application/json") -> tuple[str, Any]:
        try:
            resp = rt.invoke_endpoint(
                EndpointName="bs-batch", ContentType="application/json", Accept=accept, Body=json.dumps(value)
            )
        except ClientError as e:
            return "error", e.response
        return resp["ContentType"], resp["Body"].read().decode()

    # a lone request on an idle model runs at once: far below the 200 ms delay (+300 ms of predict)
    t0 = time.perf_counter()
    assert call("solo") == ("application/json", json.dumps({"echo": "solo", "batch": 1}))
    assert time.perf_counter() - t0 < 0.45 + 0.3
    values: list[Any] = ["busy", *range(7), "undecodable"]
    accepts = ["application/json"] * len(values)
    accepts[3] = "text/plain"
    with ThreadPoolExecutor(len(values)) as pool:
        first = pool.submit(call, values[0])
        time.sleep(0.1)  # the model is busy with the first: the rest queue up
        futures = [pool.submit(call, v, a) for v, a in zip(values[1:], accepts[1:], strict=True)]
        results = [first.result(), *(f.result() for f in futures)]
    sizes = []
    for value, accept, (ctype, body) in zip(values, accepts, results, strict=True):
        if value == "undecodable":
            assert ctype == "error" and body["Error"]["Code"] == "ModelError"
            assert body["OriginalStatusCode"] == 500 and "cannot decode this one" in body["OriginalMessage"]
        elif accept == "text/plain":
            assert (ctype, body) == ("text/plain", str(value))
        else:
            answer = json.loads(body)
            assert ctype == "application/json" and answer["echo"] == value
            sizes.append(answer["batch"])
    assert max(sizes) == 4  # batches never exceed SAGEMAKER_TS_BATCH_SIZE and did form
    with ThreadPoolExecutor(3) as pool:  # a batch whose predict fails runs again one by one
        out = list(pool.map(call, ["x", "poison", "y"]))
    assert out[1][0] == "error" and "a poisoned batch" in out[1][1]["OriginalMessage"]
    assert [json.loads(o[1])["echo"] for o in (out[0], out[2])] == ["x", "y"]


def test_batch_transform_goes_through_the_same_batcher(server, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    lines = "".join(json.dumps(f"record-{i}") + "\n" for i in range(12))
    server.put_object("s3://bs-jobs/in/records.jsonl", lines.encode())
    sm.create_transform_job(
        TransformJobName="bs-job",
        ModelName="bs-batch",  # SAGEMAKER_TS_BATCH_SIZE=4; MaxConcurrentTransforms from the instance: 4
        BatchStrategy="SingleRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bs-jobs/in/"}},
            "ContentType": "application/json",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": "s3://bs-jobs/out", "Accept": "application/json", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    sm.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="bs-job", WaiterConfig={"Delay": 0.5, "MaxAttempts": 240}
    )
    desc = sm.describe_transform_job(TransformJobName="bs-job")
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    raw = (stored_object(server.data_dir, "s3://bs-jobs/out/records.jsonl.out") or b"").decode()
    outs = [json.loads(line) for line in raw.splitlines()]
    assert [o["echo"] for o in outs] == [f"record-{i}" for i in range(12)]  # in input order
    assert max(o["batch"] for o in outs) > 1  # the job's concurrent requests were batched


def test_async_endpoint_goes_through_the_same_batcher(server, rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    outputs = []
    for i in range(8):
        server.put_object(f"s3://bs-jobs/async-in/{i}.json", json.dumps(f"async-{i}").encode())
    for i in range(8):
        resp = rt.invoke_endpoint_async(
            EndpointName="bs-async", InputLocation=f"s3://bs-jobs/async-in/{i}.json", ContentType="application/json"
        )
        outputs.append(resp["OutputLocation"])
    answers = []
    for uri in outputs:
        deadline = time.monotonic() + 60
        while (data := stored_object(server.data_dir, uri)) is None:
            assert time.monotonic() < deadline, f"no async output at {uri}"
            time.sleep(0.1)
        answers.append(json.loads(data))
    assert [a["echo"] for a in answers] == [f"async-{i}" for i in range(8)]
    assert max(a["batch"] for a in answers) > 1  # MaxConcurrentInvocationsPerInstance=4 in flight: batched


def frames_of(raw: bytes) -> list[Any]:
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return list(buf)


def test_generator_streams_payload_parts_through_boto3(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = rt.invoke_endpoint_with_response_stream(
        EndpointName="bs-stream",
        ContentType="application/json",
        Accept="application/jsonlines",
        CustomAttributes="c=1",
        Body=json.dumps({"n": 4}),
    )
    assert resp["ContentType"] == "application/jsonlines"  # X-Amzn-SageMaker-Content-Type
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert resp["CustomAttributes"] == "streamed=yes"
    parts = [event["PayloadPart"]["Bytes"] for event in resp["Body"]]
    assert b"".join(parts) == b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(4))
    assert len(parts) == 4  # one PayloadPart per chunk


def test_non_streaming_model_answers_one_payload_part(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = rt.invoke_endpoint_with_response_stream(
        EndpointName="bs-stream", ContentType="application/json", Body=json.dumps({"mode": "plain"})
    )
    parts = [event["PayloadPart"]["Bytes"] for event in resp["Body"]]
    assert parts == [json.dumps({"whole": True}).encode()]
    # and InvokeEndpoint of a streaming model joins the chunks
    body = rt.invoke_endpoint(EndpointName="bs-stream", ContentType="application/json", Body=json.dumps({"n": 2}))
    assert body["Body"].read() == b'{"i": 0}\n{"i": 1}\n'


def test_errors_before_and_after_the_first_byte(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint_with_response_stream(
            EndpointName="bs-stream", ContentType="application/json", Body=json.dumps({"mode": "fail-early"})
        )
    err = info.value.response
    assert err["Error"]["Code"] == "ModelError" and err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "refused before the first chunk" in err["OriginalMessage"]
    resp = rt.invoke_endpoint_with_response_stream(
        EndpointName="bs-stream", ContentType="application/json", Body=json.dumps({"mode": "fail-late", "n": 5})
    )
    got = []
    with pytest.raises(EventStreamError) as stream_err:
        for event in resp["Body"]:
            got.append(event["PayloadPart"]["Bytes"])
    assert len(got) == 2
    assert stream_err.value.response["Error"]["Code"] == "ModelStreamError"
    assert "broke after two chunks" in stream_err.value.response["Error"]["Message"]
    for bad, code in (
        ({"EndpointName": "no-such-endpoint"}, "ValidationError"),
        ({"EndpointName": "bs-stream", "TargetVariant": "Nope"}, "ValidationError"),
        ({"EndpointName": "bs-stream", "CustomAttributes": "x" * 1025}, "ValidationError"),
    ):
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint_with_response_stream(ContentType="application/json", Body=b"{}", **bad)
        assert info.value.response["Error"]["Code"] == code, bad


def test_every_frame_checks_out_with_botocores_decoder(server, endpoints) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    req = urllib.request.Request(
        f"{server.url}/endpoints/bs-stream/invocations-response-stream",
        data=json.dumps({"n": 3, "mode": "fail-late"}).encode(),
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/vnd.amazon.eventstream"
        raw = resp.read()
    frames = frames_of(raw)  # CRCs checked by the decoder
    assert [f.headers[":message-type"] for f in frames] == ["event", "event", "exception"]
    assert frames[0].headers[":event-type"] == "PayloadPart"
    assert frames[2].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(frames[2].payload)["ErrorCode"] == "StreamBroken"


def test_client_disconnect_stops_the_generator(server, endpoints, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "closed.txt"
    body = json.dumps({"mode": "slow", "n": 100000, "marker": str(marker)}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        b"POST /endpoints/bs-stream/invocations-response-stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    received = b""
    while received.count(b"PayloadPart") < 3:
        received += sock.recv(65536)
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (marker.exists() and marker.read_text()):
        time.sleep(0.05)
    assert marker.read_text() == "closed\n"  # the generator's finally ran: it was closed, not drained


def test_sdk_predict_stream_with_line_iterator(server, endpoints) -> None:  # type: ignore[no-untyped-def]
    from sagemaker.iterators import LineIterator
    from sagemaker.predictor import Predictor

    from modelhost.sdk import sagemaker_session

    predictor = Predictor("bs-stream", sagemaker_session=sagemaker_session(server.url))
    stream = predictor.predict_stream(json.dumps({"n": 5}), initial_args={"ContentType": "application/json"})
    lines = [json.loads(line) for line in stream]
    assert lines == [{"i": i} for i in range(5)]
    raw = predictor.sagemaker_session.sagemaker_runtime_client.invoke_endpoint_with_response_stream(
        EndpointName="bs-stream", ContentType="application/json", Body=json.dumps({"n": 3})
    )
    assert [json.loads(line) for line in LineIterator(raw["Body"])] == [{"i": i} for i in range(3)]


def test_hf_text_generation_streams_tokens(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    params = {"max_new_tokens": 8, "do_sample": False, "suppress_tokens": [0, 1, 2, 3, 4]}  # no special tokens
    request = {"inputs": "hello world", "parameters": params, "stream": True}
    resp = rt.invoke_endpoint_with_response_stream(
        EndpointName="bs-gen", ContentType="application/json", Body=json.dumps(request)
    )
    assert resp["ContentType"] == "text/event-stream"
    text = b"".join(event["PayloadPart"]["Bytes"] for event in resp["Body"]).decode()
    events = [json.loads(line[len("data:") :]) for line in text.split("\n\n") if line]
    assert len(events) >= 2 and all("token" in e for e in events)
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events[:-1])
    # without "stream" the same endpoint answers the pipeline's JSON in one part
    resp = rt.invoke_endpoint_with_response_stream(
        EndpointName="bs-gen",
        ContentType="application/json",
        Body=json.dumps({"inputs": "hello", "parameters": {"max_new_tokens": 3}}),
    )
    parts = [event["PayloadPart"]["Bytes"] for event in resp["Body"]]
    assert len(parts) == 1 and "generated_text" in json.loads(parts[0])[0]
