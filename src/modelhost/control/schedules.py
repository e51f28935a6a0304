"""CreateMonitoringSchedule / Describe / List / Update / Delete / Start / Stop.

A schedule is ``Scheduled`` (the scheduler, controllers/monitoring.py, starts its executions) or
``Stopped``. Its config holds an embedded ``MonitoringJobDefinition`` or names a data quality job
definition (``MonitoringJobDefinitionName`` + ``MonitoringType``). The monitored endpoint is kept in
a column: DeleteEndpoint refuses while a schedule names it (``check_endpoint_free``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from modelhost.control import executions, job_definitions, listing, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ResourceInUse, ResourceNotFound, ValidationException
from modelhost.resources import schedule as expressions
from modelhost.store import tables

SUPPORTED_TYPES = ("DataQuality",)


def not_found(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Monitoring Schedule {name} does not exist.")


def _endpoint_and_type(ctx: ControlContext, config: dict[str, Any]) -> tuple[str | None, str]:
    """Check the config; returns (monitored endpoint, MonitoringType)."""
    sched = config.get("ScheduleConfig")
    if sched is None:
        raise ValidationException("MonitoringScheduleConfig.ScheduleConfig is required.")
    try:
        expressions.parse(
            sched["ScheduleExpression"], sched.get("DataAnalysisStartTime"), sched.get("DataAnalysisEndTime")
        )
    except expressions.ScheduleError as exc:
        raise ValidationException(str(exc)) from None
    embedded, named = config.get("MonitoringJobDefinition"), config.get("MonitoringJobDefinitionName")
    if (embedded is None) == (named is None):
        raise ValidationException(
            "Exactly one of MonitoringScheduleConfig.MonitoringJobDefinition and "
            "MonitoringScheduleConfig.MonitoringJobDefinitionName is required."
        )
    kind = config.get("MonitoringType", "DataQuality")
    if kind not in SUPPORTED_TYPES:
        raise ValidationException(f"MonitoringType {kind} is not supported by modelhost (DataQuality is).")
    definition: dict[str, Any] = (
        job_definitions.as_monitoring_definition(job_definitions.get(ctx, named)["spec"])
        if named is not None
        else dict(embedded or {})
    )
    inputs = definition["MonitoringInputs"]
    if len(inputs) != 1 or len(definition["MonitoringOutputConfig"]["MonitoringOutputs"]) != 1:
        raise ValidationException("A monitoring job needs exactly one MonitoringInput and one MonitoringOutput.")
    endpoint = (inputs[0].get("EndpointInput") or {}).get("EndpointName")
    if endpoint is None:
        raise ValidationException("Only EndpointInput monitoring inputs are supported by modelhost.")
    return endpoint, kind


def create_monitoring_schedule(ctx: ControlContext, req: Request) -> Response:
    name = req["MonitoringScheduleName"]
    arn = ctx.arn("monitoring-schedule", name)
    config = req["MonitoringScheduleConfig"]
    endpoint, kind = _endpoint_and_type(ctx, config)
    exists = ResourceInUse(f"Monitoring Schedule {name} already exists ({arn}).")
    now = ctx.now()
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.monitoring_schedules, name) is not None:
            raise exists
        try:
            ctx.store.insert(
                conn,
                tables.monitoring_schedules,
                {
                    "name_key": name.lower(),
                    "name": name,
                    "arn": arn,
                    "status": "Scheduled",
                    "failure_reason": None,
                    "creation_time": now,
                    "last_modified_time": now,
                    "endpoint_name": endpoint,
                    "spec": {"MonitoringScheduleConfig": {**config, "MonitoringType": kind}, "StartedAt": now},
                },
            )
        except IntegrityError:
            raise exists from None
        tags.save(conn, arn, req.get("Tags", []))
    ctx.wake()
    return {"MonitoringScheduleArn": arn}


def get(ctx: ControlContext, name: str) -> dict[str, Any]:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.monitoring_schedules, name)
    if row is None:
        raise not_found(name)
    return row


def describe_monitoring_schedule(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["MonitoringScheduleName"])
    config = row["spec"]["MonitoringScheduleConfig"]
    out: Response = {
        "MonitoringScheduleArn": row["arn"],
        "MonitoringScheduleName": row["name"],
        "MonitoringScheduleStatus": row["status"],
        "MonitoringType": config.get("MonitoringType", "DataQuality"),
        "CreationTime": row["creation_time"],
        "LastModifiedTime": row["last_modified_time"],
        "MonitoringScheduleConfig": config,
    }
    if row["endpoint_name"]:
        out["EndpointName"] = row["endpoint_name"]
    if row["failure_reason"]:
        out["FailureReason"] = row["failure_reason"]
    last = executions.latest(ctx, row["name"])
    if last is not None:
        out["LastMonitoringExecutionSummary"] = last
    return out


def list_monitoring_schedules(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.monitoring_schedules)
    if req.get("EndpointName"):
        rows = [r for r in rows if (r["endpoint_name"] or "").lower() == req["EndpointName"].lower()]
    if req.get("MonitoringJobDefinitionName"):
        wanted = req["MonitoringJobDefinitionName"].lower()
        rows = [
            r
            for r in rows
            if (r["spec"]["MonitoringScheduleConfig"].get("MonitoringJobDefinitionName") or "").lower() == wanted
        ]
    if req.get("MonitoringTypeEquals"):
        rows = [
            r
            for r in rows
            if r["spec"]["MonitoringScheduleConfig"].get("MonitoringType") == req["MonitoringTypeEquals"]
        ]
    rows = listing.filter_rows(rows, req, status_column="status")
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time", "Status": "status"})

    def item(r: dict) -> dict:
        config = r["spec"]["MonitoringScheduleConfig"]
        out = {
            "MonitoringScheduleName": r["name"],
            "MonitoringScheduleArn": r["arn"],
            "CreationTime": r["creation_time"],
            "LastModifiedTime": r["last_modified_time"],
            "MonitoringScheduleStatus": r["status"],
            "MonitoringType": config.get("MonitoringType", "DataQuality"),
        }
        if r["endpoint_name"]:
            out["EndpointName"] = r["endpoint_name"]
        if config.get("MonitoringJobDefinitionName"):
            out["MonitoringJobDefinitionName"] = config["MonitoringJobDefinitionName"]
        return out

    return listing.paginate(rows, req, "MonitoringScheduleSummaries", item)


def update_monitoring_schedule(ctx: ControlContext, req: Request) -> Response:
    name = req["MonitoringScheduleName"]
    config = req["MonitoringScheduleConfig"]
    endpoint, kind = _endpoint_and_type(ctx, config)
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.monitoring_schedules, name)
        if row is None:
            raise not_found(name)
        spec = {**row["spec"], "MonitoringScheduleConfig": {**config, "MonitoringType": kind}}
        ctx.store.update(
            conn,
            tables.monitoring_schedules,
            name,
            {"spec": spec, "endpoint_name": endpoint, "last_modified_time": ctx.now()},
        )
    ctx.wake()
    return {"MonitoringScheduleArn": row["arn"]}


def delete_monitoring_schedule(ctx: ControlContext, req: Request) -> Response:
    name = req["MonitoringScheduleName"]
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.monitoring_schedules, name)
        if row is None:
            raise not_found(name)
        ctx.store.delete(conn, tables.monitoring_schedules, name)
        executions.forget(conn, name)
        tags.drop_all(conn, row["arn"])
    return {}


def _set_status(ctx: ControlContext, name: str, status: str) -> Response:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.monitoring_schedules, name)
        if row is None:
            raise not_found(name)
        values: dict[str, Any] = {"status": status, "last_modified_time": ctx.now()}
        if status == "Scheduled" and row["status"] != "Scheduled":
            values["spec"] = {**row["spec"], "StartedAt": ctx.now()}  # slots before a restart of it are not run
        ctx.store.update(conn, tables.monitoring_schedules, name, values)
    ctx.wake()
    return {}


def start_monitoring_schedule(ctx: ControlContext, req: Request) -> Response:
    return _set_status(ctx, req["MonitoringScheduleName"], "Scheduled")


def stop_monitoring_schedule(ctx: ControlContext, req: Request) -> Response:
    return _set_status(ctx, req["MonitoringScheduleName"], "Stopped")


def check_endpoint_free(ctx: ControlContext, endpoint: str) -> None:
    """DeleteEndpoint's guard: no monitoring schedule may name the endpoint."""
    s = tables.monitoring_schedules
    with ctx.store.begin() as conn:
        names = [
            r.name
            for r in conn.execute(select(s.c.name).where(func.lower(s.c.endpoint_name) == endpoint.lower())).all()
        ]
    if names:
        raise ValidationException(
            f"Endpoint {endpoint} has monitoring schedules attached to it ({', '.join(sorted(names))}); delete the "
            "monitoring schedules before deleting the endpoint."
        )
