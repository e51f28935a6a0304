"""CreateEndpoint / DescribeEndpoint / ListEndpoints / UpdateEndpoint / DeleteEndpoint.

These only record desired state and return; the reconciler (hosting.reconciler) starts and
stops instances and moves the status on (Creating -> InService | Failed, Deleting -> gone).
"""

from __future__ import annotations

import hashlib
from typing import Any

from modelhost.control import endpoint_configs, listing, models, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ValidationException
from modelhost.store import tables

IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack")


def not_found(ctx: ControlContext, name: str) -> ValidationException:
    return ValidationException(f'Could not find endpoint "{ctx.arn("endpoint", name)}".')


def in_progress(ctx: ControlContext, name: str) -> ValidationException:
    return ValidationException(f'Cannot update in-progress endpoint "{ctx.arn("endpoint", name)}".')


def snapshot(ctx: ControlContext, config_name: str) -> dict[str, Any]:
    """Freeze an endpoint config and the models it names: what the reconciler deploys."""
    config = endpoint_configs.get(ctx, config_name)
    spec = config["spec"]
    used = {v["ModelName"] for v in spec["ProductionVariants"] + spec.get("ShadowProductionVariants", [])}
    return {
        "config_name": config["name"],
        "config": spec,
        "models": {name: models.get(ctx, name)["spec"] for name in sorted(used)},
        "time": ctx.now(),
    }


def create_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    arn = ctx.arn("endpoint", name)
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.endpoints, name) is not None:
            raise ValidationException(f'Cannot create already existing endpoint "{arn}".')
    current = snapshot(ctx, req["EndpointConfigName"])
    deployment: dict[str, Any] = {"current": current, "pending": None}
    if "DeploymentConfig" in req:
        deployment["last_deployment_config"] = req["DeploymentConfig"]
    now = ctx.now()
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.endpoints, name) is not None:
            raise ValidationException(f'Cannot create already existing endpoint "{arn}".')
        ctx.store.insert(
            conn,
            tables.endpoints,
            {
                "name_key": name.lower(),
                "name": name,
                "arn": arn,
                "config_name": current["config_name"],
                "status": "Creating",
                "failure_reason": None,
                "creation_time": now,
                "last_modified_time": now,
                "spec": {k: req[k] for k in ("DeploymentConfig",) if k in req},
                "deployment": deployment,
            },
        )
        tags.save(conn, arn, req.get("Tags", []))
    ctx.wake_reconciler()
    return {"EndpointArn": arn}


def get(ctx: ControlContext, name: str) -> dict:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.endpoints, name)
    if row is None:
        raise not_found(ctx, name)
    return row


def _images(snap: dict, variant: dict) -> list[dict]:
    model = snap["models"][variant["ModelName"]]
    containers = [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
    out = []
    for c in containers:
        image = c.get("Image", "")
        digest = hashlib.sha256(image.encode()).hexdigest()
        out.append(
            {
                "SpecifiedImage": image,
                "ResolvedImage": f"{image.split(':')[0] if '@' not in image else image.split('@')[0]}@sha256:{digest}",
                "ResolutionTime": snap["time"],
            }
        )
    return out


def _variant_summaries(ctx: ControlContext, row: dict, snap: dict, status: str | None) -> list[dict]:
    counts = ctx.running.variant_counts(row["name"])
    summaries = []
    for v in snap["config"]["ProductionVariants"]:
        healthy, desired = counts.get(v["VariantName"], (0, v.get("InitialInstanceCount", 1)))
        summary: dict[str, Any] = {
            "VariantName": v["VariantName"],
            "DeployedImages": _images(snap, v),
            "CurrentWeight": v.get("InitialVariantWeight", 1.0),
            "DesiredWeight": v.get("InitialVariantWeight", 1.0),
        }
        if "ServerlessConfig" in v:
            summary["CurrentServerlessConfig"] = v["ServerlessConfig"]
            summary["DesiredServerlessConfig"] = v["ServerlessConfig"]
        else:
            summary["CurrentInstanceCount"] = healthy
            summary["DesiredInstanceCount"] = desired
        if status:
            summary["VariantStatus"] = [{"Status": status, "StartTime": snap["time"]}]
        summaries.append(summary)
    return summaries


def describe_endpoint(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["EndpointName"])
    current = row["deployment"]["current"]
    pending = row["deployment"].get("pending")
    out: Response = {
        "EndpointName": row["name"],
        "EndpointArn": row["arn"],
        "EndpointConfigName": row["config_name"],
        "EndpointStatus": row["status"],
        "CreationTime": row["creation_time"],
        "LastModifiedTime": row["last_modified_time"],
    }
    if row["failure_reason"]:
        out["FailureReason"] = row["failure_reason"]
    if row["status"] == "Creating":
        # Until the first deployment completes, SageMaker reports it as pending.
        out["PendingDeploymentSummary"] = _pending_summary(ctx, row, current)
    else:
        out["ProductionVariants"] = _variant_summaries(ctx, row, current, None)
        if pending is not None:
            out["PendingDeploymentSummary"] = _pending_summary(ctx, row, pending)
    config = current["config"]
    if "DataCaptureConfig" in config:
        dc = config["DataCaptureConfig"]
        out["DataCaptureConfig"] = {
            "EnableCapture": dc.get("EnableCapture", True),
            "CaptureStatus": "Started" if dc.get("EnableCapture", True) else "Stopped",
            "CurrentSamplingPercentage": dc.get("InitialSamplingPercentage", 0),
            "DestinationS3Uri": dc.get("DestinationS3Uri", ""),
            **({"KmsKeyId": dc["KmsKeyId"]} if "KmsKeyId" in dc else {}),
        }
    for key in ("AsyncInferenceConfig", "ExplainerConfig", "MetricsConfig"):
        if key in config:
            out[key] = config[key]
    if "last_deployment_config" in row["deployment"]:
        out["LastDeploymentConfig"] = row["deployment"]["last_deployment_config"]
    return out


def _pending_summary(ctx: ControlContext, row: dict, snap: dict) -> dict:
    status = "Creating" if row["status"] == "Creating" else "Updating"
    variants = (
        _variant_summaries(ctx, row, snap, status)
        if status == "Creating"
        else [
            {k: v for k, v in s.items() if k not in ("CurrentInstanceCount", "CurrentWeight")}
            for s in _variant_summaries(ctx, row, snap, status)
        ]
    )
    by_name = {v["VariantName"]: v for v in snap["config"]["ProductionVariants"]}
    for s in variants:
        if "InstanceType" in by_name[s["VariantName"]]:
            s["InstanceType"] = by_name[s["VariantName"]]["InstanceType"]
    return {
        "EndpointConfigName": snap["config_name"],
        "ProductionVariants": variants,
        "StartTime": snap["time"],
    }


def list_endpoints(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.endpoints)
    rows = listing.filter_rows(rows, req, status_column="status")
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time", "Status": "status"})
    return listing.paginate(
        rows,
        req,
        "Endpoints",
        lambda r: {
            "EndpointName": r["name"],
            "EndpointArn": r["arn"],
            "CreationTime": r["creation_time"],
            "LastModifiedTime": r["last_modified_time"],
            "EndpointStatus": r["status"],
        },
    )


def update_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.endpoints, name)
        if row is None:
            raise not_found(ctx, name)
        if row["status"] in IN_PROGRESS:
            raise in_progress(ctx, name)
        if row["status"] != "InService":
            raise ValidationException(
                f'Cannot update endpoint "{row["arn"]}" in status {row["status"]}; only an InService endpoint '
                "can be updated."
            )
    pending = snapshot(ctx, req["EndpointConfigName"])
    deployment = dict(row["deployment"])
    deployment["pending"] = pending
    if "DeploymentConfig" in req:
        deployment["last_deployment_config"] = req["DeploymentConfig"]
    with ctx.store.begin() as conn:
        fresh = ctx.store.get(conn, tables.endpoints, name)
        if fresh is None:
            raise not_found(ctx, name)
        if fresh["status"] != "InService":
            raise in_progress(ctx, name)
        ctx.store.update(
            conn,
            tables.endpoints,
            name,
            {
                "status": "Updating",
                "failure_reason": None,
                "last_modified_time": ctx.now(),
                "deployment": deployment,
            },
        )
    ctx.wake_reconciler()
    return {"EndpointArn": row["arn"]}


def delete_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.endpoints, name)
        if row is None:
            raise not_found(ctx, name)
        if row["status"] in IN_PROGRESS:
            raise in_progress(ctx, name)
        if row["status"] != "Deleting":
            ctx.store.update(
                conn, tables.endpoints, name, {"status": "Deleting", "last_modified_time": ctx.now()}
            )
    ctx.wake_reconciler()
    return {}
