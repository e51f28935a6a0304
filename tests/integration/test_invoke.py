"""InvokeEndpoint through an unmodified sagemaker-runtime client: content types, headers, errors,
timeouts and metrics. One real server for the module; the endpoints start once, in parallel."""

from __future__ import annotations

import io
import json
import re
import time
import urllib.request

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.helpers import PYTHON_IMAGE, ROLE, SKLEARN_IMAGE, csv_row, diabetes, sklearn_model, tarball, wait_status

ACCOUNT = "123456789012"

# Echoes what reached the model: headers through the toolkit Context, and a response custom attribute.
CONTEXT_CODE = """
import json

def model_fn(model_dir):
    return "echo-model"

def transform_fn(model, data, content_type, accept, context):
    context.response_custom_attributes = "seen=" + (context.custom_attributes or "")
    body = {
        "model": model,
        "data": data if isinstance(data, str) else data.decode("latin-1"),
        "content_type": content_type,
        "accept": accept,
        "custom_attributes": context.custom_attributes,
        "inference_id": context.inference_id,
        "request_content_type": context.request_content_type,
        "accept_header": context.accept_header,
    }
    return json.dumps(body), "application/json"
"""

# Sums rows; predict_fn raises or hangs on request.
FAULTY_CODE = """
import json
import time

def model_fn(model_dir):
    return "sum"

def input_fn(data, content_type):
    return json.loads(data)

def predict_fn(data, model):
    if data == "raise":
        raise RuntimeError("predict exploded")
    if data == "hang":
        time.sleep(30)
    return [sum(row) for row in data]

def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""

SLOW_CODE = """
import time

def model_fn(model_dir):
    time.sleep(4)
    return lambda data: data
"""

ENDPOINTS = {
    # name -> the PrimaryContainer of its model (one instance each)
    "inv-sk": {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/inv/sk.tar.gz"},
    "inv-csv": {
        "Image": SKLEARN_IMAGE,
        "ModelDataUrl": "s3://models/inv/sk.tar.gz",
        "Environment": {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"},
    },
    "inv-ctx": {"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/inv/ctx.tar.gz"},
    "inv-faulty": {
        "Image": PYTHON_IMAGE,
        "ModelDataUrl": "s3://models/inv/faulty.tar.gz",
        "Environment": {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "2"},
    },
}


@pytest.fixture(scope="module")
def endpoints(server, sm):  # type: ignore[no-untyped-def]
    """Deploy every endpoint of the module at once; returns the fitted sklearn model."""
    data, model = sklearn_model()
    server.put_object("s3://models/inv/sk.tar.gz", data)
    server.put_object("s3://models/inv/ctx.tar.gz", tarball({"code/inference.py": CONTEXT_CODE}))
    server.put_object("s3://models/inv/faulty.tar.gz", tarball({"code/inference.py": FAULTY_CODE}))
    for name, container in ENDPOINTS.items():
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
    for name in ENDPOINTS:
        desc = wait_status(sm, name, ("InService", "Failed"))
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return model


def rows(n: int = 2) -> np.ndarray:
    x, _ = diabetes()
    return x[:n]


def error_of(fn, **kwargs: object) -> dict:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as info:
        fn(**kwargs)
    return info.value.response


def assert_serving(rt, sm, name: str = "inv-sk") -> None:  # type: ignore[no-untyped-def]
    """The endpoint is still InService and answers a good request."""
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    if name == "inv-faulty":
        resp = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[[1, 2], [3, 4]]")
        assert json.loads(resp["Body"].read()) == [3, 7]
    else:
        resp = rt.invoke_endpoint(
            EndpointName=name, ContentType="text/csv", Body=csv_row(rows(1)[0]), Accept="application/json"
        )
        assert len(json.loads(resp["Body"].read())) == 1


def metrics(server) -> str:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        return resp.read().decode()


def sample(text: str, name: str, endpoint: str) -> float:
    m = re.search(rf'^{name}\{{endpoint="{endpoint}",variant="AllTraffic"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


# --- content types ----------------------------------------------------------------------------


def test_csv_in_csv_out(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    x = rows(3)
    body = "\n".join(csv_row(r) for r in x)
    resp = rt.invoke_endpoint(EndpointName="inv-sk", ContentType="text/csv", Accept="text/csv", Body=body)
    assert resp["ContentType"] == "text/csv"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    got = [float(v) for v in resp["Body"].read().decode().splitlines()]
    expected = endpoints.predict(np.array([[float(v) for v in csv_row(r).split(",")] for r in x]))
    assert np.allclose(got, expected, rtol=0, atol=1e-9)


def test_json_in_default_accept_json(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    x = rows(2)
    expected = endpoints.predict(x)
    for body in (json.dumps({"instances": x.tolist()}), json.dumps(x.tolist())):
        resp = rt.invoke_endpoint(EndpointName="inv-sk", ContentType="application/json", Body=body)
        assert resp["ContentType"] == "application/json"
        assert np.allclose(json.loads(resp["Body"].read()), expected, rtol=0, atol=1e-9)
    # Accept */* is the default too.
    resp = rt.invoke_endpoint(
        EndpointName="inv-sk", ContentType="application/json", Accept="*/*", Body=json.dumps(x.tolist())
    )
    assert resp["ContentType"] == "application/json"


def test_npy_in_npy_out(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    x = rows(4)
    buf = io.BytesIO()
    np.save(buf, x)
    resp = rt.invoke_endpoint(
        EndpointName="inv-sk", ContentType="application/x-npy", Accept="application/x-npy", Body=buf.getvalue()
    )
    assert resp["ContentType"] == "application/x-npy"
    got = np.load(io.BytesIO(resp["Body"].read()), allow_pickle=False)
    assert got.shape == (4,)
    assert np.allclose(got, endpoints.predict(x), rtol=0, atol=1e-9)


def test_default_accept_from_environment(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    x = rows(2)
    body = "\n".join(csv_row(r) for r in x)
    resp = rt.invoke_endpoint(EndpointName="inv-csv", ContentType="text/csv", Body=body)
    assert resp["ContentType"] == "text/csv"
    got = [float(v) for v in resp["Body"].read().decode().splitlines()]
    assert len(got) == 2
    # An explicit Accept still wins.
    resp = rt.invoke_endpoint(EndpointName="inv-csv", ContentType="text/csv", Accept="application/json", Body=body)
    assert resp["ContentType"] == "application/json"
    assert np.allclose(json.loads(resp["Body"].read()), got, rtol=0, atol=1e-9)


def test_unsupported_accept_and_content_type_are_model_errors(rt, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = error_of(
        rt.invoke_endpoint, EndpointName="inv-sk", ContentType="text/csv", Accept="image/png", Body=csv_row(rows(1)[0])
    )
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 406
    assert "image/png" in resp["OriginalMessage"]
    resp = error_of(rt.invoke_endpoint, EndpointName="inv-sk", ContentType="application/x-weird", Body=b"abc")
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["OriginalStatusCode"] == 415
    assert "application/x-weird" in resp["OriginalMessage"]
    assert_serving(rt, sm)


# --- headers reaching the model ---------------------------------------------------------------


def test_custom_attributes_and_inference_id(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = rt.invoke_endpoint(
        EndpointName="inv-ctx",
        ContentType="text/csv",
        Accept="application/json",
        Body="1,2,3",
        CustomAttributes="trace=abc;tenant=t1",
        InferenceId="req-42",
    )
    assert resp["CustomAttributes"] == "seen=trace=abc;tenant=t1"
    assert resp["ContentType"] == "application/json"
    got = json.loads(resp["Body"].read())
    assert got == {
        "model": "echo-model",
        "data": "1,2,3",
        "content_type": "text/csv",
        "accept": "application/json",
        "custom_attributes": "trace=abc;tenant=t1",
        "inference_id": "req-42",
        "request_content_type": "text/csv",
        "accept_header": "application/json",
    }
    # Without them the model sees None, and the default accept applies.
    resp = rt.invoke_endpoint(EndpointName="inv-ctx", ContentType="application/json", Body="{}")
    got = json.loads(resp["Body"].read())
    assert got["custom_attributes"] is None and got["inference_id"] is None
    assert got["accept"] == "application/json"
    assert resp["CustomAttributes"] == "seen="


# --- errors -----------------------------------------------------------------------------------


def test_unknown_endpoint(rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = error_of(rt.invoke_endpoint, EndpointName="nope", ContentType="text/csv", Body="1,2")
    assert resp["Error"]["Code"] == "ValidationError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert resp["Error"]["Message"] == f"Endpoint nope of account {ACCOUNT} not found."


def test_body_over_6_mib(rt, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = error_of(
        rt.invoke_endpoint, EndpointName="inv-sk", ContentType="application/octet-stream", Body=b"0" * 6291457
    )
    assert resp["Error"]["Code"] == "ValidationError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "6291457" in resp["Error"]["Message"] and "6291456" in resp["Error"]["Message"]
    assert_serving(rt, sm)


def test_malformed_csv_is_client_model_error(server, rt, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    before = metrics(server)
    resp = error_of(rt.invoke_endpoint, EndpointName="inv-sk", ContentType="text/csv", Body="1,2,abc")
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 400
    assert "could not convert 'abc' to a number" in resp["OriginalMessage"]
    assert "row 1, column 3" in resp["OriginalMessage"]
    assert resp["Error"]["Message"].startswith('Received client error (400) from primary with message "')
    assert resp["LogStreamArn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/inv-sk"
    after = metrics(server)
    assert (
        sample(after, "modelhost_invocation_4xx_errors_total", "inv-sk")
        == sample(before, "modelhost_invocation_4xx_errors_total", "inv-sk") + 1
    )
    assert sample(after, "modelhost_invocation_5xx_errors_total", "inv-sk") == sample(
        before, "modelhost_invocation_5xx_errors_total", "inv-sk"
    )
    assert_serving(rt, sm)


def test_predict_fn_raising_is_server_model_error(server, rt, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    before = metrics(server)
    resp = error_of(rt.invoke_endpoint, EndpointName="inv-faulty", ContentType="application/json", Body='"raise"')
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 500
    assert "RuntimeError: predict exploded" in resp["OriginalMessage"]
    assert resp["Error"]["Message"].startswith("Received server error (500) from primary")
    after = metrics(server)
    assert (
        sample(after, "modelhost_invocation_5xx_errors_total", "inv-faulty")
        == sample(before, "modelhost_invocation_5xx_errors_total", "inv-faulty") + 1
    )
    assert "predict exploded" in server.logs("inv-faulty")
    assert_serving(rt, sm, "inv-faulty")


def test_hanging_model_times_out_and_recovers(server, rt, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    before = metrics(server)
    started = time.monotonic()
    resp = error_of(rt.invoke_endpoint, EndpointName="inv-faulty", ContentType="application/json", Body='"hang"')
    elapsed = time.monotonic() - started
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 0
    assert "timed out" in resp["Error"]["Message"] and "timed out" in resp["OriginalMessage"]
    assert 1.5 <= elapsed < 6, elapsed
    after = metrics(server)
    assert (
        sample(after, "modelhost_invocation_5xx_errors_total", "inv-faulty")
        == sample(before, "modelhost_invocation_5xx_errors_total", "inv-faulty") + 1
    )
    # The hung instance is replaced; the endpoint stays InService and answers again.
    deadline = time.monotonic() + 20
    while True:
        try:
            assert_serving(rt, sm, "inv-faulty")
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert "timed out on a request" in server.logs("inv-faulty")


def test_unknown_target_variant(rt, sm, endpoints) -> None:  # type: ignore[no-untyped-def]
    resp = error_of(
        rt.invoke_endpoint,
        EndpointName="inv-sk",
        ContentType="text/csv",
        Body=csv_row(rows(1)[0]),
        TargetVariant="Canary",
    )
    assert resp["Error"]["Code"] == "ValidationError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Variant Canary not found" in resp["Error"]["Message"]
    resp = rt.invoke_endpoint(
        EndpointName="inv-sk", ContentType="text/csv", Body=csv_row(rows(1)[0]), TargetVariant="AllTraffic"
    )
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert_serving(rt, sm)


def test_invoke_while_creating(server, sm, rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    server.put_object("s3://models/inv/slow.tar.gz", tarball({"code/inference.py": SLOW_CODE}))
    name = "inv-creating"
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/inv/slow.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating"
    resp = error_of(rt.invoke_endpoint, EndpointName=name, ContentType="application/json", Body="[[1]]")
    assert resp["Error"]["Code"] == "ValidationError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert name in resp["Error"]["Message"]
    # Not left running past the test: delete it once it settles.
    wait_status(sm, name, ("InService", "Failed"))
    sm.delete_endpoint(EndpointName=name)


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_count_invocations(server, rt, endpoints) -> None:  # type: ignore[no-untyped-def]
    before = metrics(server)
    for _ in range(3):
        rt.invoke_endpoint(EndpointName="inv-csv", ContentType="text/csv", Body=csv_row(rows(1)[0]))
    after = metrics(server)
    assert (
        sample(after, "modelhost_invocations_total", "inv-csv")
        == sample(before, "modelhost_invocations_total", "inv-csv") + 3
    )
    assert sample(after, "modelhost_invocations_total", "inv-csv") >= 3
    inf = re.search(
        r'^modelhost_model_latency_microseconds_bucket\{endpoint="inv-csv",le="\+Inf",'
        r'variant="AllTraffic"\} (\S+)$',
        after,
        re.MULTILINE,
    )
    assert inf is not None and float(inf.group(1)) == sample(
        after, "modelhost_model_latency_microseconds_count", "inv-csv"
    )
    assert (
        sample(after, "modelhost_model_latency_microseconds_count", "inv-csv")
        == sample(before, "modelhost_model_latency_microseconds_count", "inv-csv") + 3
    )
    assert re.search(r'modelhost_overhead_latency_microseconds_count\{endpoint="inv-csv",variant="AllTraffic"\}', after)
    # Failed lookups (unknown endpoint) are not counted against any endpoint.
    assert 'endpoint="nope"' not in after
