"""Inference pipelines against the real server: the book chapter's PCA -> linear model chain (scikit-learn
standing in for the built-in algorithms) through the sagemaker SDK's PipelineModel on a real-time endpoint
and in batch transform, Direct invocation, and a failing middle container."""

from __future__ import annotations

import json
import os
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from botocore.exceptions import ClientError

import modelhost
from tests.helpers import SKLEARN_IMAGE, Server, diabetes

pytestmark = pytest.mark.slow
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
ROLE = "arn:aws:iam::123456789012:role/modelhost-pipeline"

# The preprocessing container: StandardScaler + PCA, answering CSV so the next container can read it.
PRE_ENTRY = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))

def predict_fn(data, model):
    return model.transform(data)

def output_fn(prediction, accept):
    return "\\n".join(",".join(repr(float(v)) for v in row) for row in prediction), "text/csv"
"""
LR_ENTRY = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
# passes the request on untouched (a cleaning step that lets bad data through to the validator)
PASS_ENTRY = """
def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    return data, content_type
"""


@pytest.fixture(scope="module")
def sess(server: Server) -> Iterator[Any]:
    yield modelhost.sagemaker_session(server.url)


def _tar(path: Path, files: dict[str, Path | str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, src in files.items():
            if isinstance(src, str):
                f = path.parent / f"{path.stem}-{name.replace('/', '_')}"
                f.write_text(src)
                src = f
            tar.add(src, arcname=name)
    return path


@pytest.fixture(scope="module")
def chapter(tmp_path_factory: pytest.TempPathFactory, sess: Any) -> dict[str, Any]:
    """The two trained stages, their artifacts in S3 (code inside the tarballs), and the same
    pipeline run in-process."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    tmp = tmp_path_factory.mktemp("chapter")
    x, y = diabetes()
    pre = make_pipeline(StandardScaler(), PCA(n_components=5)).fit(x)
    lr = LinearRegression().fit(pre.transform(x), y)
    full = Pipeline([("pre", pre), ("lr", lr)])
    joblib.dump(pre, tmp / "pre.joblib")
    joblib.dump(lr, tmp / "lr.joblib")
    pre_tar = _tar(tmp / "pre.tar.gz", {"model.joblib": tmp / "pre.joblib", "code/inference.py": PRE_ENTRY})
    lr_tar = _tar(tmp / "lr.tar.gz", {"model.joblib": tmp / "lr.joblib", "code/inference.py": LR_ENTRY})
    pass_tar = _tar(tmp / "pass.tar.gz", {"code/inference.py": PASS_ENTRY})
    return {
        "x": x,
        "full": full,
        "pre": pre,
        "lr": lr,
        "pre_url": sess.upload_data(str(pre_tar), key_prefix="pipeline/pre"),
        "lr_url": sess.upload_data(str(lr_tar), key_prefix="pipeline/lr"),
        "pass_url": sess.upload_data(str(pass_tar), key_prefix="pipeline/pass"),
    }


def _sdk_pipeline(sess: Any, chapter: dict[str, Any], name: str) -> Any:
    from sagemaker.model import Model
    from sagemaker.pipeline import PipelineModel
    from sagemaker.predictor import Predictor

    pre = Model(image_uri=SKLEARN_IMAGE, model_data=chapter["pre_url"], role=ROLE, sagemaker_session=sess)
    lr = Model(image_uri=SKLEARN_IMAGE, model_data=chapter["lr_url"], role=ROLE, sagemaker_session=sess)
    return PipelineModel(models=[pre, lr], role=ROLE, name=name, predictor_cls=Predictor, sagemaker_session=sess)


def test_chapter_pipeline_realtime(server: Server, sess: Any, chapter: dict[str, Any]) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import CSVSerializer

    pipeline = _sdk_pipeline(sess, chapter, "pca-linearlearner-pipeline")
    predictor = pipeline.deploy(
        initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="pca-linearlearner"
    )
    predictor.serializer, predictor.deserializer = CSVSerializer(), JSONDeserializer()
    x = chapter["x"]
    got = np.array(predictor.predict(x[:20]), dtype=float).ravel()
    assert np.allclose(got, chapter["full"].predict(x[:20]), rtol=1e-9, atol=1e-9)
    desc = sess.sagemaker_client.describe_model(ModelName="pca-linearlearner-pipeline")
    assert [c["ModelDataUrl"] for c in desc["Containers"]] == [chapter["pre_url"], chapter["lr_url"]]
    assert "PrimaryContainer" not in desc
    # per-container latency is published beside the endpoint's ModelLatency
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    name = "modelhost_container_model_latency_microseconds_count"
    assert f'{name}{{container="container-1",endpoint="pca-linearlearner"' in text
    assert 'container="container-2",endpoint="pca-linearlearner"' in text
    # the client's Accept applies to the last container only
    _, rt = server.clients()
    out = rt.invoke_endpoint(
        EndpointName="pca-linearlearner",
        Body="0.01,0.05,0.06,0.02,-0.04,-0.03,-0.04,0.0,0.02,-0.02",
        ContentType="text/csv",
        Accept="text/csv",
    )
    assert out["ContentType"] == "text/csv"
    row = np.array([[0.01, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]])
    assert np.isclose(float(out["Body"].read().decode().strip()), chapter["full"].predict(row)[0])
    predictor.delete_endpoint()


def test_chapter_pipeline_batch_transform(sess: Any, chapter: dict[str, Any], tmp_path: Path) -> None:
    pipeline = _sdk_pipeline(sess, chapter, "pca-linearlearner-batch")
    x = chapter["x"][:100]
    data = tmp_path / "data.csv"
    data.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n")
    batch_input = sess.upload_data(str(data), key_prefix="pipeline-batch/input")
    transformer = pipeline.transformer(
        instance_count=1,
        instance_type="ml.m5.large",
        output_path=f"s3://{sess.default_bucket()}/pipeline-batch/output",
        accept="text/csv",
        assemble_with="Line",
        strategy="MultiRecord",
    )
    transformer.transform(batch_input, content_type="text/csv", split_type="Line", wait=True, logs=False)
    body = sess.read_s3_file(sess.default_bucket(), "pipeline-batch/output/data.csv.out")
    got = np.array([float(v) for v in body.split()])
    assert np.allclose(got, chapter["full"].predict(x), rtol=1e-9, atol=1e-9)


def _create(sm: Any, name: str, containers: list[dict[str, Any]], mode: str | None = None) -> None:
    extra = {"InferenceExecutionConfig": {"Mode": mode}} if mode else {}
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, Containers=containers, **extra)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 240})


def test_direct_invocation(server: Server, chapter: dict[str, Any]) -> None:
    sm, rt = server.clients()
    containers = [
        {"ContainerHostname": "pre", "Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["pre_url"]},
        {"ContainerHostname": "lr", "Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["lr_url"]},
    ]
    _create(sm, "pipeline-direct", containers, "Direct")
    assert sm.describe_model(ModelName="pipeline-direct")["InferenceExecutionConfig"] == {"Mode": "Direct"}
    x = chapter["x"][:3]
    reduced = chapter["pre"].transform(x)
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in reduced)
    out = rt.invoke_endpoint(
        EndpointName="pipeline-direct", Body=csv, ContentType="text/csv", TargetContainerHostname="lr"
    )
    assert np.allclose(json.loads(out["Body"].read()), chapter["lr"].predict(reduced))
    raw = "\n".join(",".join(repr(float(v)) for v in row) for row in x)
    out = rt.invoke_endpoint(
        EndpointName="pipeline-direct", Body=raw, ContentType="text/csv", TargetContainerHostname="pre"
    )
    assert out["ContentType"] == "text/csv"
    got = np.array([[float(v) for v in line.split(",")] for line in out["Body"].read().decode().splitlines()])
    assert np.allclose(got, reduced)
    with pytest.raises(ClientError) as missing:
        rt.invoke_endpoint(EndpointName="pipeline-direct", Body=raw, ContentType="text/csv")
    err = missing.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert "Direct" in err["Message"] and "TargetContainerHostname" in err["Message"]
    with pytest.raises(ClientError) as unknown:
        rt.invoke_endpoint(
            EndpointName="pipeline-direct", Body=raw, ContentType="text/csv", TargetContainerHostname="nope"
        )
    err = unknown.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert "Target container hostname nope is not valid" in err["Message"] and "pre, lr" in err["Message"]
    sm.delete_endpoint(EndpointName="pipeline-direct")


def test_failing_middle_container(server: Server, chapter: dict[str, Any]) -> None:
    sm, rt = server.clients()
    containers = [
        {"ContainerHostname": "clean", "Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["pass_url"]},
        {"ContainerHostname": "pre", "Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["pre_url"]},
        {"ContainerHostname": "lr", "Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["lr_url"]},
    ]
    _create(sm, "pipeline-three", containers)
    good = ",".join(repr(float(v)) for v in chapter["x"][0])
    out = rt.invoke_endpoint(EndpointName="pipeline-three", Body=good, ContentType="text/csv")
    assert np.allclose(json.loads(out["Body"].read()), chapter["full"].predict(chapter["x"][:1]))
    bad = good.rsplit(",", 1)[0] + ",abc"
    with pytest.raises(ClientError) as failed:
        rt.invoke_endpoint(EndpointName="pipeline-three", Body=bad, ContentType="text/csv")
    err = failed.value.response
    assert err["Error"]["Code"] == "ModelError"
    assert err["Error"]["Message"].startswith('Received client error (400) from pre with message "Failed to decode')
    assert err["OriginalStatusCode"] == 400
    assert "could not convert 'abc' to a number" in err["OriginalMessage"]
    with pytest.raises(ClientError) as refused:
        rt.invoke_endpoint(
            EndpointName="pipeline-three", Body=good, ContentType="text/csv", TargetContainerHostname="pre"
        )
    assert "not configured with the Direct inference execution mode" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as mme:
        rt.invoke_endpoint(EndpointName="pipeline-three", Body=good, ContentType="text/csv", TargetModel="a.tar.gz")
    assert (
        "is not a multi-model endpoint and does not support target model header"
        in (mme.value.response["Error"]["Message"])
    )
    sm.delete_endpoint(EndpointName="pipeline-three")


@pytest.mark.parametrize(
    ("containers", "mode", "message"),
    [
        ([{"Image": SKLEARN_IMAGE}, {"Image": SKLEARN_IMAGE}], "Direct", "every container when"),
        ([{"Image": SKLEARN_IMAGE, "ContainerHostname": "a"}, {"Image": SKLEARN_IMAGE}], None, "or for none"),
        (
            [{"Image": SKLEARN_IMAGE, "ContainerHostname": "a"}, {"Image": SKLEARN_IMAGE, "ContainerHostname": "a"}],
            None,
            "unique within a model",
        ),
    ],
)
def test_create_model_rules(server: Server, containers: list[dict[str, Any]], mode: str | None, message: str) -> None:
    sm, _ = server.clients()
    extra = {"InferenceExecutionConfig": {"Mode": mode}} if mode else {}
    with pytest.raises(ClientError) as exc:
        sm.create_model(ModelName="bad-pipeline", ExecutionRoleArn=ROLE, Containers=containers, **extra)
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert message in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as both:
        sm.create_model(
            ModelName="bad-pipeline", ExecutionRoleArn=ROLE, PrimaryContainer=containers[0], Containers=containers
        )
    assert "Exactly one of PrimaryContainer or Containers" in both.value.response["Error"]["Message"]


def test_pipeline_async_endpoint(server: Server, sess: Any, chapter: dict[str, Any], tmp_path: Path) -> None:
    """An async endpoint over the chapter's pipeline: the input streams into the first container, the
    last one's answer streams into the output object."""
    sm, rt = server.clients()
    bucket = sess.default_bucket()
    sm.create_model(
        ModelName="pipeline-async",
        ExecutionRoleArn=ROLE,
        Containers=[
            {"Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["pre_url"]},
            {"Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["lr_url"]},
        ],
    )
    sm.create_endpoint_config(
        EndpointConfigName="pipeline-async",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "pipeline-async", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{bucket}/pipeline-async/out"}},
    )  # fmt: skip
    sm.create_endpoint(EndpointName="pipeline-async", EndpointConfigName="pipeline-async")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="pipeline-async", WaiterConfig={"Delay": 1})
    x = chapter["x"][:50]
    server.put_object(
        f"s3://{bucket}/pipeline-async/in.csv", "\n".join(",".join(repr(float(v)) for v in r) for r in x).encode()
    )
    out = rt.invoke_endpoint_async(
        EndpointName="pipeline-async", InputLocation=f"s3://{bucket}/pipeline-async/in.csv", ContentType="text/csv"
    )
    key = out["OutputLocation"].removeprefix(f"s3://{bucket}/")
    deadline = time.monotonic() + 60
    while True:
        try:
            body = sess.read_s3_file(bucket, key)
            break
        except ClientError:
            assert time.monotonic() < deadline, "no async output"
            time.sleep(0.2)
    assert np.allclose(json.loads(body), chapter["full"].predict(x), rtol=1e-9, atol=1e-9)
    sm.delete_endpoint(EndpointName="pipeline-async")


def test_pipeline_blue_green_update(server: Server, chapter: dict[str, Any]) -> None:
    """A pipeline endpoint updated to a single-container model and back, serving throughout."""
    sm, rt = server.clients()
    containers = [
        {"Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["pre_url"]},
        {"Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["lr_url"]},
    ]
    _create(sm, "pipeline-bg", containers)
    sm.create_model(
        ModelName="pipeline-bg-pre",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": chapter["pre_url"]},
    )
    sm.create_endpoint_config(
        EndpointConfigName="pipeline-bg-pre",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "pipeline-bg-pre", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}
        ],
    )  # fmt: skip
    row = ",".join(repr(float(v)) for v in chapter["x"][0])
    sm.update_endpoint(EndpointName="pipeline-bg", EndpointConfigName="pipeline-bg-pre")
    while sm.describe_endpoint(EndpointName="pipeline-bg")["EndpointStatus"] == "Updating":
        out = rt.invoke_endpoint(EndpointName="pipeline-bg", Body=row, ContentType="text/csv")
        assert out["Body"].read()
        time.sleep(0.1)
    assert sm.describe_endpoint(EndpointName="pipeline-bg")["EndpointStatus"] == "InService"
    out = rt.invoke_endpoint(EndpointName="pipeline-bg", Body=row, ContentType="text/csv")
    assert out["ContentType"] == "text/csv"  # now the preprocessing container alone
    got = [float(v) for v in out["Body"].read().decode().split(",")]
    assert np.allclose(got, chapter["pre"].transform(chapter["x"][:1])[0])
    sm.delete_endpoint(EndpointName="pipeline-bg")
