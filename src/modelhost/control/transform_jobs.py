"""CreateTransformJob / DescribeTransformJob / ListTransformJobs / StopTransformJob.

These record the job and return; the transform supervisor (controllers/transforms.py) runs it and
moves the status on: InProgress -> Completed | Failed, or Stopping -> Stopped.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import IntegrityError

from modelhost.control import jobs, listing, models, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ResourceInUse, ValidationException
from modelhost.resources.transform import PROCESSABLE_TYPES, check_path, media_type
from modelhost.store import tables

# Members DescribeTransformJob echoes as they were given.
ECHOED = (
    "ModelName",
    "MaxConcurrentTransforms",
    "ModelClientConfig",
    "MaxPayloadInMB",
    "BatchStrategy",
    "Environment",
    "TransformInput",
    "TransformOutput",
    "DataCaptureConfig",
    "TransformResources",
    "DataProcessing",
    "ExperimentConfig",
)
MAX_PAYLOAD_MB = 100
MAX_INSTANCES = 100
FINISHED = ("Completed", "Failed", "Stopped")


def not_found(name: str) -> ValidationException:
    return ValidationException(f"Could not find requested job with name {name}")


def _validate(req: Request) -> None:
    payload = req.get("MaxPayloadInMB")
    concurrency = req.get("MaxConcurrentTransforms")
    if payload is not None and payload > MAX_PAYLOAD_MB:
        raise ValidationException(f"MaxPayloadInMB ({payload}) must be less than or equal to {MAX_PAYLOAD_MB} MB.")
    if concurrency and (payload if payload is not None else 6) * concurrency > MAX_PAYLOAD_MB:
        raise ValidationException(
            f"The product of MaxConcurrentTransforms ({concurrency}) and MaxPayloadInMB "
            f"({payload if payload is not None else 6}) must be less than or equal to {MAX_PAYLOAD_MB} MB."
        )
    count = req["TransformResources"]["InstanceCount"]
    if count > MAX_INSTANCES:
        raise ValidationException(f"InstanceCount ({count}) must be less than or equal to {MAX_INSTANCES}.")
    source = req["TransformInput"]["DataSource"]["S3DataSource"]
    if source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
        raise ValidationException(
            f"S3DataType {source['S3DataType']} is not supported for batch transform; use S3Prefix or ManifestFile."
        )
    dp = req.get("DataProcessing") or {}
    processing = (
        (dp.get("InputFilter") or "$") != "$"
        or (dp.get("OutputFilter") or "$") != "$"
        or (dp.get("JoinSource", "None") == "Input")
    )
    capture = (req.get("DataCaptureConfig") or {}).get("GenerateInferenceId", False)
    for key in ("InputFilter", "OutputFilter"):
        if dp.get(key):
            reason = check_path(dp[key])
            if reason is not None:
                raise ValidationException(f"DataProcessing.{key}: {reason}")
    if processing or capture:
        tin, tout = req["TransformInput"], req["TransformOutput"]
        for field, value in (
            ("TransformInput.ContentType", tin.get("ContentType")),
            ("TransformOutput.Accept", tout.get("Accept")),
        ):
            if value is not None and media_type(value) not in PROCESSABLE_TYPES:
                raise ValidationException(
                    f"{field} {value} is not supported with DataProcessing or GenerateInferenceId; supported "
                    f"content types are {', '.join(PROCESSABLE_TYPES)}."
                )
        if media_type(tin.get("ContentType")) == "text/csv" and (
            tin.get("SplitType", "None") != "Line" or tout.get("AssembleWith", "None") != "Line"
        ):
            raise ValidationException(
                "For text/csv input with DataProcessing or GenerateInferenceId, TransformInput.SplitType must be "
                "Line and TransformOutput.AssembleWith must be Line."
            )


def create_transform_job(ctx: ControlContext, req: Request) -> Response:
    name = req["TransformJobName"]
    arn = ctx.arn("transform-job", name)
    _validate(req)
    model = models.get(ctx, req["ModelName"])  # Could not find model "arn..."
    if "ModelDataSource" in json.dumps(model["spec"]):
        containers = [model["spec"].get("PrimaryContainer")] + list(model["spec"].get("Containers", []))
        if any(c and c.get("ModelDataSource") for c in containers):
            raise ValidationException("Batch transform does not support models with ModelDataSource.")
    exists = ResourceInUse(
        "Transform job names must be unique within an AWS account and region, and a transform job with this "
        f"name already exists ({arn})"
    )
    now = ctx.now()
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.transform_jobs, name) is not None:
            raise exists
        try:
            ctx.store.insert(
                conn,
                tables.transform_jobs,
                {
                    "name_key": name.lower(),
                    "name": name,
                    "arn": arn,
                    "model_name": model["name"],
                    "status": "InProgress",
                    "failure_reason": None,
                    "creation_time": now,
                    "last_modified_time": now,
                    "start_time": None,
                    "end_time": None,
                    "attempts": 0,
                    "spec": {k: req[k] for k in ECHOED if k in req},
                    "deployment": {"model": model["spec"]},
                    "progress": None,
                },
            )
        except IntegrityError:
            raise exists from None
        tags.save(conn, arn, req.get("Tags", []))
    ctx.wake()  # the control loop starts the job now
    return {"TransformJobArn": arn}


def get(ctx: ControlContext, name: str) -> dict:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.transform_jobs, name)
    if row is None:
        raise not_found(name)
    return row


def describe_transform_job(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["TransformJobName"])
    spec = row["spec"]
    out: dict[str, Any] = {
        "TransformJobName": row["name"],
        "TransformJobArn": row["arn"],
        "TransformJobStatus": row["status"],
        **spec,
        "CreationTime": row["creation_time"],
    }
    if row["failure_reason"]:
        out["FailureReason"] = row["failure_reason"]
    if row["start_time"] is not None:
        out["TransformStartTime"] = row["start_time"]
    if row["end_time"] is not None:
        out["TransformEndTime"] = row["end_time"]
    # modelhost extension (clients that do not know it ignore it): objects and records done so far
    out["ModelhostProgress"] = json.loads(row["progress"]) if row["progress"] else {}
    return out


def list_transform_jobs(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.transform_jobs)
    rows = listing.filter_rows(rows, req, status_column="status")
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time", "Status": "status"})

    def item(r: dict) -> dict:
        out = {
            "TransformJobName": r["name"],
            "TransformJobArn": r["arn"],
            "CreationTime": r["creation_time"],
            "LastModifiedTime": r["last_modified_time"],
            "TransformJobStatus": r["status"],
        }
        if r["end_time"] is not None:
            out["TransformEndTime"] = r["end_time"]
        if r["failure_reason"]:
            out["FailureReason"] = r["failure_reason"]
        return out

    return listing.paginate(rows, req, "TransformJobSummaries", item)


def stop_transform_job(ctx: ControlContext, req: Request) -> Response:
    return jobs.request_stop(ctx, tables.transform_jobs, req["TransformJobName"], "transform job", not_found)
