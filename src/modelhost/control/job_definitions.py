"""CreateDataQualityJobDefinition / Describe / List / Delete: a monitoring job definition a schedule
names (``MonitoringJobDefinitionName`` + ``MonitoringType: DataQuality``), as the SDK's
``DefaultModelMonitor.create_monitoring_schedule`` makes them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelhost.control import listing, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ResourceInUse, ResourceNotFound
from modelhost.store import tables

ECHOED = (
    "DataQualityBaselineConfig",
    "DataQualityAppSpecification",
    "DataQualityJobInput",
    "DataQualityJobOutputConfig",
    "JobResources",
    "NetworkConfig",
    "RoleArn",
    "StoppingCondition",
)


def not_found(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Could not find job definition {name}.")


def create_data_quality_job_definition(ctx: ControlContext, req: Request) -> Response:
    name = req["JobDefinitionName"]
    arn = ctx.arn("data-quality-job-definition", name)
    endpoint = ((req["DataQualityJobInput"].get("EndpointInput")) or {}).get("EndpointName")
    exists = ResourceInUse(f"Job definition {name} already exists ({arn}).")
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.data_quality_job_definitions, name) is not None:
            raise exists
        try:
            ctx.store.insert(
                conn,
                tables.data_quality_job_definitions,
                {
                    "name_key": name.lower(),
                    "name": name,
                    "arn": arn,
                    "creation_time": ctx.now(),
                    "endpoint_name": endpoint,
                    "spec": {k: req[k] for k in ECHOED if k in req},
                },
            )
        except IntegrityError:
            raise exists from None
        tags.save(conn, arn, req.get("Tags", []))
    return {"JobDefinitionArn": arn}


def get(ctx: ControlContext, name: str) -> dict[str, Any]:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.data_quality_job_definitions, name)
    if row is None:
        raise not_found(name)
    return row


def describe_data_quality_job_definition(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["JobDefinitionName"])
    return {
        "JobDefinitionArn": row["arn"],
        "JobDefinitionName": row["name"],
        "CreationTime": row["creation_time"],
        **row["spec"],
    }


def list_data_quality_job_definitions(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.data_quality_job_definitions)
    if req.get("EndpointName"):
        rows = [r for r in rows if (r["endpoint_name"] or "").lower() == req["EndpointName"].lower()]
    rows = listing.filter_rows(rows, req)
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time"})

    def item(r: dict) -> dict:
        out = {
            "MonitoringJobDefinitionName": r["name"],
            "MonitoringJobDefinitionArn": r["arn"],
            "CreationTime": r["creation_time"],
        }
        if r["endpoint_name"]:
            out["EndpointName"] = r["endpoint_name"]
        return out

    return listing.paginate(rows, req, "JobDefinitionSummaries", item)


def delete_data_quality_job_definition(ctx: ControlContext, req: Request) -> Response:
    name = req["JobDefinitionName"]
    s = tables.monitoring_schedules
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.data_quality_job_definitions, name) is None:
            raise not_found(name)
        for row in conn.execute(select(s)).all():
            config = ctx.store.decode(row)["spec"]["MonitoringScheduleConfig"]
            if (config.get("MonitoringJobDefinitionName") or "").lower() == name.lower():
                raise ResourceInUse(
                    f"Job definition {name} is used by the monitoring schedule {row.name}; delete the schedule first."
                )
        ctx.store.delete(conn, tables.data_quality_job_definitions, name)
        tags.drop_all(conn, ctx.arn("data-quality-job-definition", name))
    return {}


def as_monitoring_definition(spec: dict[str, Any]) -> dict[str, Any]:
    """A data quality job definition in the shape of an embedded ``MonitoringJobDefinition``."""
    app = dict(spec["DataQualityAppSpecification"])
    env = app.pop("Environment", None) or {}
    out: dict[str, Any] = {
        "MonitoringInputs": [spec["DataQualityJobInput"]],
        "MonitoringOutputConfig": spec["DataQualityJobOutputConfig"],
        "MonitoringResources": spec["JobResources"],
        "MonitoringAppSpecification": app,
        "RoleArn": spec["RoleArn"],
    }
    if spec.get("DataQualityBaselineConfig"):
        out["BaselineConfig"] = spec["DataQualityBaselineConfig"]
    for key in ("StoppingCondition", "NetworkConfig"):
        if key in spec:
            out[key] = spec[key]
    if env:
        out["Environment"] = env
    return out
