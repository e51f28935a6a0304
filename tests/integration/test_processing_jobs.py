"""Processing jobs (boto3, the botocore waiter, CloudWatch Logs, SKLearnProcessor.run), data quality job
definitions, monitoring schedules and executions, and data capture switched by UpdateEndpoint — against
the real server."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.helpers import ROLE, SKLEARN_IMAGE, Server, csv_row, diabetes, sklearn_model, wait_status

ANALYZER = "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
BUCKET = "pjobs"
RESOURCES = {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30}}
CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": f"s3://{BUCKET}/capture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"]},
}


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    return client


def job(name: str, image: str = ANALYZER, **extra: Any) -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "ProcessingResources": RESOURCES,
        "AppSpecification": {"ImageUri": image},
        "RoleArn": ROLE,
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        **extra,
    }


def wait_job(sm: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc = dict(sm.describe_processing_job(ProcessingJobName=name))
        if desc["ProcessingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)


def test_baseline_job_with_boto3_waiter_and_logs(server: Server, sm: Any, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="data/train.csv", Body=b"y,x\n1,0.5\n2,1.5\n3,\n")
    sm.create_processing_job(
        **job(
            "baseline-1",
            ProcessingInputs=[
                {
                    "InputName": "baseline_dataset_input",
                    "S3Input": {
                        "S3Uri": f"s3://{BUCKET}/data/train.csv",
                        "LocalPath": "/opt/ml/processing/input/baseline_dataset_input",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            ],
            ProcessingOutputConfig={
                "Outputs": [
                    {
                        "OutputName": "monitoring_output",
                        "S3Output": {
                            "S3Uri": f"s3://{BUCKET}/baseline-out",
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
            Environment={
                "dataset_format": '{"csv": {"header": true}}',
                "dataset_source": "/opt/ml/processing/input/baseline_dataset_input",
                "output_path": "/opt/ml/processing/output",
                "publish_cloudwatch_metrics": "Disabled",
            },
        )
    )
    sm.get_waiter("processing_job_completed_or_stopped").wait(
        ProcessingJobName="baseline-1", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    desc = sm.describe_processing_job(ProcessingJobName="baseline-1")
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["ExitMessage"].startswith("Completed")
    assert desc["ProcessingStartTime"] <= desc["ProcessingEndTime"]
    assert desc["AppSpecification"] == {"ImageUri": ANALYZER}
    constraints = json.loads(s3.get_object(Bucket=BUCKET, Key="baseline-out/constraints.json")["Body"].read())
    assert [(f["name"], f["inferred_type"], f["completeness"]) for f in constraints["features"]] == [
        ("y", "Integral", 1.0),
        ("x", "Fractional", 2 / 3),
    ]
    logs = boto3.client(
        "logs",
        endpoint_url=server.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        region_name="us-east-1",
    )
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs", logStreamNamePrefix="baseline-1/")
    assert [s["logStreamName"] for s in streams["logStreams"]] == ["baseline-1/algo-1"]
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName="baseline-1/algo-1", startFromHead=True
    )["events"]
    assert any("Completed: Job completed successfully" in e["message"] for e in events)
    listed = sm.list_processing_jobs(NameContains="baseline", StatusEquals="Completed")["ProcessingJobSummaries"]
    assert [j["ProcessingJobName"] for j in listed] == ["baseline-1"]
    with pytest.raises(ClientError) as err:
        sm.create_processing_job(**job("baseline-1"))
    assert err.value.response["Error"]["Code"] == "ResourceInUse"


def test_bad_requests_are_refused(sm: Any) -> None:
    with pytest.raises(ParamValidationError):
        sm.create_processing_job(ProcessingJobName="x", RoleArn=ROLE)  # botocore: required members
    cases = [
        (
            job("two", ProcessingResources={"ClusterConfig": {**RESOURCES["ClusterConfig"], "InstanceCount": 2}}),
            "InstanceCount",
        ),
        (
            job(
                "outside",
                ProcessingInputs=[
                    {
                        "InputName": "a",
                        "S3Input": {
                            "S3Uri": "s3://pjobs/a",
                            "LocalPath": "/tmp/a",
                            "S3DataType": "S3Prefix",
                            "S3InputMode": "File",
                        },
                    }
                ],
            ),
            "LocalPath /tmp/a",
        ),
    ]
    for request, words in cases:
        with pytest.raises(ClientError) as err:
            sm.create_processing_job(**request)
        assert (
            err.value.response["Error"]["Code"] == "ValidationException"
            and words in err.value.response["Error"]["Message"]
        )
    with pytest.raises(ClientError) as err:
        sm.describe_processing_job(ProcessingJobName="nope")
    assert "Could not find requested job with name nope" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.stop_processing_job(ProcessingJobName="baseline-1")
    assert "is not in progress" in err.value.response["Error"]["Message"]


def test_failures_unsupported_image_missing_input_and_stop(sm: Any, s3: Any) -> None:
    sm.create_processing_job(**job("other-image", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1"))
    desc = wait_job(sm, "other-image")
    assert desc["ProcessingJobStatus"] == "Failed" and "is not supported by modelhost" in desc["FailureReason"]
    missing = {
        "InputName": "d",
        "S3Input": {
            "S3Uri": f"s3://{BUCKET}/none/",
            "LocalPath": "/opt/ml/processing/input/d",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }
    sm.create_processing_job(**job("no-input", ProcessingInputs=[missing], Environment={"dataset_format": "{}"}))
    desc = wait_job(sm, "no-input")
    assert desc["ProcessingJobStatus"] == "Failed" and "No S3 objects found" in desc["FailureReason"]
    s3.put_object(
        Bucket=BUCKET, Key="code/sleep.py", Body=b"import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
    )
    code = {
        "InputName": "code",
        "S3Input": {
            "S3Uri": f"s3://{BUCKET}/code/sleep.py",
            "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }
    app = {"ImageUri": SKLEARN_IMAGE, "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/sleep.py"]}
    sm.create_processing_job(**job("sleeper", ProcessingInputs=[code], AppSpecification=app))
    deadline = time.monotonic() + 30
    while sm.describe_processing_job(ProcessingJobName="sleeper").get("ProcessingStartTime") is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    sm.stop_processing_job(ProcessingJobName="sleeper")
    assert wait_job(sm, "sleeper")["ProcessingJobStatus"] == "Stopped"
    sm.create_processing_job(
        **job("too-long", ProcessingInputs=[code], AppSpecification=app, StoppingCondition={"MaxRuntimeInSeconds": 1})
    )
    desc = wait_job(sm, "too-long")
    assert desc["ProcessingJobStatus"] == "Failed" and "MaxRuntimeInSeconds" in desc["FailureReason"]
    s3.put_object(Bucket=BUCKET, Key="code2/fail.py", Body=b"import sys\nprint('bad things')\nsys.exit(3)\n")
    fail_code = {**code, "S3Input": {**code["S3Input"], "S3Uri": f"s3://{BUCKET}/code2/fail.py"}}
    fail_app = {**app, "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/fail.py"]}
    sm.create_processing_job(**job("failing", ProcessingInputs=[fail_code], AppSpecification=fail_app))
    desc = wait_job(sm, "failing")
    assert desc["FailureReason"] == "AlgorithmError: the job's program exited with code 3: bad things"


SCRIPT = """
import argparse, os
import pandas as pd
p = argparse.ArgumentParser()
p.add_argument("--input")
p.add_argument("--output")
a = p.parse_args()
df = pd.read_csv(os.path.join(a.input, "train.csv"))
os.makedirs(a.output, exist_ok=True)
df.describe().to_csv(os.path.join(a.output, "summary.csv"))
print("rows", len(df))
"""


def test_sklearn_processor_runs_the_users_script(server: Server, s3: Any, tmp_path: Any) -> None:
    from sagemaker.processing import ProcessingInput, ProcessingOutput
    from sagemaker.sklearn.processing import SKLearnProcessor

    import modelhost

    sess = modelhost.sagemaker_session(server.url)
    script = tmp_path / "prep.py"
    script.write_text(SCRIPT)
    processor = SKLearnProcessor(
        framework_version="1.2-1", role=ROLE, instance_type="ml.m5.large", instance_count=1, sagemaker_session=sess
    )
    processor.run(
        code=str(script),
        inputs=[ProcessingInput(source=f"s3://{BUCKET}/data/", destination="/opt/ml/processing/input")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output", destination=f"s3://{BUCKET}/prep-out")],
        arguments=["--input", "/opt/ml/processing/input", "--output", "/opt/ml/processing/output"],
        logs=False,
    )
    desc = processor.jobs[-1].describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    summary = s3.get_object(Bucket=BUCKET, Key="prep-out/summary.csv")["Body"].read().decode()
    assert summary.splitlines()[0] == ",y,x" and "count,3.0,2.0" in summary


def captured_records(s3: Any, prefix: str) -> int:
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sum(len(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read().splitlines()) for o in objects)


def deploy_captured(sm: Any, s3: Any, name: str) -> None:
    archive, _model = sklearn_model()
    s3.put_object(Bucket=BUCKET, Key=f"models/{name}.tar.gz", Body=archive)
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/{name}.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        DataCaptureConfig=CAPTURE,
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert wait_status(sm, name, ("InService", "Failed"))["EndpointStatus"] == "InService"


def definition(endpoint: str) -> dict[str, Any]:
    return {
        "MonitoringInputs": [
            {"EndpointInput": {"EndpointName": endpoint, "LocalPath": "/opt/ml/processing/input/endpoint"}}
        ],
        "MonitoringOutputConfig": {
            "MonitoringOutputs": [
                {"S3Output": {"S3Uri": f"s3://{BUCKET}/reports", "LocalPath": "/opt/ml/processing/output"}}
            ]
        },
        "MonitoringResources": RESOURCES,
        "MonitoringAppSpecification": {"ImageUri": ANALYZER},
        "BaselineConfig": {
            "ConstraintsResource": {"S3Uri": f"s3://{BUCKET}/mon-baseline/constraints.json"},
            "StatisticsResource": {"S3Uri": f"s3://{BUCKET}/mon-baseline/statistics.json"},
        },
        "RoleArn": ROLE,
    }


def now_schedule(name: str, endpoint: str) -> dict[str, Any]:
    return {
        "MonitoringScheduleName": name,
        "MonitoringScheduleConfig": {
            "ScheduleConfig": {
                "ScheduleExpression": "NOW",
                "DataAnalysisStartTime": "-PT1H",
                "DataAnalysisEndTime": "-PT0H",
            },
            "MonitoringJobDefinition": definition(endpoint),
            "MonitoringType": "DataQuality",
        },
    }


def test_schedules_executions_metrics_and_capture_switch(server: Server, sm: Any, rt: Any, s3: Any) -> None:
    deploy_captured(sm, s3, "mon-ep")
    x, _y = diabetes()
    header = ",".join(["pred"] + [f"f{i}" for i in range(10)])
    rows = "\n".join(csv_row([100.0 + i, *x[i]]) for i in range(200))
    s3.put_object(Bucket=BUCKET, Key="mon-train/train.csv", Body=f"{header}\n{rows}\n".encode())
    sm.create_processing_job(
        **job(
            "mon-baseline",
            ProcessingInputs=[
                {
                    "InputName": "b",
                    "S3Input": {
                        "S3Uri": f"s3://{BUCKET}/mon-train/",
                        "LocalPath": "/opt/ml/processing/input/b",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            ],
            ProcessingOutputConfig={
                "Outputs": [
                    {
                        "OutputName": "o",
                        "S3Output": {
                            "S3Uri": f"s3://{BUCKET}/mon-baseline",
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
            Environment={
                "dataset_format": '{"csv": {"header": true}}',
                "dataset_source": "/opt/ml/processing/input/b",
                "output_path": "/opt/ml/processing/output",
            },
        )
    )
    assert wait_job(sm, "mon-baseline")["ProcessingJobStatus"] == "Completed"
    for i in range(5):  # far outside the baseline: drift on f0
        rt.invoke_endpoint(EndpointName="mon-ep", Body=csv_row([5.0, *x[i][1:]]), ContentType="text/csv")
    # all five captured (they may land in several objects): with fewer, a robust (KS) drift test on so few
    # rows cannot reject, and the f0 drift below would not be reported
    deadline = time.monotonic() + 20
    while captured_records(s3, "capture/mon-ep/") < 5:
        assert time.monotonic() < deadline
        time.sleep(0.3)

    for bad, words in (
        ({"ScheduleExpression": "cron(*/5 * ? * * *)"}, "minute must be 0"),
        ({"ScheduleExpression": "NOW"}, "DataAnalysisStartTime and DataAnalysisEndTime are required"),
    ):
        request = now_schedule("bad", "mon-ep")
        request["MonitoringScheduleConfig"]["ScheduleConfig"] = bad
        with pytest.raises(ClientError) as err:
            sm.create_monitoring_schedule(**request)
        assert (
            err.value.response["Error"]["Code"] == "ValidationException"
            and words in err.value.response["Error"]["Message"]
        )
    missing_def = {
        "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
        "MonitoringJobDefinitionName": "nope",
        "MonitoringType": "DataQuality",
    }
    with pytest.raises(ClientError) as err:
        sm.create_monitoring_schedule(MonitoringScheduleName="bad", MonitoringScheduleConfig=missing_def)
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"

    for name in ("now-a", "now-b", "now-c"):
        sm.create_monitoring_schedule(**now_schedule(name, "mon-ep"))
        time.sleep(0.05)
    deadline = time.monotonic() + 90
    while True:
        summaries = sm.list_monitoring_executions(EndpointName="mon-ep")["MonitoringExecutionSummaries"]
        done = [s for s in summaries if s["MonitoringExecutionStatus"] not in ("Pending", "InProgress")]
        if len(done) == 3:
            break
        assert time.monotonic() < deadline, summaries
        time.sleep(0.5)
    assert {s["MonitoringExecutionStatus"] for s in done} == {"CompletedWithViolations"}, [
        s.get("FailureReason") for s in done
    ]
    ascending = sm.list_monitoring_executions(SortBy="ScheduledTime", SortOrder="Ascending", MaxResults=2)
    assert [s["MonitoringScheduleName"] for s in ascending["MonitoringExecutionSummaries"]] == ["now-a", "now-b"]
    rest = sm.list_monitoring_executions(
        SortBy="ScheduledTime", SortOrder="Ascending", MaxResults=2, NextToken=ascending["NextToken"]
    )
    assert [s["MonitoringScheduleName"] for s in rest["MonitoringExecutionSummaries"]] == [
        "now-c"
    ] and "NextToken" not in rest
    assert sm.list_monitoring_executions(StatusEquals="Failed")["MonitoringExecutionSummaries"] == []
    one = sm.list_monitoring_executions(MonitoringScheduleName="now-b")["MonitoringExecutionSummaries"]
    assert len(one) == 1 and one[0]["ProcessingJobArn"].split(":")[5].startswith("processing-job/model-monitoring-")
    described = sm.describe_monitoring_schedule(MonitoringScheduleName="now-b")
    assert described["LastMonitoringExecutionSummary"]["MonitoringExecutionStatus"] == "CompletedWithViolations"
    assert described["EndpointName"] == "mon-ep" and described["MonitoringType"] == "DataQuality"
    job_name = one[0]["ProcessingJobArn"].split("processing-job/")[1]
    report = sm.describe_processing_job(ProcessingJobName=job_name)["ProcessingOutputConfig"]["Outputs"][0]["S3Output"][
        "S3Uri"
    ]
    key = report.removeprefix(f"s3://{BUCKET}/") + "/constraint_violations.json"
    violations = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["violations"]
    assert any(v["feature_name"] == "f0" and v["constraint_check_type"] == "baseline_drift_check" for v in violations)
    metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    assert 'feature_baseline_drift_f0{endpoint="mon-ep",schedule="now-b"}' in metrics
    assert 'feature_non_null_f0{endpoint="mon-ep",schedule="now-b"} 1.0' in metrics

    sm.stop_monitoring_schedule(MonitoringScheduleName="now-a")
    assert sm.describe_monitoring_schedule(MonitoringScheduleName="now-a")["MonitoringScheduleStatus"] == "Stopped"
    listed = sm.list_monitoring_schedules(StatusEquals="Scheduled", SortBy="Name", SortOrder="Ascending")
    assert [s["MonitoringScheduleName"] for s in listed["MonitoringScheduleSummaries"]] == ["now-b", "now-c"]
    sm.start_monitoring_schedule(MonitoringScheduleName="now-a")
    for name in ("now-a", "now-b", "now-c"):
        sm.delete_monitoring_schedule(MonitoringScheduleName=name)
    with pytest.raises(ClientError) as err:
        sm.describe_monitoring_schedule(MonitoringScheduleName="now-a")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"

    # UpdateEndpoint to a config without capture: CaptureStatus Stopped, nothing more is written
    sm.create_endpoint_config(
        EndpointConfigName="mon-ep-off",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "mon-ep",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        DataCaptureConfig={**CAPTURE, "EnableCapture": False},
    )
    sm.update_endpoint(EndpointName="mon-ep", EndpointConfigName="mon-ep-off")
    desc = wait_status(sm, "mon-ep", ("InService", "Failed"))
    assert (
        desc["DataCaptureConfig"]["CaptureStatus"] == "Stopped" and desc["DataCaptureConfig"]["EnableCapture"] is False
    )
    time.sleep(2.5)  # a control-loop pass and a flush
    before = len(s3.list_objects_v2(Bucket=BUCKET, Prefix="capture/mon-ep/").get("Contents", []))
    rt.invoke_endpoint(EndpointName="mon-ep", Body=csv_row(x[0]), ContentType="text/csv")
    time.sleep(2)
    assert len(s3.list_objects_v2(Bucket=BUCKET, Prefix="capture/mon-ep/").get("Contents", [])) == before
    sm.delete_endpoint(EndpointName="mon-ep")


def test_job_definitions(sm: Any) -> None:
    spec = definition("mon-ep")
    sm.create_data_quality_job_definition(
        JobDefinitionName="dq-1",
        DataQualityAppSpecification={"ImageUri": ANALYZER, "Environment": {"x": "1"}},
        DataQualityJobInput={"EndpointInput": spec["MonitoringInputs"][0]["EndpointInput"]},
        DataQualityJobOutputConfig=spec["MonitoringOutputConfig"],
        JobResources=RESOURCES,
        RoleArn=ROLE,
    )
    desc = sm.describe_data_quality_job_definition(JobDefinitionName="dq-1")
    assert desc["DataQualityAppSpecification"]["Environment"] == {"x": "1"}
    listed = sm.list_data_quality_job_definitions(EndpointName="mon-ep")["JobDefinitionSummaries"]
    assert [d["MonitoringJobDefinitionName"] for d in listed] == ["dq-1"]
    sm.create_monitoring_schedule(
        MonitoringScheduleName="hourly",
        MonitoringScheduleConfig={
            "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
            "MonitoringJobDefinitionName": "dq-1",
            "MonitoringType": "DataQuality",
        },
    )
    with pytest.raises(ClientError) as err:
        sm.delete_data_quality_job_definition(JobDefinitionName="dq-1")
    assert err.value.response["Error"]["Code"] == "ResourceInUse"
    sm.update_monitoring_schedule(
        MonitoringScheduleName="hourly",
        MonitoringScheduleConfig={
            "ScheduleConfig": {"ScheduleExpression": "cron(0 6 ? * * *)"},
            "MonitoringJobDefinitionName": "dq-1",
            "MonitoringType": "DataQuality",
        },
    )
    config = sm.describe_monitoring_schedule(MonitoringScheduleName="hourly")["MonitoringScheduleConfig"]
    assert config["ScheduleConfig"]["ScheduleExpression"] == "cron(0 6 ? * * *)"
    listed = sm.list_monitoring_schedules(MonitoringJobDefinitionName="dq-1")["MonitoringScheduleSummaries"]
    assert [(s["MonitoringScheduleName"], s["MonitoringJobDefinitionName"]) for s in listed] == [("hourly", "dq-1")]
    sm.delete_monitoring_schedule(MonitoringScheduleName="hourly")
    sm.delete_data_quality_job_definition(JobDefinitionName="dq-1")
    with pytest.raises(ClientError) as err:
        sm.describe_data_quality_job_definition(JobDefinitionName="dq-1")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def test_async_endpoints_capture_too(sm: Any, rt: Any, s3: Any) -> None:
    archive, model = sklearn_model()
    s3.put_object(Bucket=BUCKET, Key="models/async.tar.gz", Body=archive)
    sm.create_model(
        ModelName="cap-async",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/async.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="cap-async",
        ProductionVariants=[
            {"VariantName": "v1", "ModelName": "cap-async", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        DataCaptureConfig={**CAPTURE, "DestinationS3Uri": f"s3://{BUCKET}/async-capture/"},
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/async-out"}},
    )
    sm.create_endpoint(EndpointName="cap-async", EndpointConfigName="cap-async")
    assert wait_status(sm, "cap-async", ("InService", "Failed"))["EndpointStatus"] == "InService"
    x, _ = diabetes()
    s3.put_object(Bucket=BUCKET, Key="async-in/row.csv", Body=csv_row(x[1]).encode())
    answer = rt.invoke_endpoint_async(
        EndpointName="cap-async", InputLocation=f"s3://{BUCKET}/async-in/row.csv", ContentType="text/csv"
    )
    deadline = time.monotonic() + 30
    found: list[dict] = []
    while not found:
        assert time.monotonic() < deadline
        time.sleep(0.3)
        for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="async-capture/cap-async/v1/").get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
            found += [json.loads(line) for line in body.splitlines()]
    rec = found[0]
    assert rec["eventMetadata"]["inferenceId"] == answer["InferenceId"]
    assert rec["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv",
        "mode": "INPUT",
        "data": csv_row(x[1]),
        "encoding": "CSV",
    }
    sent = [[float(v) for v in csv_row(x[1]).split(",")]]  # what the CSV row holds
    output = json.loads(base64.b64decode(rec["captureData"]["endpointOutput"]["data"]))
    assert output[0] == pytest.approx(model.predict(sent)[0])
    sm.delete_endpoint(EndpointName="cap-async")
