"""s3:// artifacts from a real S3-compatible service (moto's S3 server) instead of the embedded
bucket store, configured with MODELHOST_S3_ENDPOINT_URL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.helpers import (
    ROLE,
    SKLEARN_IMAGE,
    Server,
    csv_row,
    deploy,
    diabetes,
    moto_s3,
    s3_backed_server,
    sklearn_model,
    wait_status,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[Server]:
    with s3_backed_server(tmp_path_factory.mktemp("remote") / "data", moto_url) as srv:
        yield srv


def test_model_artifacts_from_a_real_s3_service(server: Server, moto_url: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="remote-models")
    data, model = sklearn_model()
    s3.put_object(Bucket="remote-models", Key="sk/model.tar.gz", Body=data)
    import io

    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    s3.put_object(Bucket="remote-models", Key="plain/model.joblib", Body=buf.getvalue())
    sm, rt = server.clients()
    desc = deploy(sm, "remote-tar", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://remote-models/sk/model.tar.gz"})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    desc = deploy(
        sm,
        "remote-prefix",
        {
            "Image": SKLEARN_IMAGE,
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": "s3://remote-models/plain/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            },
        },
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    x, _ = diabetes()
    row = csv_row(x[0])
    expected = model.predict([[float(v) for v in row.split(",")]])[0]
    for name in ("remote-tar", "remote-prefix"):
        got = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=row)["Body"].read())
        assert abs(got[0] - expected) < 1e-9
    # nothing was written to the embedded bucket store: the objects came from the service
    assert not (server.data_dir / "buckets" / "remote-models").exists()
    desc = deploy(sm, "remote-missing", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://remote-models/nope.tar.gz"})
    assert desc["EndpointStatus"] == "Failed"
    assert "s3://remote-models/nope.tar.gz" in desc["FailureReason"]


def test_async_inference_reads_and_writes_the_real_s3_service(server: Server, moto_url: str) -> None:
    """With a configured S3, InputLocation is read from it and output/failure objects are written to it."""
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for bucket in ("async-remote-in", "async-remote-out", "async-remote-models"):
        s3.create_bucket(Bucket=bucket)
    data, model = sklearn_model()
    s3.put_object(Bucket="async-remote-models", Key="sk/model.tar.gz", Body=data)
    x, _ = diabetes()
    rows = "\n".join(csv_row(v) for v in x[:3])
    s3.put_object(Bucket="async-remote-in", Key="req/input.csv", Body=rows.encode())

    sm, rt = server.clients()
    name = "remote-async"
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://async-remote-models/sk/model.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": "s3://async-remote-out/results",
                "S3FailurePath": "s3://async-remote-out/failures",
            }
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    desc = wait_status(sm, name, ("InService", "Failed"))
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    def wait_object(uri: str, timeout: float = 60) -> dict:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = s3.get_object(Bucket=bucket, Key=key)
                return {"body": got["Body"].read(), "content_type": got["ContentType"]}
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "NoSuchKey", exc
            if time.monotonic() > deadline:
                raise AssertionError(f"object {uri} did not appear")
            time.sleep(0.2)

    resp = rt.invoke_endpoint_async(
        EndpointName=name,
        InputLocation="s3://async-remote-in/req/input.csv",
        ContentType="text/csv",
        InferenceId="remote-ok",
    )
    assert resp["OutputLocation"] == "s3://async-remote-out/results/remote-ok.out"
    assert resp["FailureLocation"] == "s3://async-remote-out/failures/remote-ok-error.out"
    out = wait_object(resp["OutputLocation"])
    assert out["content_type"] == "application/json"
    expected = model.predict([[float(v) for v in line.split(",")] for line in rows.splitlines()])
    got = json.loads(out["body"])
    assert len(got) == 3 and all(abs(a - b) < 1e-9 for a, b in zip(got, expected, strict=True))

    # A missing input object in the service: a failure object there, not a lost request.
    resp = rt.invoke_endpoint_async(
        EndpointName=name,
        InputLocation="s3://async-remote-in/req/missing.csv",
        ContentType="text/csv",
        InferenceId="remote-missing",
    )
    failure = wait_object(resp["FailureLocation"])
    assert failure["content_type"] == "text/plain"
    assert failure["body"] == (
        b"RequestDownloadFailure: Could not download s3://async-remote-in/req/missing.csv: the object does not exist."
    )
    assert "Contents" not in s3.list_objects_v2(Bucket="async-remote-out", Prefix="results/remote-missing")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="async-remote-out")["Contents"])
    assert keys == ["failures/remote-missing-error.out", "results/remote-ok.out"]
    # Nothing went to the embedded bucket store, and no temp files are left behind.
    for bucket in ("async-remote-in", "async-remote-out"):
        assert not (server.data_dir / "buckets" / bucket).exists()
    assert list((server.data_dir / "async" / "tmp").iterdir()) == []


def _transform(sm: Any, name: str, model: str, uri: str, out: str) -> dict:
    from botocore.exceptions import WaiterError

    sm.create_transform_job(
        TransformJobName=name,
        ModelName=model,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": out, "Accept": "text/csv", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    try:
        sm.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 400}
        )
    except WaiterError as exc:  # the waiter fails fast on Failed; the test checks the description
        assert "Failed" in str(exc), exc
    return dict(sm.describe_transform_job(TransformJobName=name))


def test_batch_transform_reads_and_writes_the_real_s3_service(server: Server, moto_url: str) -> None:
    """With a configured S3, a transform job's inputs come from it and its .out objects go to it."""
    s3 = moto_s3(moto_url)
    for bucket in ("batch-remote-in", "batch-remote-out", "batch-remote-models"):
        s3.create_bucket(Bucket=bucket)
    data, model = sklearn_model()
    s3.put_object(Bucket="batch-remote-models", Key="sk/model.tar.gz", Body=data)
    x, _ = diabetes()
    parts = {"in/a.csv": x[:4], "in/sub/b.csv": x[4:7]}
    for key, rows in parts.items():
        s3.put_object(Bucket="batch-remote-in", Key=key, Body="".join(csv_row(r) + "\n" for r in rows).encode())
    sm, _ = server.clients()
    sm.create_model(
        ModelName="remote-batch",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://batch-remote-models/sk/model.tar.gz"},
    )

    desc = _transform(sm, "remote-batch", "remote-batch", "s3://batch-remote-in/in/", "s3://batch-remote-out/res")
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    listed = s3.list_objects_v2(Bucket="batch-remote-out")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["res/a.csv.out", "res/sub/b.csv.out"]
    for key, rows in parts.items():
        got = s3.get_object(Bucket="batch-remote-out", Key=f"res/{key.removeprefix('in/')}.out")
        assert got["ContentType"] == "text/csv"
        out = got["Body"].read().decode().splitlines()
        expected = model.predict([[float(v) for v in csv_row(r).split(",")] for r in rows])
        assert len(out) == len(rows) and all(abs(float(a) - b) < 1e-9 for a, b in zip(out, expected, strict=True))
    # Nothing went through the embedded bucket store.
    for bucket in ("batch-remote-in", "batch-remote-out"):
        assert not (server.data_dir / "buckets" / bucket).exists()

    # An output bucket the service does not have: the job fails naming it, nothing is written.
    desc = _transform(sm, "remote-batch-nobucket", "remote-batch", "s3://batch-remote-in/in/", "s3://no-such-out/res")
    assert desc["TransformJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("ClientError: S3OutputPath s3://no-such-out/res cannot be written: ")
    assert "no-such-out does not exist" in desc["FailureReason"], desc["FailureReason"]
    assert "no-such-out" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
