"""CreateProcessingJob / DescribeProcessingJob / ListProcessingJobs / StopProcessingJob.

These record the job and return; the processing supervisor (controllers/processing.py) runs it:
InProgress -> Completed | Failed, or Stopping -> Stopped. ``insert_job`` is also how a monitoring
schedule starts an execution (its job carries the schedule's ARN).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from modelhost.control import jobs, listing, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ResourceInUse, ValidationException
from modelhost.store import tables

# Members DescribeProcessingJob echoes as they were given.
ECHOED = (
    "ProcessingInputs",
    "ProcessingOutputConfig",
    "ProcessingResources",
    "StoppingCondition",
    "AppSpecification",
    "Environment",
    "NetworkConfig",
    "RoleArn",
    "ExperimentConfig",
)
FINISHED = ("Completed", "Failed", "Stopped")
MAX_INSTANCES = 100


def not_found(name: str) -> ValidationException:
    return ValidationException(f"Could not find requested job with name {name}")


def _validate(req: Request) -> None:
    count = req["ProcessingResources"]["ClusterConfig"]["InstanceCount"]
    if count > 1:
        raise ValidationException(
            f"ProcessingResources.ClusterConfig.InstanceCount ({count}) is not supported by modelhost: processing "
            "jobs run on one instance."
        )
    local_paths: list[str] = []
    names: set[str] = set()
    for i, item in enumerate(req.get("ProcessingInputs", [])):
        if "S3Input" not in item:
            raise ValidationException(
                f"ProcessingInputs[{i}] ({item['InputName']}): only S3Input is supported by modelhost "
                "(DatasetDefinition is not)."
            )
        local_paths.append(item["S3Input"]["LocalPath"])
        names.add(item["InputName"])
    outputs = (req.get("ProcessingOutputConfig") or {}).get("Outputs", [])
    for i, item in enumerate(outputs):
        if "S3Output" not in item:
            raise ValidationException(
                f"ProcessingOutputConfig.Outputs[{i}] ({item['OutputName']}): only S3Output is supported by modelhost."
            )
        local_paths.append(item["S3Output"]["LocalPath"])
    for path in local_paths:
        if not path.startswith("/opt/ml/processing/"):
            raise ValidationException(f"LocalPath {path} must be under /opt/ml/processing/.")
        if ".." in path.split("/"):
            raise ValidationException(f"LocalPath {path} must not contain '..'.")
    if len(set(local_paths)) != len(local_paths):
        raise ValidationException("ProcessingInputs and ProcessingOutputConfig LocalPath values must be unique.")
    if len(names) != len(req.get("ProcessingInputs", [])):
        raise ValidationException("ProcessingInputs InputName values must be unique.")
    for i, item in enumerate(outputs):
        if item["S3Output"]["S3Uri"].startswith("s3://") is False:
            raise ValidationException(f"ProcessingOutputConfig.Outputs[{i}].S3Output.S3Uri must be an s3:// URI.")


def insert_job(ctx: ControlContext, conn: Connection, req: Request, schedule_arn: str | None = None) -> str:
    """Record a new InProgress job in the caller's transaction; returns its ARN."""
    name = req["ProcessingJobName"]
    arn = ctx.arn("processing-job", name)
    _validate(req)
    exists = ResourceInUse(f"Job with name {name} already exists ({arn})")
    if ctx.store.get(conn, tables.processing_jobs, name) is not None:
        raise exists
    now = ctx.now()
    try:
        ctx.store.insert(
            conn,
            tables.processing_jobs,
            {
                "name_key": name.lower(),
                "name": name,
                "arn": arn,
                "status": "InProgress",
                "failure_reason": None,
                "exit_message": None,
                "creation_time": now,
                "last_modified_time": now,
                "start_time": None,
                "end_time": None,
                "attempts": 0,
                "monitoring_schedule_arn": schedule_arn,
                "spec": {k: req[k] for k in ECHOED if k in req},
            },
        )
    except IntegrityError:
        raise exists from None
    tags.save(conn, arn, req.get("Tags", []))
    return arn


def create_processing_job(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        arn = insert_job(ctx, conn, req)
    ctx.wake()  # the control loop starts the job now
    return {"ProcessingJobArn": arn}


def get(ctx: ControlContext, name: str) -> dict:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.processing_jobs, name)
    if row is None:
        raise not_found(name)
    return row


def describe_processing_job(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["ProcessingJobName"])
    out: dict[str, Any] = {
        "ProcessingJobName": row["name"],
        "ProcessingJobArn": row["arn"],
        "ProcessingJobStatus": row["status"],
        **row["spec"],
        "CreationTime": row["creation_time"],
        "LastModifiedTime": row["last_modified_time"],
    }
    for column, member in (
        ("failure_reason", "FailureReason"),
        ("exit_message", "ExitMessage"),
        ("start_time", "ProcessingStartTime"),
        ("end_time", "ProcessingEndTime"),
        ("monitoring_schedule_arn", "MonitoringScheduleArn"),
    ):
        if row[column] is not None:
            out[member] = row[column]
    return out


def list_processing_jobs(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.processing_jobs)
    rows = listing.filter_rows(rows, req, status_column="status")
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time", "Status": "status"})

    def item(r: dict) -> dict:
        out = {
            "ProcessingJobName": r["name"],
            "ProcessingJobArn": r["arn"],
            "CreationTime": r["creation_time"],
            "LastModifiedTime": r["last_modified_time"],
            "ProcessingJobStatus": r["status"],
        }
        for column, member in (
            ("end_time", "ProcessingEndTime"),
            ("failure_reason", "FailureReason"),
            ("exit_message", "ExitMessage"),
        ):
            if r[column] is not None:
                out[member] = r[column]
        return out

    return listing.paginate(rows, req, "ProcessingJobSummaries", item)


def stop_processing_job(ctx: ControlContext, req: Request) -> Response:
    return jobs.request_stop(ctx, tables.processing_jobs, req["ProcessingJobName"], "processing job", not_found)
