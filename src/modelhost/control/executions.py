"""Monitoring executions: one per schedule slot, each a processing job (its ARN in the summary).

``start_execution`` (called by the scheduler) turns the schedule's job definition and the slot into
a CreateProcessingJob request — the endpoint's capture hours of the analysis window as inputs, the
baseline files and scripts as inputs, the analyzer's environment (reference 8.3) — and records the
execution and the job in one transaction (the slot is the primary key: it runs at most once).
``ListMonitoringExecutions`` derives each execution's status from its job.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from modelhost.control import job_definitions, listing, processing
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ApiError
from modelhost.resources import schedule as expressions
from modelhost.store import endpoints as endpoint_rows
from modelhost.store import tables

ANALYZER_ENDPOINT_FORMAT = '{"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}}'
JOB_STATUS = {"InProgress": "InProgress", "Stopping": "Stopping", "Stopped": "Stopped", "Failed": "Failed"}


def _status(job: dict[str, Any] | None, failure: str | None) -> str:
    if job is None:
        return "Failed" if failure else "Pending"
    if job["status"] == "Completed":
        return (
            "CompletedWithViolations"
            if (job["exit_message"] or "").startswith("CompletedWithViolations")
            else "Completed"
        )
    return JOB_STATUS.get(job["status"], "Pending")


def _summaries(ctx: ControlContext, conn: Connection, rows: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        job = ctx.store.get(conn, tables.processing_jobs, r.processing_job_name) if r.processing_job_name else None
        summary: dict[str, Any] = {
            "MonitoringScheduleName": r.schedule_name,
            "ScheduledTime": r.scheduled_time,
            "CreationTime": r.creation_time,
            "LastModifiedTime": job["last_modified_time"] if job else r.creation_time,
            "MonitoringExecutionStatus": _status(job, r.failure_reason),
            "MonitoringType": r.monitoring_type,
        }
        if job is not None:
            summary["ProcessingJobArn"] = job["arn"]
        if r.endpoint_name:
            summary["EndpointName"] = r.endpoint_name
        reason = r.failure_reason or (job or {}).get("failure_reason")
        if reason:
            summary["FailureReason"] = reason
        out.append(summary)
    return out


def latest(ctx: ControlContext, schedule: str) -> dict[str, Any] | None:
    e = tables.monitoring_executions
    with ctx.store.begin() as conn:
        rows = conn.execute(
            select(e).where(e.c.schedule_key == schedule.lower()).order_by(e.c.scheduled_time.desc()).limit(1)
        ).all()
        found = _summaries(ctx, conn, rows)
    return found[0] if found else None


def last_slot(conn: Connection, schedule: str) -> float | None:
    e = tables.monitoring_executions
    row = conn.execute(
        select(e.c.scheduled_time).where(e.c.schedule_key == schedule.lower()).order_by(e.c.scheduled_time.desc())
    ).first()
    return float(row.scheduled_time) if row else None


def forget(conn: Connection, schedule: str) -> None:
    e = tables.monitoring_executions
    conn.execute(delete(e).where(e.c.schedule_key == schedule.lower()))


def list_monitoring_executions(ctx: ControlContext, req: Request) -> Response:
    e = tables.monitoring_executions
    with ctx.store.begin() as conn:
        query = select(e)
        if req.get("MonitoringScheduleName"):
            query = query.where(e.c.schedule_key == req["MonitoringScheduleName"].lower())
        summaries = _summaries(ctx, conn, conn.execute(query).all())
    if req.get("EndpointName"):
        summaries = [s for s in summaries if s.get("EndpointName", "").lower() == req["EndpointName"].lower()]
    if req.get("MonitoringTypeEquals"):
        summaries = [s for s in summaries if s["MonitoringType"] == req["MonitoringTypeEquals"]]
    if req.get("StatusEquals"):
        summaries = [s for s in summaries if s["MonitoringExecutionStatus"] == req["StatusEquals"]]
    for key, member, before in (
        ("ScheduledTimeBefore", "ScheduledTime", True),
        ("ScheduledTimeAfter", "ScheduledTime", False),
        ("CreationTimeBefore", "CreationTime", True),
        ("CreationTimeAfter", "CreationTime", False),
        ("LastModifiedTimeBefore", "LastModifiedTime", True),
        ("LastModifiedTimeAfter", "LastModifiedTime", False),
    ):
        if key in req:
            bound = _epoch(req[key])
            summaries = [s for s in summaries if (s[member] < bound if before else s[member] >= bound)]
    sort_by = req.get("SortBy", "CreationTime")
    column = {"CreationTime": "CreationTime", "ScheduledTime": "ScheduledTime", "Status": "MonitoringExecutionStatus"}
    key_of = column[sort_by]
    summaries.sort(
        key=lambda s: (s[key_of], s["MonitoringScheduleName"]),
        reverse=req.get("SortOrder", "Descending") == "Descending",
    )
    return listing.paginate(summaries, req, "MonitoringExecutionSummaries", lambda s: s)


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _job_name(schedule: str, slot: float) -> str:
    stamp = time.strftime("%Y%m%d%H%M", time.gmtime(slot))
    digest = hashlib.sha1(f"{schedule.lower()}/{slot}".encode()).hexdigest()[:24]
    return f"model-monitoring-{stamp}-{digest}"


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def processing_request(
    ctx: ControlContext, conn: Connection, schedule: dict[str, Any], slot: float
) -> tuple[dict[str, Any], str]:
    """(CreateProcessingJob request, endpoint name) for one slot of a schedule."""
    config = schedule["spec"]["MonitoringScheduleConfig"]
    sched = config["ScheduleConfig"]
    parsed = expressions.parse(
        sched["ScheduleExpression"], sched.get("DataAnalysisStartTime"), sched.get("DataAnalysisEndTime")
    )
    if config.get("MonitoringJobDefinitionName"):
        row = ctx.store.get(conn, tables.data_quality_job_definitions, config["MonitoringJobDefinitionName"])
        if row is None:
            raise job_definitions.not_found(config["MonitoringJobDefinitionName"])
        definition = job_definitions.as_monitoring_definition(row["spec"])
    else:
        definition = config["MonitoringJobDefinition"]
    endpoint_input = definition["MonitoringInputs"][0]["EndpointInput"]
    endpoint = endpoint_input["EndpointName"]
    record = endpoint_rows.load(ctx.store, conn, endpoint)
    if record is None:
        raise ApiError(f"The endpoint {endpoint} does not exist.")
    capture = record.deployment.current.config.get("DataCaptureConfig")
    if not capture:
        raise ApiError(f"The endpoint {endpoint} has no DataCaptureConfig: there is no captured data to monitor.")
    dest = capture["DestinationS3Uri"].rstrip("/")
    start, end = parsed.window(slot)
    source = endpoint_input["LocalPath"]
    inputs: list[dict[str, Any]] = []
    for variant in record.deployment.current.config["ProductionVariants"]:
        for hour in expressions.hours(start, end):
            part = time.strftime("%Y/%m/%d/%H", time.gmtime(hour))
            inputs.append(
                {
                    "InputName": f"capture-{len(inputs)}",
                    "S3Input": {
                        "S3Uri": f"{dest}/{endpoint}/{variant['VariantName']}/{part}/",
                        "LocalPath": f"{source}/{endpoint}/{variant['VariantName']}/{part}",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            )
    output = definition["MonitoringOutputConfig"]["MonitoringOutputs"][0]["S3Output"]
    env: dict[str, str] = {
        **(definition.get("Environment") or {}),
        "dataset_format": ANALYZER_ENDPOINT_FORMAT,
        "dataset_source": source,
        "output_path": output["LocalPath"],
        "publish_cloudwatch_metrics": "Enabled",
        "sagemaker_endpoint_name": endpoint,
        "sagemaker_monitoring_schedule_name": schedule["name"],
        "sagemaker_endpoint_datacapture_prefix": f"{dest}/{endpoint}",
        "start_time": expressions.iso(start),
        # capture records carry whole seconds: the window ends after the slot's second, not inside it
        "end_time": expressions.iso(math.ceil(end)),
    }
    for key, env_name in (
        ("ConstraintsResource", "baseline_constraints"),
        ("StatisticsResource", "baseline_statistics"),
    ):
        uri = ((definition.get("BaselineConfig") or {}).get(key) or {}).get("S3Uri")
        if uri:
            local = f"/opt/ml/processing/baseline/{env_name.split('_')[1]}"
            inputs.append(_input(env_name, uri, local))
            env[env_name] = f"{local}/{_basename(uri)}"
    app = definition["MonitoringAppSpecification"]
    for key, env_name in (
        ("RecordPreprocessorSourceUri", "record_preprocessor_script"),
        ("PostAnalyticsProcessorSourceUri", "post_analytics_processor_script"),
    ):
        if app.get(key):
            local = f"/opt/ml/processing/code/{env_name}"
            inputs.append(_input(env_name, app[key], local))
            env[env_name] = f"{local}/{_basename(app[key])}"
    stamp = time.strftime("%Y/%m/%d/%H", time.gmtime(slot))
    request: dict[str, Any] = {
        "ProcessingJobName": _job_name(schedule["name"], slot),
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "monitoring_output",
                    "S3Output": {
                        "S3Uri": f"{output['S3Uri'].rstrip('/')}/{endpoint}/{schedule['name']}/{stamp}",
                        "LocalPath": output["LocalPath"],
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": definition["MonitoringResources"],
        "AppSpecification": {k: app[k] for k in ("ImageUri", "ContainerEntrypoint", "ContainerArguments") if k in app},
        "Environment": env,
        "RoleArn": definition["RoleArn"],
        "StoppingCondition": definition.get("StoppingCondition") or {"MaxRuntimeInSeconds": 3600},
    }
    return request, endpoint


def _input(name: str, uri: str, local: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File"},
    }


def start_execution(ctx: ControlContext, schedule: dict[str, Any], slot: float) -> bool:
    """Record the slot's execution and start its processing job (or record why it cannot run).
    False when the slot had already been taken (another pass, or before a restart)."""
    kind = schedule["spec"]["MonitoringScheduleConfig"].get("MonitoringType", "DataQuality")
    e = tables.monitoring_executions
    try:
        with ctx.store.begin() as conn:
            taken = conn.execute(
                select(e.c.schedule_key).where(e.c.schedule_key == schedule["name_key"], e.c.scheduled_time == slot)
            ).first()
            if taken is not None:
                return False
            values: dict[str, Any] = {
                "schedule_key": schedule["name_key"],
                "scheduled_time": slot,
                "schedule_name": schedule["name"],
                "creation_time": ctx.now(),
                "processing_job_name": None,
                "endpoint_name": schedule["endpoint_name"],
                "monitoring_type": kind,
                "failure_reason": None,
            }
            try:
                request, _endpoint = processing_request(ctx, conn, schedule, slot)
                processing.insert_job(ctx, conn, request, schedule_arn=schedule["arn"])
                values["processing_job_name"] = request["ProcessingJobName"]
            except ApiError as exc:
                values["failure_reason"] = str(exc)
            conn.execute(e.insert().values(**values))
    except IntegrityError:  # the slot was taken meanwhile
        return False
    return True
