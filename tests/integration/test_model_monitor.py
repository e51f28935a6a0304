"""The book chapter's Model Monitor walkthrough (seed 002) with the real sagemaker SDK against the real
server: deploy with DataCaptureConfig, capture files in S3 (``aws s3 ls --recursive``), suggest_baseline
on a CSV with header, the hourly schedule of the seed, bad data, a NOW schedule whose violation report
names ``chas``, delete_monitoring_schedule then delete_endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from botocore.exceptions import ClientError

import modelhost
from tests.helpers import Server

pytestmark = pytest.mark.slow
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
ROLE = "arn:aws:iam::123456789012:role/modelhost-monitor"
COLUMNS = ["medv", "crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "lstat"]
ENTRY = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""
GOOD = "0.00632,18.00,2.310,0,0.5380,6.5750,65.20,4.0900,1,296.0,15.30,4.98"
BAD_CHAS = "0.00632,18.00,2.310,0.5,0.5380,6.5750,65.20,4.0900,1,296.0,15.30,4.98"


def housing(n: int = 400) -> np.ndarray:
    """A Boston-housing-shaped table (target first, as output_columns_position START expects)."""
    rng = np.random.default_rng(7)
    x = np.column_stack(
        [
            rng.exponential(3.0, n),  # crim
            rng.choice([0.0, 12.5, 18.0, 25.0], n),  # zn
            rng.uniform(0.5, 27.0, n),  # indus
            rng.integers(0, 2, n).astype(float),  # chas: 0/1
            rng.uniform(0.38, 0.87, n),  # nox
            rng.normal(6.3, 0.7, n),  # rm
            rng.uniform(3.0, 100.0, n),  # age
            rng.uniform(1.1, 12.0, n),  # dis
            rng.integers(1, 25, n).astype(float),  # rad
            rng.integers(187, 711, n).astype(float),  # tax
            rng.uniform(12.6, 22.0, n),  # ptratio
            rng.uniform(1.7, 38.0, n),  # lstat
        ]
    )
    y = 22 + 5 * (x[:, 5] - 6.3) - 0.5 * x[:, 11] + rng.normal(0, 2, n)
    return np.column_stack([y, x])


@pytest.fixture(scope="module")
def sess(server: Server) -> Iterator[Any]:
    yield modelhost.sagemaker_session(server.url)


def _s3_ls(server: Server, uri: str) -> list[str]:
    keys = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1"}
    env = {**os.environ, **keys}
    out = subprocess.run(
        ["aws", "--endpoint-url", server.url, "s3", "ls", "--recursive", uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


def _wait_records(sess: Any, bucket: str, prefix: str, count: int, timeout: float = 20) -> list[dict]:
    s3 = sess.boto_session.client("s3")
    deadline = time.monotonic() + timeout
    records: list[dict] = []
    while time.monotonic() < deadline:
        records = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
                records += [json.loads(line) for line in body.splitlines()]
        if len(records) >= count:
            return records
        time.sleep(0.3)
    raise AssertionError(f"only {len(records)} of {count} capture records appeared under {prefix}")


def _wait_execution(monitor: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executions = monitor.list_executions()
        if executions:
            desc = executions[-1].describe()
            if desc["ProcessingJobStatus"] in ("Completed", "Failed", "Stopped"):
                return executions[-1]
        time.sleep(0.5)
    raise AssertionError("the monitoring execution did not finish")


def test_model_monitor_walkthrough(server: Server, sess: Any, tmp_path: Path) -> None:
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.model_monitor import CronExpressionGenerator, DefaultModelMonitor
    from sagemaker.model_monitor.data_capture_config import DataCaptureConfig
    from sagemaker.model_monitor.dataset_format import DatasetFormat
    from sagemaker.serializers import CSVSerializer
    from sagemaker.sklearn.model import SKLearnModel
    from sklearn.linear_model import LinearRegression

    data = housing()
    model = LinearRegression().fit(data[:, 1:], data[:, 0])
    joblib.dump(model, tmp_path / "model.joblib")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model.joblib", arcname="model.joblib")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text(ENTRY)
    bucket, prefix = sess.default_bucket(), "sagemaker/housing"
    model_data = sess.upload_data(str(tmp_path / "model.tar.gz"), key_prefix=prefix + "/model")

    # 1. deploy with 100 % capture of requests and responses
    capture_path = f"s3://{bucket}/{prefix}/capture/"
    ll = SKLearnModel(
        model_data=model_data,
        role=ROLE,
        entry_point="entry.py",
        source_dir=str(tmp_path / "src"),
        framework_version="1.2-1",
        sagemaker_session=sess,
    )
    predictor = ll.deploy(
        initial_instance_count=1,
        instance_type="ml.t2.medium",
        data_capture_config=DataCaptureConfig(
            enable_capture=True,
            sampling_percentage=100,
            capture_options=["REQUEST", "RESPONSE"],
            destination_s3_uri=capture_path,
            sagemaker_session=sess,
        ),
    )
    desc = sess.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
    assert desc["DataCaptureConfig"]["CaptureStatus"] == "Started"
    assert desc["DataCaptureConfig"]["CurrentSamplingPercentage"] == 100
    predictor.serializer = CSVSerializer()
    predictor.deserializer = CSVDeserializer()
    first = predictor.predict(GOOD, initial_args={"InferenceId": "good-1"})
    assert abs(float(first[0][0]) - float(model.predict(np.array([[float(v) for v in GOOD.split(",")]]))[0])) < 1e-6
    predictor.predict(GOOD)

    # 2. capture files appear, one record per line, in SageMaker's format
    records = _wait_records(sess, bucket, f"{prefix}/capture/{predictor.endpoint_name}/AllTraffic/", 2)
    keys = _s3_ls(server, capture_path)
    assert keys and all(k.startswith(f"{prefix}/capture/{predictor.endpoint_name}/AllTraffic/") for k in keys)
    assert all(k.endswith(".jsonl") and len(k.split("/")) == 10 for k in keys), keys  # .../yyyy/mm/dd/hh/file
    rec = next(r for r in records if r["eventMetadata"].get("inferenceId") == "good-1")
    assert rec["eventVersion"] == "0"
    assert rec["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv",
        "mode": "INPUT",
        "data": GOOD,
        "encoding": "CSV",
    }
    out = rec["captureData"]["endpointOutput"]
    assert out["mode"] == "OUTPUT" and out["encoding"] == "CSV" and out["observedContentType"].startswith("text/csv")
    assert abs(float(out["data"]) - float(first[0][0])) < 1e-9
    assert set(rec["eventMetadata"]) == {"eventId", "inferenceTime", "inferenceId"}
    assert rec["eventMetadata"]["inferenceTime"].endswith("Z")

    # 3. baseline from the training set (CSV with header)
    frame = pd.DataFrame(data, columns=COLUMNS).astype({"chas": int, "rad": int})  # as the book's data
    frame.to_csv(tmp_path / "housing.csv", sep=",", index=False)
    lines = (tmp_path / "housing.csv").read_text().splitlines()
    training = sess.upload_data(path=str(tmp_path / "housing.csv"), key_prefix=prefix + "/baseline")
    ll_monitor = DefaultModelMonitor(role=ROLE, instance_count=1, instance_type="ml.m5.large", sagemaker_session=sess)
    ll_monitor.suggest_baseline(baseline_dataset=training, dataset_format=DatasetFormat.csv(header=True))
    baseline = ll_monitor.latest_baselining_job
    constraints = baseline.suggested_constraints().body_dict
    statistics = baseline.baseline_statistics().body_dict
    assert [f["name"] for f in constraints["features"]] == COLUMNS
    by_name = {f["name"]: f for f in constraints["features"]}
    assert by_name["chas"]["inferred_type"] == "Integral" and by_name["rm"]["inferred_type"] == "Fractional"
    assert by_name["chas"]["completeness"] == 1.0 and by_name["chas"]["num_constraints"]["is_non_negative"] is True
    assert statistics["dataset"]["item_count"] == len(lines) - 1 == len(data)
    rm = next(f for f in statistics["features"] if f["name"] == "rm")["numerical_statistics"]
    assert abs(rm["mean"] - data[:, 6].mean()) < 1e-3 and len(rm["distribution"]["kll"]["buckets"]) == 10

    # 4. the seed's hourly schedule is accepted and listed
    ll_monitor.create_monitoring_schedule(
        monitor_schedule_name="ll-housing-schedule",
        endpoint_input=predictor.endpoint_name,
        statistics=ll_monitor.baseline_statistics(),
        constraints=ll_monitor.suggested_constraints(),
        schedule_cron_expression=CronExpressionGenerator.hourly(),
    )
    schedules = sess.sagemaker_client.list_monitoring_schedules(EndpointName=predictor.endpoint_name)
    assert [s["MonitoringScheduleName"] for s in schedules["MonitoringScheduleSummaries"]] == ["ll-housing-schedule"]
    described = ll_monitor.describe_schedule()
    assert described["MonitoringScheduleStatus"] == "Scheduled"
    assert described["MonitoringScheduleConfig"]["ScheduleConfig"]["ScheduleExpression"] == "cron(0 * ? * * *)"

    # 5. bad data: a fractional value in the integral column chas (2 good + 8 bad requests in the window)
    for _ in range(8):
        predictor.predict(BAD_CHAS)
    _wait_records(sess, bucket, f"{prefix}/capture/{predictor.endpoint_name}/AllTraffic/", 10)

    # 6. a one-time schedule over the last hour finds the violation
    now_monitor = DefaultModelMonitor(role=ROLE, instance_count=1, instance_type="ml.m5.large", sagemaker_session=sess)
    now_monitor.create_monitoring_schedule(
        monitor_schedule_name="ll-housing-now",
        endpoint_input=predictor.endpoint_name,
        statistics=ll_monitor.baseline_statistics(),
        constraints=ll_monitor.suggested_constraints(),
        schedule_cron_expression=CronExpressionGenerator.now(),
        data_analysis_start_time="-PT1H",
        data_analysis_end_time="-PT0H",
    )
    execution = _wait_execution(now_monitor)
    assert execution.describe()["ProcessingJobStatus"] == "Completed", execution.describe().get("FailureReason")
    summaries = sess.sagemaker_client.list_monitoring_executions(MonitoringScheduleName="ll-housing-now")
    assert summaries["MonitoringExecutionSummaries"][0]["MonitoringExecutionStatus"] == "CompletedWithViolations"
    violations = now_monitor.latest_monitoring_constraint_violations().body_dict["violations"]
    chas = [v for v in violations if v["feature_name"] == "chas" and v["constraint_check_type"] == "data_type_check"]
    assert chas == [
        {
            "feature_name": "chas",
            "constraint_check_type": "data_type_check",
            "description": "Data type match requirement is not met. Expected data type: Integral, Expected match: "
            "100.0%. Observed: Only 20.0% of data is Integral.",
        }
    ]
    others = [v for v in violations if v["constraint_check_type"] == "data_type_check" and v["feature_name"] != "chas"]
    assert not others

    # 7. the SDK switches capture off (UpdateEndpoint with a new config)
    predictor.update_data_capture_config(
        data_capture_config=DataCaptureConfig(enable_capture=False, sagemaker_session=sess)
    )
    capture = sess.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)["DataCaptureConfig"]
    assert capture["EnableCapture"] is False and capture["CaptureStatus"] == "Stopped"

    # 8. a monitored endpoint cannot be deleted; schedules first, then the endpoint
    ll_monitor.delete_monitoring_schedule()
    with pytest.raises(ClientError) as err:
        sess.sagemaker_client.delete_endpoint(EndpointName=predictor.endpoint_name)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "monitoring schedule" in err.value.response["Error"]["Message"]
    now_monitor.delete_monitoring_schedule()
    predictor.delete_endpoint()
    names = [e["EndpointName"] for e in sess.sagemaker_client.list_endpoints()["Endpoints"]]
    assert (
        predictor.endpoint_name not in names
        or sess.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)["EndpointStatus"] == "Deleting"
    )
