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
from modelhost.resources.rollout import validate_deployment_config
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
        "variants": {
            v["VariantName"]: {
                "weight": float(v.get("InitialVariantWeight", 1.0)),
                "count": 1 if "ServerlessConfig" in v else int(v.get("InitialInstanceCount", 1)),
            }
            for v in spec["ProductionVariants"] + spec.get("ShadowProductionVariants", [])
        },
        "time": ctx.now(),
    }


def desired(snap: dict, variant: dict) -> dict[str, Any]:
    """The desired weight and instance count of a variant (UpdateEndpointWeightsAndCapacities and
    autoscaling change these; the config holds the initial values)."""
    state = (snap.get("variants") or {}).get(variant["VariantName"])
    if state is not None:
        return state
    count = 1 if "ServerlessConfig" in variant else int(variant.get("InitialInstanceCount", 1))
    return {"weight": float(variant.get("InitialVariantWeight", 1.0)), "count": count}


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


def _variant_summaries(
    snap: dict, variants: list[dict], running: dict[str, dict[str, Any]], pending: bool = False
) -> list[dict]:
    summaries = []
    for v in variants:
        want = desired(snap, v)
        live = running.get(v["VariantName"], {})
        summary: dict[str, Any] = {"VariantName": v["VariantName"], "DeployedImages": _images(snap, v)}
        if not pending:
            summary["CurrentWeight"] = live.get("current_weight", want["weight"])
        summary["DesiredWeight"] = want["weight"]
        if "ServerlessConfig" in v:
            summary["CurrentServerlessConfig"] = v["ServerlessConfig"]
            summary["DesiredServerlessConfig"] = v["ServerlessConfig"]
        else:
            if not pending:
                summary["CurrentInstanceCount"] = live.get("current_count", 0)
            summary["DesiredInstanceCount"] = want["count"]
        if pending and "InstanceType" in v:
            summary["InstanceType"] = v["InstanceType"]
        if live.get("statuses"):
            summary["VariantStatus"] = live["statuses"]
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
    config = current["config"]
    if row["status"] == "Creating":
        # Until the first deployment completes, SageMaker reports it as pending.
        out["PendingDeploymentSummary"] = _pending_summary(ctx, row, current, creating=True)
    else:
        running = ctx.running.variant_view(row["name"])
        out["ProductionVariants"] = _variant_summaries(current, config["ProductionVariants"], running)
        if config.get("ShadowProductionVariants"):
            out["ShadowProductionVariants"] = _variant_summaries(current, config["ShadowProductionVariants"], running)
        if pending is not None:
            out["PendingDeploymentSummary"] = _pending_summary(ctx, row, pending, creating=False)
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


def _pending_summary(ctx: ControlContext, row: dict, snap: dict, creating: bool) -> dict:
    config = snap["config"]
    view = ctx.running.variant_view(row["name"]) if creating else ctx.running.pending_view(row["name"])
    default_status = "Creating" if creating else "Updating"
    variants = _variant_summaries(snap, config["ProductionVariants"], view, pending=True)
    for s in variants:
        s.setdefault("VariantStatus", [{"Status": default_status, "StartTime": snap["time"]}])
    out = {"EndpointConfigName": snap["config_name"], "ProductionVariants": variants, "StartTime": snap["time"]}
    if config.get("ShadowProductionVariants"):
        out["ShadowProductionVariants"] = _variant_summaries(snap, config["ShadowProductionVariants"], view, True)
    return out


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


def _require_in_service(ctx: ControlContext, name: str) -> dict:
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
    return row


def _retain(current: dict, pending: dict, excluded: set[str]) -> None:
    """RetainAllVariantProperties: keep the running counts, weights and data capture."""
    for name, state in pending["variants"].items():
        old = current.get("variants", {}).get(name)
        if old is None:
            continue
        if "DesiredInstanceCount" not in excluded:
            state["count"] = old["count"]
        if "DesiredWeight" not in excluded:
            state["weight"] = old["weight"]
    if "DataCaptureConfig" not in excluded:
        if "DataCaptureConfig" in current["config"]:
            pending["config"]["DataCaptureConfig"] = current["config"]["DataCaptureConfig"]
        else:
            pending["config"].pop("DataCaptureConfig", None)


def _commit_update(ctx: ControlContext, name: str, deployment: dict) -> None:
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
            {"status": "Updating", "failure_reason": None, "last_modified_time": ctx.now(), "deployment": deployment},
        )
    ctx.wake_reconciler()


def update_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    row = _require_in_service(ctx, name)
    deployment = dict(row["deployment"])
    current = deployment["current"]
    pending = snapshot(ctx, req["EndpointConfigName"])
    if pending["config_name"] == current["config_name"] and not req.get("RetainAllVariantProperties"):
        raise ValidationException(
            f"The endpoint {row['arn']} is already using endpoint configuration {pending['config_name']}; "
            "specify a different endpoint configuration."
        )
    if req.get("RetainAllVariantProperties"):
        excluded = {p["VariantPropertyType"] for p in req.get("ExcludeRetainedVariantProperties", [])}
        _retain(current, pending, excluded)
    elif req.get("ExcludeRetainedVariantProperties"):
        raise ValidationException(
            "ExcludeRetainedVariantProperties can only be specified when RetainAllVariantProperties is true."
        )
    policy = req.get("DeploymentConfig")
    if policy is None and req.get("RetainDeploymentConfig"):
        policy = deployment.get("last_deployment_config")
    green_instances = sum(
        pending["variants"][v["VariantName"]]["count"] for v in pending["config"]["ProductionVariants"]
    )
    reason = validate_deployment_config(policy, green_instances)
    if reason is not None:
        raise ValidationException(reason)
    deployment["pending"] = pending
    deployment["pending_policy"] = policy
    deployment.pop("capacity_change", None)
    if policy is not None:
        deployment["last_deployment_config"] = policy
    _commit_update(ctx, name, deployment)
    return {"EndpointArn": row["arn"]}


def update_endpoint_weights_and_capacities(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    row = _require_in_service(ctx, name)
    deployment = dict(row["deployment"])
    current = deployment["current"]
    variants = {v["VariantName"]: v for v in current["config"]["ProductionVariants"]}
    unknown = [d["VariantName"] for d in req["DesiredWeightsAndCapacities"] if d["VariantName"] not in variants]
    if unknown:
        raise ValidationException(
            f'The variant(s) "[{", ".join(unknown)}]" is/are not present in the endpoint {row["arn"]}.'
        )
    names = [d["VariantName"] for d in req["DesiredWeightsAndCapacities"]]
    if len(set(names)) != len(names):
        raise ValidationException("DesiredWeightsAndCapacities names a variant more than once.")
    state = {n: dict(desired(current, v)) for n, v in variants.items()}
    for change in req["DesiredWeightsAndCapacities"]:
        target = state[change["VariantName"]]
        if "DesiredWeight" in change:
            target["weight"] = float(change["DesiredWeight"])
        if "DesiredInstanceCount" in change:
            if "ServerlessConfig" in variants[change["VariantName"]]:
                raise ValidationException(
                    f"Variant {change['VariantName']} is serverless; DesiredInstanceCount does not apply."
                )
            target["count"] = int(change["DesiredInstanceCount"])
        if (
            "DesiredWeight" not in change
            and "DesiredInstanceCount" not in change
            and "ServerlessUpdateConfig" not in change
        ):
            raise ValidationException(
                f"Variant {change['VariantName']}: specify DesiredWeight, DesiredInstanceCount or "
                "ServerlessUpdateConfig."
            )
    current = dict(current)
    current["variants"] = {**current.get("variants", {}), **state}
    deployment["current"] = current
    deployment["capacity_change"] = True
    _commit_update(ctx, name, deployment)
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
            ctx.store.update(conn, tables.endpoints, name, {"status": "Deleting", "last_modified_time": ctx.now()})
    ctx.wake_reconciler()
    return {}
