"""Durability across restarts: capture files after ``kill -9`` hold only whole records (at most the last
flush interval is lost), a graceful stop flushes everything, a processing job interrupted by a crash
runs again to completion, and a one-time schedule that already ran does not run again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import (
    ROLE,
    SKLEARN_IMAGE,
    Server,
    csv_row,
    diabetes,
    sklearn_model,
    stored_keys,
    stored_object,
    wait_status,
)

pytestmark = pytest.mark.slow
BUCKET = "durable"
ANALYZER = "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
RESOURCES = {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}}


def clients(server: Server) -> tuple[Any, Any, Any]:
    sm, rt = server.clients()
    s3 = boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        region_name="us-east-1",
    )
    return sm, rt, s3


def capture_files(server: Server) -> list[str]:
    return [f"s3://{BUCKET}/{key}" for key in stored_keys(server.data_dir, BUCKET, "capture/")]


def records(server: Server) -> list[dict]:
    out = []
    for path in capture_files(server):
        text = (stored_object(server.data_dir, path) or b"").decode()
        assert text.endswith("\n"), f"{path} ends mid-line"
        for line in text.splitlines():
            rec = json.loads(line)  # a partial line would not parse
            assert set(rec) == {"captureData", "eventMetadata", "eventVersion"}
            out.append(rec)
    return out


def restart(server: Server) -> None:
    server.start()


def test_capture_jobs_and_schedules_survive_restarts(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        sm, rt, s3 = clients(server)
        s3.create_bucket(Bucket=BUCKET)
        archive, _ = sklearn_model()
        s3.put_object(Bucket=BUCKET, Key="model.tar.gz", Body=archive)
        sm.create_model(
            ModelName="dur",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
        )
        sm.create_endpoint_config(
            EndpointConfigName="dur",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "dur",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
            DataCaptureConfig={
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": f"s3://{BUCKET}/capture",
                "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
                "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"]},
            },
        )
        sm.create_endpoint(EndpointName="dur", EndpointConfigName="dur")
        assert wait_status(sm, "dur", ("InService", "Failed"))["EndpointStatus"] == "InService"
        x, _ = diabetes()
        body = csv_row(x[0])

        # a one-time schedule runs (before any restart)
        s3.put_object(
            Bucket=BUCKET,
            Key="base/constraints.json",
            Body=json.dumps({"version": 0, "features": [], "monitoring_config": {}}).encode(),
        )
        for _ in range(3):
            rt.invoke_endpoint(EndpointName="dur", Body=body, ContentType="text/csv")
        deadline = time.monotonic() + 20
        while not capture_files(server):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        sm.create_monitoring_schedule(
            MonitoringScheduleName="once",
            MonitoringScheduleConfig={
                "ScheduleConfig": {
                    "ScheduleExpression": "NOW",
                    "DataAnalysisStartTime": "-PT1H",
                    "DataAnalysisEndTime": "-PT0H",
                },
                "MonitoringJobDefinition": {
                    "MonitoringInputs": [
                        {"EndpointInput": {"EndpointName": "dur", "LocalPath": "/opt/ml/processing/input/ep"}}
                    ],
                    "MonitoringOutputConfig": {
                        "MonitoringOutputs": [
                            {"S3Output": {"S3Uri": f"s3://{BUCKET}/reports", "LocalPath": "/opt/ml/processing/output"}}
                        ]
                    },
                    "MonitoringResources": RESOURCES,
                    "MonitoringAppSpecification": {"ImageUri": ANALYZER},
                    "BaselineConfig": {"ConstraintsResource": {"S3Uri": f"s3://{BUCKET}/base/constraints.json"}},
                    "RoleArn": ROLE,
                },
            },
        )
        deadline = time.monotonic() + 60
        while True:
            runs = sm.list_monitoring_executions(MonitoringScheduleName="once")["MonitoringExecutionSummaries"]
            if runs and runs[0]["MonitoringExecutionStatus"] not in ("Pending", "InProgress"):
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.3)
        # no features in this baseline: the captured columns are extra
        assert runs[0]["MonitoringExecutionStatus"] == "CompletedWithViolations", runs

        # a processing job that is running when the server is killed
        s3.put_object(
            Bucket=BUCKET,
            Key="code/slow.py",
            Body=b"import sys, time, os\ntime.sleep(3)\nos.makedirs(sys.argv[1], exist_ok=True)\n"
            b"open(os.path.join(sys.argv[1], 'done.txt'), 'w').write('ok')\n",
        )
        sm.create_processing_job(
            ProcessingJobName="slow",
            ProcessingResources=RESOURCES,
            RoleArn=ROLE,
            AppSpecification={
                "ImageUri": SKLEARN_IMAGE,
                "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/slow.py"],
                "ContainerArguments": ["/opt/ml/processing/output"],
            },
            ProcessingInputs=[
                {
                    "InputName": "code",
                    "S3Input": {
                        "S3Uri": f"s3://{BUCKET}/code/slow.py",
                        "LocalPath": "/opt/ml/processing/input/code",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            ],
            ProcessingOutputConfig={
                "Outputs": [
                    {
                        "OutputName": "out",
                        "S3Output": {
                            "S3Uri": f"s3://{BUCKET}/slow-out",
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        )

        # traffic while the server is killed
        sent: list[int] = [0]
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    rt.invoke_endpoint(EndpointName="dur", Body=body, ContentType="text/csv")
                    sent[0] += 1
                except Exception:
                    return

        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(2.5)
        assert sm.describe_processing_job(ProcessingJobName="slow")["ProcessingJobStatus"] == "InProgress"
        server.kill9()
        stop.set()
        worker.join(10)
        after_crash = records(server)  # every file whole, every line a whole record
        assert 3 < len(after_crash) <= 3 + sent[0]

        restart(server)
        sm, rt, s3 = clients(server)
        desc = wait_status(sm, "dur", ("InService", "Failed"))
        assert desc["EndpointStatus"] == "InService" and desc["DataCaptureConfig"]["CaptureStatus"] == "Started"
        deadline = time.monotonic() + 60
        while sm.describe_processing_job(ProcessingJobName="slow")["ProcessingJobStatus"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert sm.describe_processing_job(ProcessingJobName="slow")["ProcessingJobStatus"] == "Completed"
        assert s3.get_object(Bucket=BUCKET, Key="slow-out/done.txt")["Body"].read() == b"ok"
        time.sleep(2.5)  # control-loop passes: the NOW schedule is not run again
        assert len(sm.list_monitoring_executions(MonitoringScheduleName="once")["MonitoringExecutionSummaries"]) == 1

        # a graceful stop flushes what was captured
        for i in range(20):
            rt.invoke_endpoint(EndpointName="dur", Body=body, ContentType="text/csv", InferenceId=f"graceful-{i}")
        server.stop()
        ids = {r["eventMetadata"].get("inferenceId") for r in records(server)}
        assert {f"graceful-{i}" for i in range(20)} <= ids
    finally:
        server.stop()
