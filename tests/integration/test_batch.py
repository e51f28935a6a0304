"""Batch transform jobs against a real server: boto3 and the sagemaker SDK (v2) unchanged.

The seed flows (the Hugging Face guide's input.jsonl, the book's data.csv -> data.csv.out), every
SplitType, both strategies and assemble modes, gzip, manifests, join/filter, failures, payload
limits, stop and restart mid-job, and the control-plane errors.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from botocore.exceptions import ClientError, WaiterError

import modelhost
from modelhost.jobs.progress import describe_with_progress
from modelhost.jobs.splitters import RECORDIO_MAGIC, recordio_frame, tfrecord_frame
from tests.helpers import (
    PYTHON_IMAGE,
    ROLE,
    SKLEARN_IMAGE,
    Server,
    csv_row,
    diabetes,
    sklearn_model,
    stored_keys,
    stored_object,
    tarball,
)

pytestmark = pytest.mark.slow
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

ARN = "arn:aws:sagemaker:us-east-1:123456789012"
BUCKET = "sagemaker-us-east-1-123456789012"
HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
    "1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04"
)
HF_VERSIONS = {"transformers_version": "4.26", "pytorch_version": "1.13", "py_version": "py39"}
SEED_JSONL = (
    '{"inputs":"this movie is terrible"}\n'
    '{"inputs":"this movie is amazing"}\n'
    '{"inputs":"SageMaker is pretty cool"}\n'
    '{"inputs":"SageMaker is pretty cool"}\n'
    '{"inputs":"this movie is terrible"}\n'
    '{"inputs":"this movie is amazing"}\n'
)

ECHO_CODE = """
import json, os, time

MAGIC = bytes.fromhex("0a23d7ce")
ENV = ("SAGEMAKER_BATCH", "SAGEMAKER_MAX_PAYLOAD_IN_MB", "SAGEMAKER_BATCH_STRATEGY",
       "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "JOB_VAR", "MODEL_VAR")

def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"FAIL" in raw:
        raise ValueError("the model cannot transform FAIL records")
    if b"SLOW" in raw:
        time.sleep(0.25)
    if content_type == "application/x-env":
        return json.dumps({k: os.environ.get(k) for k in ENV}), "application/json"
    if content_type in ("application/x-recordio", "application/x-tfrecord"):
        return json.dumps({"bytes": len(raw), "magic": raw.count(MAGIC), "head": raw[:8].hex()}), "application/json"
    return "\\n".join("ok:" + line for line in raw.decode().splitlines()), "text/plain"
"""


CSV_IN = {"ContentType": "text/csv", "SplitType": "Line"}
CSV_OUT = {"Accept": "text/csv", "AssembleWith": "Line"}
ENV_IN = {"ContentType": "application/x-env"}


def job(sm: Any, name: str, model: str, uri: str, out: str, wait: bool = True, **kw: Any) -> dict:
    """CreateTransformJob with defaults, then wait with the botocore waiter."""
    tin = {"DataSource": {"S3DataSource": {"S3DataType": kw.pop("data_type", "S3Prefix"), "S3Uri": uri}}}
    tin.update(kw.pop("tin", {}))
    tout = {"S3OutputPath": out, **kw.pop("tout", {})}
    sm.create_transform_job(
        TransformJobName=name,
        ModelName=model,
        TransformInput=tin,
        TransformOutput=tout,
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": kw.pop("instances", 1)},
        **kw,
    )
    if not wait:
        return {}
    try:
        sm.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 400}
        )
    except WaiterError as exc:  # the waiter fails fast on Failed; tests check the description
        assert "Failed" in str(exc), exc
    desc, desc["ModelhostProgress"] = describe_with_progress(sm, name)
    return desc


def read(server: Server, uri: str) -> bytes:
    data = stored_object(server.data_dir, uri)
    assert data is not None, f"no object at {uri}"
    return data


def exists(server: Server, uri: str) -> bool:
    return stored_object(server.data_dir, uri) is not None


def expect_error(fn: Any, code: str, message: str, **kw: Any) -> None:
    with pytest.raises(ClientError) as err:
        fn(**kw)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["Error"]["Message"] == message


@pytest.fixture(scope="module")
def models(server: Server, sm: Any) -> dict[str, Any]:
    """An sklearn model ("skl") and the echo model ("echo") in the bucket store."""
    data, fitted = sklearn_model()
    server.put_object("s3://models/skl/model.tar.gz", data)
    sm.create_model(
        ModelName="skl",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/skl/model.tar.gz"},
    )
    server.put_object("s3://models/echo/model.tar.gz", tarball({"code/inference.py": ECHO_CODE}))
    sm.create_model(
        ModelName="echo",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": PYTHON_IMAGE,
            "ModelDataUrl": "s3://models/echo/model.tar.gz",
            "Environment": {"MODEL_VAR": "from-model"},
        },
    )
    return {"skl": fitted}


# --- the seed flows ------------------------------------------------------------------------------


def test_book_csv_flow_boto3(server: Server, sm: Any, models: dict) -> None:
    """The book's batch: data.csv (no target column) -> data.csv.out with one prediction per row."""
    x, _ = diabetes()
    server.put_object("s3://batch/book/data.csv", "".join(csv_row(r) + "\n" for r in x).encode())
    desc = job(
        sm,
        "book-csv",
        "skl",
        "s3://batch/book/data.csv",
        "s3://batch/book-out",
        tin=CSV_IN,
        tout=CSV_OUT,
        BatchStrategy="MultiRecord",
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["TransformJobArn"] == f"{ARN}:transform-job/book-csv"
    assert desc["ModelName"] == "skl" and desc["BatchStrategy"] == "MultiRecord"
    assert desc["TransformInput"]["SplitType"] == "Line" and desc["TransformOutput"]["AssembleWith"] == "Line"
    assert desc["TransformStartTime"] <= desc["TransformEndTime"] and desc["CreationTime"] <= desc["TransformStartTime"]
    out = read(server, "s3://batch/book-out/data.csv.out").decode().splitlines()
    expected = models["skl"].predict(np.array([[float(v) for v in csv_row(r).split(",")] for r in x]))
    assert len(out) == len(x) and np.allclose([float(v) for v in out], expected)
    assert sm.list_tags(ResourceArn=desc["TransformJobArn"])["Tags"] == [{"Key": "team", "Value": "ml"}]


def _hf_model(server: Server, sm: Any, tmp: Path) -> str:
    pytest.importorskip("transformers")
    from tests import hf_models

    model_dir = hf_models.nli_classifier(tmp / "nli")
    server.put_object("s3://models/hf-nli/model.tar.gz", tarball(hf_models.dir_files(model_dir)))
    sm.create_model(
        ModelName="hf-nli",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": HF_IMAGE,
            "ModelDataUrl": "s3://models/hf-nli/model.tar.gz",
            "Environment": {"HF_TASK": "text-classification"},
        },
    )
    return "hf-nli"


def test_huggingface_jsonl_multirecord_is_one_batch_per_request(server: Server, sm: Any, tmp_path: Path) -> None:
    """The guide's input.jsonl with content_type application/json and split_type Line: a MultiRecord
    batch is decoded as one pipeline batch and answered with one line per input line."""
    model = _hf_model(server, sm, tmp_path)
    server.put_object("s3://batch/hf/input.jsonl", SEED_JSONL.encode())
    multi = job(
        sm,
        "hf-multi",
        model,
        "s3://batch/hf/input.jsonl",
        "s3://batch/hf-multi",
        tin={"ContentType": "application/json", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="MultiRecord",
    )
    single = job(
        sm,
        "hf-single",
        model,
        "s3://batch/hf/input.jsonl",
        "s3://batch/hf-single",
        tin={"ContentType": "application/json", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
    )
    assert multi["TransformJobStatus"] == single["TransformJobStatus"] == "Completed", multi.get("FailureReason")
    lines = read(server, "s3://batch/hf-multi/input.jsonl.out").decode().splitlines()
    assert len(lines) == 6
    docs = [json.loads(line) for line in lines]
    for doc in docs:
        assert isinstance(doc, list) and set(doc[0]) == {"label", "score"}
        assert doc[0]["label"] in {"entailment", "neutral", "contradiction"}
    # same sentences, same predictions; and one request per line gives the same lines
    assert docs[0] == docs[4] and docs[2] == docs[3]
    single_docs = [
        json.loads(line) for line in read(server, "s3://batch/hf-single/input.jsonl.out").decode().splitlines()
    ]
    assert [d[0]["label"] for d in single_docs] == [d[0]["label"] for d in docs]
    assert np.allclose([d[0]["score"] for d in single_docs], [d[0]["score"] for d in docs], atol=1e-5)
    log = (server.data_dir / "logs" / "transform-jobs" / "hf-multi.log").read_text()
    assert "6 records" in log and "BatchStrategy=MultiRecord" in log


@pytest.fixture(scope="module")
def sess(server: Server) -> Iterator[Any]:
    yield modelhost.sagemaker_session(server.url)


def test_sdk_huggingface_transformer(server: Server, sess: Any, tmp_path: Path) -> None:
    """HuggingFaceModel(...).transformer(...).transform(data, content_type="application/json", split_type="Line")."""
    pytest.importorskip("transformers")
    from sagemaker.huggingface.model import HuggingFaceModel

    from tests import hf_models

    model_dir = hf_models.nli_classifier(tmp_path / "nli")
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(tarball(hf_models.dir_files(model_dir)))
    model_data = sess.upload_data(str(archive), key_prefix="sdk-batch-hf")
    (tmp_path / "input.jsonl").write_text(SEED_JSONL)
    data = sess.upload_data(str(tmp_path / "input.jsonl"), key_prefix="sdk-batch-hf/samples")
    huggingface_model = HuggingFaceModel(
        model_data=model_data,
        env={"HF_TASK": "text-classification"},
        role=ROLE,
        sagemaker_session=sess,
        **HF_VERSIONS,
    )
    batch_job = huggingface_model.transformer(
        instance_count=1,
        instance_type="ml.m5.xlarge",
        strategy="MultiRecord",
        assemble_with="Line",
        output_path=f"s3://{BUCKET}/sdk-batch-hf/out",
    )
    batch_job.transform(data=data, content_type="application/json", split_type="Line", wait=True, logs=False)
    desc = sess.sagemaker_client.describe_transform_job(TransformJobName=batch_job.latest_transform_job.name)
    assert desc["TransformJobStatus"] == "Completed"
    lines = sess.read_s3_file(BUCKET, "sdk-batch-hf/out/input.jsonl.out").splitlines()
    assert len(lines) == 6 and all(set(json.loads(line)[0]) == {"label", "score"} for line in lines)


SKLEARN_ENTRY = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def test_sdk_sklearn_transformer_with_logs(server: Server, sess: Any, tmp_path: Path, capsys: Any) -> None:
    """The book: sk.transformer(...).transform(batch_input, content_type='text/csv', wait=True, logs=True);
    logs=True reads the job's log through DescribeLogStreams / GetLogEvents."""
    from sagemaker.sklearn.model import SKLearnModel
    from sklearn.linear_model import LinearRegression

    x, y = diabetes()
    fitted = LinearRegression().fit(x, y)
    joblib.dump(fitted, tmp_path / "model.joblib")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model.joblib", arcname="model.joblib")
    src = tmp_path / "src"
    src.mkdir()
    (src / "entry.py").write_text(SKLEARN_ENTRY)
    model_data = sess.upload_data(str(tmp_path / "model.tar.gz"), key_prefix="sdk-batch-sk")
    np.savetxt(tmp_path / "data.csv", x, delimiter=",", fmt="%.6f")
    batch_input = sess.upload_data(path=str(tmp_path / "data.csv"), key_prefix="sdk-batch-sk/batch")
    sk = SKLearnModel(
        model_data=model_data,
        role=ROLE,
        entry_point="entry.py",
        source_dir=str(src),
        framework_version="1.2-1",
        sagemaker_session=sess,
    )
    sk_transformer = sk.transformer(instance_count=1, instance_type="ml.m5.large")
    sk_transformer.transform(batch_input, content_type="text/csv", split_type="Line", wait=True, logs=True)
    printed = capsys.readouterr().out
    assert "transform job" in printed and "records" in printed and "instance passed /ping" in printed
    out_uri = sk_transformer.output_path.rstrip("/") + "/data.csv.out"
    assert out_uri.startswith("s3://")
    bucket, key = out_uri.removeprefix("s3://").split("/", 1)
    text = sess.read_s3_file(bucket, key)
    values = [v for line in text.splitlines() for v in json.loads(line)]  # JSON arrays, one per request
    expected = fitted.predict(np.loadtxt(tmp_path / "data.csv", delimiter=","))
    assert len(values) == len(x) and np.allclose(values, expected)
    logs = sess.boto_session.client("logs", endpoint_url=server.url)
    streams = logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TransformJobs", logStreamNamePrefix=sk_transformer.latest_transform_job.name + "/"
    )
    assert [s["logStreamName"] for s in streams["logStreams"]] == [
        sk_transformer.latest_transform_job.name + "/instance-0"
    ]
    with pytest.raises(ClientError) as err:
        logs.get_log_events(logGroupName="/aws/sagemaker/Nope", logStreamName="x/instance-0")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


# --- split types, strategies, assembly ------------------------------------------------------------


def test_line_strategies_and_assemble_modes(server: Server, sm: Any, models: dict) -> None:
    text = "".join(f"line-{i}\n" for i in range(5))
    server.put_object("s3://batch/lines/a.txt", text.encode())
    single = job(
        sm,
        "line-single",
        "echo",
        "s3://batch/lines/",
        "s3://batch/line-single",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
    )
    assert single["TransformJobStatus"] == "Completed", single.get("FailureReason")
    assert read(server, "s3://batch/line-single/a.txt.out").decode() == "".join(f"ok:line-{i}\n" for i in range(5))
    none = job(
        sm,
        "line-single-none",
        "echo",
        "s3://batch/lines/",
        "s3://batch/line-none",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "None"},
        BatchStrategy="SingleRecord",
    )
    assert none["TransformJobStatus"] == "Completed"
    assert read(server, "s3://batch/line-none/a.txt.out").decode() == "".join(f"ok:line-{i}" for i in range(5))
    # MultiRecord over a 1 MB limit: several requests, each a run of whole lines, in order
    big = "".join(f"row-{i:06d}-" + "x" * 90 + "\n" for i in range(25000))  # ~2.5 MB
    server.put_object("s3://batch/big/big.txt", big.encode())
    multi = job(
        sm,
        "line-multi",
        "echo",
        "s3://batch/big/",
        "s3://batch/line-multi",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
    )
    assert multi["TransformJobStatus"] == "Completed"
    out = read(server, "s3://batch/line-multi/big.txt.out").decode().splitlines()
    assert out == ["ok:" + line for line in big.splitlines()]
    assert multi["ModelhostProgress"]["RecordsProcessed"] == 25000
    multi_none = job(
        sm,
        "line-multi-none",
        "echo",
        "s3://batch/big/",
        "s3://batch/line-multi-none",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
    )
    raw = read(server, "s3://batch/line-multi-none/big.txt.out").decode()
    # AssembleWith None: responses concatenated as they came (no newline between requests)
    assert raw.count("\n") == 25000 - 3  # three requests; no newline after each one's last line
    assert [part.rstrip("\n") for part in raw.split("ok:")[1:]] == big.splitlines()
    assert multi_none["TransformJobStatus"] == "Completed"


def test_split_none_sends_the_whole_object(server: Server, sm: Any, models: dict) -> None:
    server.put_object("s3://batch/whole/doc.txt", b"first\nsecond\n")
    desc = job(
        sm, "split-none", "echo", "s3://batch/whole/", "s3://batch/split-none", tin={"ContentType": "text/plain"}
    )
    assert desc["TransformJobStatus"] == "Completed"
    assert desc["TransformInput"].get("SplitType", "None") == "None"
    assert read(server, "s3://batch/split-none/doc.txt.out") == b"ok:first\nok:second"


@pytest.mark.parametrize("strategy", ["SingleRecord", "MultiRecord"])
def test_recordio_and_tfrecord(server: Server, sm: Any, models: dict, strategy: str) -> None:
    payloads = [b"alpha", b"bravo-charlie", b"d" * 1000]
    server.put_object("s3://batch/rio/data.rec", b"".join(recordio_frame(p) for p in payloads))
    server.put_object("s3://batch/tfr/data.tfrecord", b"".join(tfrecord_frame(p) for p in payloads))
    for split_type, ctype, prefix, frame in (
        ("RecordIO", "application/x-recordio", "rio", recordio_frame),
        ("TFRecord", "application/x-tfrecord", "tfr", tfrecord_frame),
    ):
        name = f"{prefix}-{strategy.lower()}"
        desc = job(
            sm,
            name,
            "echo",
            f"s3://batch/{prefix}/",
            f"s3://batch/{name}",
            tin={"ContentType": ctype, "SplitType": split_type},
            tout={"AssembleWith": "Line"},
            BatchStrategy=strategy,
        )
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        key = "data.rec.out" if prefix == "rio" else "data.tfrecord.out"
        docs = [json.loads(line) for line in read(server, f"s3://batch/{name}/{key}").decode().splitlines()]
        if strategy == "SingleRecord":  # framing stripped: the model sees each payload
            assert [d["bytes"] for d in docs] == [len(p) for p in payloads]
            assert [d["magic"] for d in docs] == [0, 0, 0]
        else:  # one request with the framed records, as they sit in the file
            assert len(docs) == 1 and docs[0]["bytes"] == sum(len(frame(p)) for p in payloads)
            if split_type == "RecordIO":
                assert docs[0]["magic"] == 3 and docs[0]["head"][:8] == struct.pack("<I", RECORDIO_MAGIC).hex()


def test_gzip_manifest_and_several_instances(server: Server, sm: Any, models: dict) -> None:
    for i in range(4):
        body = "".join(f"obj{i}-line{j}\n" for j in range(50)).encode()
        server.put_object(f"s3://batch/gz/part-{i}.txt.gz", gzip.compress(body))
    manifest = [{"prefix": "s3://batch/gz/"}, "part-0.txt.gz", "part-2.txt.gz", "part-3.txt.gz"]
    server.put_object("s3://batch/manifests/m.json", json.dumps(manifest).encode())
    desc = job(
        sm,
        "gz-manifest",
        "echo",
        "s3://batch/manifests/m.json",
        "s3://batch/gz-out",
        data_type="ManifestFile",
        tin={"ContentType": "text/plain", "SplitType": "Line", "CompressionType": "Gzip"},
        tout={"AssembleWith": "Line"},
        instances=2,
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    for i in (0, 2, 3):
        lines = read(server, f"s3://batch/gz-out/part-{i}.txt.gz.out").decode().splitlines()
        assert lines == [f"ok:obj{i}-line{j}" for j in range(50)]
    assert not exists(server, "s3://batch/gz-out/part-1.txt.gz.out")
    log = (server.data_dir / "logs" / "transform-jobs" / "gz-manifest.log").read_text()
    assert "(instance/0)" in log and "(instance/1)" in log  # objects spread over both instances


def test_environment_and_execution_parameters(server: Server, sm: Any, models: dict) -> None:
    server.put_object("s3://batch/env/x.env", b"{}")
    desc = job(
        sm,
        "env-vars",
        "echo",
        "s3://batch/env/",
        "s3://batch/env-out",
        tin=ENV_IN,
        BatchStrategy="SingleRecord",
        MaxPayloadInMB=5,
        MaxConcurrentTransforms=2,
        Environment={"JOB_VAR": "from-job"},
    )
    assert desc["Environment"] == {"JOB_VAR": "from-job"}
    env = json.loads(read(server, "s3://batch/env-out/x.env.out"))
    assert env == {
        "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "5",
        "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2",
        "JOB_VAR": "from-job",
        "MODEL_VAR": "from-model",
    }
    # unset values: only SAGEMAKER_BATCH is set, the rest come from GET /execution-parameters
    job(sm, "env-defaults", "echo", "s3://batch/env/", "s3://batch/env-defaults", tin=ENV_IN)
    env = json.loads(read(server, "s3://batch/env-defaults/x.env.out"))
    assert env["SAGEMAKER_BATCH"] == "true" and env["SAGEMAKER_BATCH_STRATEGY"] is None
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] is None and env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] is None
    log = (server.data_dir / "logs" / "transform-jobs" / "env-defaults.log").read_text()
    asked = (
        '/execution-parameters: {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}'
    )
    assert asked in log
    assert "BatchStrategy=MultiRecord MaxPayloadInMB=6 MaxConcurrentTransforms=2" in log


# --- data processing -----------------------------------------------------------------------------


def test_csv_join_and_filters(server: Server, sm: Any, models: dict) -> None:
    """The guide's CSV example: an ID column the model must not see, joined back with the prediction."""
    x, _ = diabetes()
    rows = [f"id-{i}," + csv_row(r) for i, r in enumerate(x[:20])]
    server.put_object("s3://batch/join/data.csv", ("\n".join(rows) + "\n").encode())
    desc = job(
        sm,
        "csv-join",
        "skl",
        "s3://batch/join/",
        "s3://batch/join-out",
        tin=CSV_IN,
        tout=CSV_OUT,
        BatchStrategy="MultiRecord",
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["DataProcessing"] == {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}
    out = [line.split(",") for line in read(server, "s3://batch/join-out/data.csv.out").decode().splitlines()]
    expected = models["skl"].predict(np.array([[float(v) for v in csv_row(r).split(",")] for r in x[:20]]))
    assert [o[0] for o in out] == [f"id-{i}" for i in range(20)]
    assert np.allclose([float(o[1]) for o in out], expected)
    # join without filters: every input column, then the output column
    desc = job(
        sm,
        "csv-join-all",
        "skl",
        "s3://batch/join/",
        "s3://batch/join-all",
        tin=CSV_IN,
        tout=CSV_OUT,
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input"},
    )
    first = read(server, "s3://batch/join-all/data.csv.out").decode().splitlines()[0].split(",")
    assert first[:11] == rows[0].split(",") and len(first) == 12
    # an OutputFilter index out of range fails the object
    desc = job(
        sm,
        "csv-filter-range",
        "skl",
        "s3://batch/join/",
        "s3://batch/join-range",
        tin=CSV_IN,
        tout=CSV_OUT,
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[40]"},
    )
    assert desc["TransformJobStatus"] == "Failed"
    assert "s3://batch/join/data.csv" in desc["FailureReason"]
    assert "$[40]: index 40 is out of range for a record of 12 elements" in desc["FailureReason"]
    assert not exists(server, "s3://batch/join-range/data.csv.out")


def test_generate_inference_id(server: Server, sm: Any, models: dict) -> None:
    x, _ = diabetes()
    server.put_object("s3://batch/infid/d.csv", "".join(csv_row(r) + "\n" for r in x[:3]).encode())
    desc = job(
        sm,
        "inference-id",
        "skl",
        "s3://batch/infid/",
        "s3://batch/infid-out",
        tin=CSV_IN,
        tout=CSV_OUT,
        DataCaptureConfig={"DestinationS3Uri": "s3://batch/capture", "GenerateInferenceId": True},
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    rows = [line.split(",") for line in read(server, "s3://batch/infid-out/d.csv.out").decode().splitlines()]
    assert len(rows) == 3 and all(len(r) == 3 and len(r[1]) == 36 and r[2].endswith("Z") for r in rows)
    assert len({r[1] for r in rows}) == 3


# --- failures ------------------------------------------------------------------------------------


def test_failing_record_fails_its_object_only(server: Server, sm: Any, models: dict) -> None:
    server.put_object("s3://batch/fail/a.txt", b"one\ntwo\n")
    server.put_object("s3://batch/fail/b.txt", b"three\nFAIL\nfour\n")
    server.put_object("s3://batch/fail/c.txt", b"five\n")
    desc = job(
        sm,
        "failing-record",
        "echo",
        "s3://batch/fail/",
        "s3://batch/fail-out",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
        ModelClientConfig={"InvocationsMaxRetries": 1},
    )
    assert desc["TransformJobStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert reason.startswith(
        "ClientError: Failed to transform s3://batch/fail/b.txt: record 2: the model returned HTTP 500"
    )
    assert "the model cannot transform FAIL records" in reason
    assert read(server, "s3://batch/fail-out/a.txt.out") == b"ok:one\nok:two\n"
    assert read(server, "s3://batch/fail-out/c.txt.out") == b"ok:five\n"
    assert not exists(server, "s3://batch/fail-out/b.txt.out")
    assert "retrying (1/1)" in (server.data_dir / "logs" / "transform-jobs" / "failing-record.log").read_text()
    listed = sm.list_transform_jobs(NameContains="failing-record")["TransformJobSummaries"]
    assert listed[0]["TransformJobStatus"] == "Failed" and listed[0]["FailureReason"] == reason


def test_record_over_the_payload_limit(server: Server, sm: Any, models: dict) -> None:
    server.put_object("s3://batch/limit/a.txt", b"small\n")
    server.put_object("s3://batch/limit/b.txt", b"small\n" + b"x" * (1024 * 1024 + 10) + b"\nsmall\n")
    desc = job(
        sm,
        "payload-limit",
        "echo",
        "s3://batch/limit/",
        "s3://batch/limit-out",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
    )
    assert desc["TransformJobStatus"] == "Failed"
    assert desc["FailureReason"] == (
        "ClientError: Failed to transform s3://batch/limit/b.txt: record 2 is 1048587 bytes, larger than "
        "MaxPayloadInMB (1 MB)"
    )
    assert read(server, "s3://batch/limit-out/a.txt.out") == b"ok:small\n"
    assert not exists(server, "s3://batch/limit-out/b.txt.out")


def test_empty_prefix_fails_the_job(server: Server, sm: Any, models: dict) -> None:
    desc = job(
        sm,
        "empty-prefix",
        "echo",
        "s3://batch/nothing-here/",
        "s3://batch/empty-out",
        tin={"ContentType": "text/plain"},
    )
    assert desc["TransformJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith(
        'ClientError: No S3 objects found under S3 URL "s3://batch/nothing-here/" given in input data source.'
    )


def test_stop_mid_job_leaves_no_output(server: Server, sm: Any, models: dict) -> None:
    server.put_object("s3://batch/stop/a-fast.txt", b"quick\n")
    server.put_object("s3://batch/stop/b-slow.txt", b"".join(b"SLOW %d\n" % i for i in range(200)))
    job(
        sm,
        "stop-me",
        "echo",
        "s3://batch/stop/",
        "s3://batch/stop-out",
        wait=False,
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
    )
    deadline = time.monotonic() + 60
    while True:  # until the first object is written and the second is under way
        desc, progress = describe_with_progress(sm, "stop-me")
        if exists(server, "s3://batch/stop-out/a-fast.txt.out") and progress.get("RecordsProcessed", 0) >= 3:
            break
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)
    asked = time.monotonic()
    sm.stop_transform_job(TransformJobName="stop-me")
    assert sm.describe_transform_job(TransformJobName="stop-me")["TransformJobStatus"] in ("Stopping", "Stopped")
    sm.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="stop-me", WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    assert time.monotonic() - asked < 10
    desc = sm.describe_transform_job(TransformJobName="stop-me")
    assert desc["TransformJobStatus"] == "Stopped" and "TransformEndTime" in desc
    assert not exists(server, "s3://batch/stop-out/a-fast.txt.out")
    assert not exists(server, "s3://batch/stop-out/b-slow.txt.out")
    leftovers = list((server.data_dir / "buckets-meta" / "tmp").iterdir())
    assert leftovers == []
    expect_error(
        sm.stop_transform_job,
        "ValidationException",
        "The transform job stop-me is not in progress (status Stopped) and cannot be stopped.",
        TransformJobName="stop-me",
    )


def test_restart_mid_job_resumes(tmp_path: Path) -> None:
    """kill -9 of the server during a job: the restarted server resumes it (finished objects skipped)."""
    srv = Server(tmp_path / "data").start()
    try:
        sm, _ = srv.clients()
        srv.put_object("s3://models/echo/model.tar.gz", tarball({"code/inference.py": ECHO_CODE}))
        sm.create_model(
            ModelName="echo",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/echo/model.tar.gz"},
        )
        srv.put_object("s3://batch/r/a.txt", b"alpha\n")
        srv.put_object("s3://batch/r/b.txt", b"".join(b"SLOW %d\n" % i for i in range(24)))
        job(
            sm,
            "restart-me",
            "echo",
            "s3://batch/r/",
            "s3://batch/r-out",
            wait=False,
            tin={"ContentType": "text/plain", "SplitType": "Line"},
            tout={"AssembleWith": "Line"},
            BatchStrategy="SingleRecord",
        )
        deadline = time.monotonic() + 60
        while not exists(srv, "s3://batch/r-out/a.txt.out"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.6)  # b.txt under way
        srv.kill9()
        assert not exists(srv, "s3://batch/r-out/b.txt.out")
        srv.start()
        sm, _ = srv.clients()
        sm.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName="restart-me", WaiterConfig={"Delay": 0.5, "MaxAttempts": 200}
        )
        desc, progress = describe_with_progress(sm, "restart-me")
        assert desc["TransformJobStatus"] == "Completed"
        assert read(srv, "s3://batch/r-out/b.txt.out").decode() == "".join(f"ok:SLOW {i}\n" for i in range(24))
        assert read(srv, "s3://batch/r-out/a.txt.out") == b"ok:alpha\n"
        log = (srv.data_dir / "logs" / "transform-jobs" / "restart-me.log").read_text()
        assert "resumed after a server restart (attempt 2)" in log
        assert "2 input object(s); 1 to transform (1 finished before the restart)" in log
        assert progress["ObjectsCompleted"] == 2 and progress["RecordsProcessed"] == 25
    finally:
        srv.stop()


# --- control plane -------------------------------------------------------------------------------


def test_validation_errors(server: Server, sm: Any, models: dict) -> None:
    base = {
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://batch/lines/"}},
            "ContentType": "text/csv",
        },
        "TransformOutput": {"S3OutputPath": "s3://batch/v-out"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    expect_error(
        sm.create_transform_job,
        "ValidationException",
        f'Could not find model "{ARN}:model/no-such-model".',
        TransformJobName="v1",
        ModelName="no-such-model",
        **base,
    )
    expect_error(
        sm.create_transform_job,
        "ValidationException",
        "The product of MaxConcurrentTransforms (20) and MaxPayloadInMB (6) must be less than or equal to 100 MB.",
        TransformJobName="v1",
        ModelName="echo",
        MaxConcurrentTransforms=20,
        **base,
    )
    expect_error(
        sm.create_transform_job,
        "ValidationException",
        "MaxPayloadInMB (101) must be less than or equal to 100 MB.",
        TransformJobName="v1",
        ModelName="echo",
        MaxPayloadInMB=101,
        **base,
    )
    expect_error(
        sm.create_transform_job,
        "ValidationException",
        "For text/csv input with DataProcessing or GenerateInferenceId, TransformInput.SplitType must be Line "
        "and TransformOutput.AssembleWith must be Line.",
        TransformJobName="v1",
        ModelName="echo",
        DataProcessing={"InputFilter": "$[1:]"},
        **base,
    )
    with pytest.raises(ClientError) as err:
        sm.create_transform_job(
            TransformJobName="v1", ModelName="echo", DataProcessing={"OutputFilter": "$..a"}, **base
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "DataProcessing.OutputFilter: Invalid JSONPath '$..a'" in err.value.response["Error"]["Message"]
    expect_error(
        sm.describe_transform_job,
        "ValidationException",
        "Could not find requested job with name nope",
        TransformJobName="nope",
    )
    expect_error(
        sm.stop_transform_job,
        "ValidationException",
        "Could not find requested job with name nope",
        TransformJobName="nope",
    )
    sm.create_transform_job(TransformJobName="dup-job", ModelName="echo", **base)
    expect_error(
        sm.create_transform_job,
        "ResourceInUse",
        "Transform job names must be unique within an AWS account and region, and a transform job with this "
        f"name already exists ({ARN}:transform-job/dup-job)",
        TransformJobName="dup-job",
        ModelName="echo",
        **base,
    )


def test_list_transform_jobs(server: Server, sm: Any, models: dict) -> None:
    base = {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://batch/nothing/"}}},
        "TransformOutput": {"S3OutputPath": "s3://batch/l-out"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    for name in ("list-c", "list-a", "list-b"):
        sm.create_transform_job(TransformJobName=name, ModelName="echo", **base)
        time.sleep(0.01)
    for name in ("list-a", "list-b", "list-c"):
        with pytest.raises(WaiterError, match="Failed"):  # nothing under the prefix
            sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName=name, WaiterConfig={"Delay": 0.5})
    page = sm.list_transform_jobs(NameContains="list-", SortBy="Name", SortOrder="Ascending", MaxResults=2)
    assert [j["TransformJobName"] for j in page["TransformJobSummaries"]] == ["list-a", "list-b"]
    rest = sm.list_transform_jobs(
        NameContains="list-", SortBy="Name", SortOrder="Ascending", NextToken=page["NextToken"]
    )
    assert [j["TransformJobName"] for j in rest["TransformJobSummaries"]] == ["list-c"] and "NextToken" not in rest
    newest = sm.list_transform_jobs(NameContains="list-")["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in newest] == ["list-b", "list-a", "list-c"]  # CreationTime, descending
    failed = sm.list_transform_jobs(StatusEquals="Failed", NameContains="list-")["TransformJobSummaries"]
    assert len(failed) == 3 and all(j["TransformJobStatus"] == "Failed" for j in failed)
    assert sm.list_transform_jobs(StatusEquals="Completed", NameContains="list-")["TransformJobSummaries"] == []
    after = sm.list_transform_jobs(NameContains="list-", CreationTimeAfter=newest[1]["CreationTime"])
    assert {j["TransformJobName"] for j in after["TransformJobSummaries"]} == {"list-a", "list-b"}
    summary = newest[0]
    assert set(summary) == {
        "TransformJobName",
        "TransformJobArn",
        "CreationTime",
        "LastModifiedTime",
        "TransformEndTime",
        "TransformJobStatus",
        "FailureReason",
    }


def test_cli_transform_with_progress(server: Server, sm: Any, models: dict) -> None:
    server.put_object("s3://batch/cli/in.txt", b"".join(b"row %d\n" % i for i in range(1000)))
    cmd = [
        sys.executable,
        "-m",
        "modelhost.cli",
        "transform",
        "echo",
        "s3://batch/cli/",
        "s3://batch/cli-out",
        "--name",
        "cli-job",
        "--content-type",
        "text/plain",
        "--strategy",
        "SingleRecord",
        "--url",
        server.url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "transform job cli-job: Completed; output under s3://batch/cli-out" in done.stdout
    assert "1/1 objects" in done.stderr and "1,000 records" in done.stderr and "rec/s" in done.stderr
    assert read(server, "s3://batch/cli-out/in.txt.out").decode().splitlines()[-1] == "ok:row 999"
    failed = subprocess.run(
        cmd[:5] + ["s3://batch/nothing-at-all/", "s3://batch/cli-out", "--name", "cli-empty", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert "transform job cli-empty: Failed: ClientError: No S3 objects found under S3 URL" in failed.stderr
    nowait = subprocess.run(
        cmd[:-2] + ["--no-wait", "--name", "cli-nowait", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nowait.returncode == 0 and "transform job cli-nowait: InProgress" in nowait.stdout


# --- data capture --------------------------------------------------------------------------------


def _captured(server: Server, dest: str) -> dict[str, Any]:
    """Every file under a capture destination: {path relative to it: parsed JSON}."""
    bucket, _, prefix = dest.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    return {
        key[len(prefix) :]: json.loads(stored_object(server.data_dir, f"s3://{bucket}/{key}") or b"")
        for key in stored_keys(server.data_dir, bucket, prefix)
    }


def test_data_capture_writes_input_and_output_manifests(server: Server, sm: Any, models: dict) -> None:
    """DataCaptureConfig: <dest>/input|output/yyyy/mm/dd/hh/<uuid>.json manifests of the completed
    objects; the output manifest leads to the records with their inference ids."""
    from modelhost.jobs.capture import capture_name, hour_prefix

    x, _ = diabetes()
    server.put_object("s3://batch/cap/d1.csv", "".join(csv_row(r) + "\n" for r in x[:2]).encode())
    server.put_object("s3://batch/cap/sub/d2.csv", "".join(csv_row(r) + "\n" for r in x[2:5]).encode())
    desc = job(
        sm,
        "capture-csv",
        "skl",
        "s3://batch/cap/",
        "s3://batch/cap-out/",
        tin=CSV_IN,
        tout=CSV_OUT,
        DataCaptureConfig={"DestinationS3Uri": "s3://batch/cap-capture", "GenerateInferenceId": True},
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    start = desc["TransformStartTime"].timestamp()
    name = capture_name(desc["TransformJobArn"], start)
    hour = hour_prefix(start)
    assert _captured(server, "s3://batch/cap-capture") == {
        f"input/{hour}/{name}.json": [{"prefix": "s3://batch/cap/"}, "d1.csv", "sub/d2.csv"],
        f"output/{hour}/{name}.json": [{"prefix": "s3://batch/cap-out/"}, "d1.csv.out", "sub/d2.csv.out"],
    }
    out_manifest = _captured(server, "s3://batch/cap-capture")[f"output/{hour}/{name}.json"]
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    rows = []
    for rel in out_manifest[1:]:
        rows += [line.split(",") for line in read(server, out_manifest[0]["prefix"] + rel).decode().splitlines()]
    assert len(rows) == 5 and all(len(r) == 3 and len(r[1]) == 36 and r[2] == when for r in rows)
    assert len({r[1] for r in rows}) == 5
    log = (server.data_dir / "logs" / "transform-jobs" / "capture-csv.log").read_text()
    assert f"data captured: s3://batch/cap-capture/input/{hour}/{name}.json" in log

    # a failed object is in neither manifest; the completed ones still are
    server.put_object("s3://batch/cap-fail/a.txt", b"one\n")
    server.put_object("s3://batch/cap-fail/b.txt", b"FAIL\n")
    desc = job(
        sm,
        "capture-fail",
        "echo",
        "s3://batch/cap-fail/",
        "s3://batch/cap-fail-out",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        ModelClientConfig={"InvocationsMaxRetries": 0},
        DataCaptureConfig={"DestinationS3Uri": "s3://batch/cap-fail-capture/"},
    )
    assert desc["TransformJobStatus"] == "Failed"
    start = desc["TransformStartTime"].timestamp()
    name, hour = capture_name(desc["TransformJobArn"], start), hour_prefix(start)
    assert _captured(server, "s3://batch/cap-fail-capture") == {
        f"input/{hour}/{name}.json": [{"prefix": "s3://batch/cap-fail/"}, "a.txt"],
        f"output/{hour}/{name}.json": [{"prefix": "s3://batch/cap-fail-out/"}, "a.txt.out"],
    }

    # nothing completed: no capture; a destination bucket that does not exist fails the job
    desc = job(
        sm,
        "capture-none",
        "echo",
        "s3://batch/cap-fail/b.txt",
        "s3://batch/cap-none-out",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        ModelClientConfig={"InvocationsMaxRetries": 0},
        DataCaptureConfig={"DestinationS3Uri": "s3://batch/cap-none-capture"},
    )
    assert desc["TransformJobStatus"] == "Failed"
    assert _captured(server, "s3://batch/cap-none-capture") == {}
    desc = job(
        sm,
        "capture-no-bucket",
        "echo",
        "s3://batch/cap-fail/a.txt",
        "s3://batch/cap-nb-out",
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        DataCaptureConfig={"DestinationS3Uri": "s3://no-such-capture-bucket/x"},
    )
    assert desc["TransformJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith(
        "ClientError: Could not write the captured data to DataCaptureConfig.DestinationS3Uri "
        "s3://no-such-capture-bucket/x: "
    ), desc["FailureReason"]
    assert (server.data_dir / "buckets-meta" / "tmp").exists() and not [
        p for p in (server.data_dir / "buckets-meta" / "tmp").iterdir() if p.name.startswith(".mh-capture-")
    ]
