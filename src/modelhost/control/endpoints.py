"""CreateEndpoint / DescribeEndpoint / ListEndpoints / UpdateEndpoint / DeleteEndpoint.

These only record desired state and return; the reconciler (hosting.reconciler) starts and
stops instances and moves the status on (Creating -> InService | Failed, Deleting -> gone).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from modelhost.control import endpoint_configs, listing, models, schedules, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ResourceLimitExceeded, ValidationException
from modelhost.resources.endpoint import (
    Deployment,
    EndpointRecord,
    EndpointStatus,
    Snapshot,
    VariantState,
    VariantView,
)
from modelhost.resources.rollout import validate_deployment_config
from modelhost.store import endpoints as rows


def not_found(ctx: ControlContext, name: str) -> ValidationException:
    return ValidationException(f'Could not find endpoint "{ctx.arn("endpoint", name)}".')


def in_progress(ctx: ControlContext, name: str) -> ValidationException:
    return ValidationException(f'Cannot update in-progress endpoint "{ctx.arn("endpoint", name)}".')


# --- the instance quota: MODELHOST_MAX_INSTANCES, over every endpoint's desired fleets

MIB = 1024 * 1024
INSTANCE_MEMORY = 512 * MIB  # what the default quota reserves per instance


def default_max_instances(cpus: int | None = None, memory: int | None = None) -> int:
    """max(4, 2 x CPUs), at most one per 512 MiB of memory (at least 1)."""
    cpus = cpus if cpus is not None else os.cpu_count() or 1
    if memory is None:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory = 0
    by_cpu = max(4, 2 * cpus)
    return max(1, min(by_cpu, memory // INSTANCE_MEMORY)) if memory > 0 else by_cpu


def max_instances(ctx: ControlContext) -> int:
    return ctx.settings.max_instances if ctx.settings.max_instances > 0 else default_max_instances()


def instances(snap: Snapshot) -> int:
    return sum(snap.desired(v).count for v in snap.all_variants)


def _in_use(record: EndpointRecord) -> int:
    """An endpoint's desired instances: the current fleets, plus a blue/green update's pending fleets."""
    if record.status in (EndpointStatus.FAILED, EndpointStatus.DELETING):
        return 0
    pending = record.deployment.pending
    return instances(record.deployment.current) + (instances(pending) if pending is not None else 0)


def check_quota(ctx: ControlContext, conn: Connection, delta: int) -> None:
    """ResourceLimitExceeded (AWS's message shape) when ``delta`` more instances pass the quota."""
    if delta <= 0:
        return
    limit = max_instances(ctx)
    used = sum(_in_use(r) for r in rows.load_all(ctx.store, conn))
    if used + delta > limit:
        raise ResourceLimitExceeded(
            f"The account-level service limit 'MODELHOST_MAX_INSTANCES for endpoint usage' is {limit} Instances, "
            f"with current utilization of {used} Instances and a request delta of {delta} Instances. Please set "
            "MODELHOST_MAX_INSTANCES on the server to increase this quota."
        )


def snapshot(ctx: ControlContext, config_name: str) -> Snapshot:
    """Freeze an endpoint config and the models it names: what the reconciler deploys."""
    config = endpoint_configs.get(ctx, config_name)
    spec = config["spec"]
    used = {v["ModelName"] for v in spec["ProductionVariants"] + spec.get("ShadowProductionVariants", [])}
    return Snapshot.freeze(
        config["name"], spec, {name: models.get(ctx, name)["spec"] for name in sorted(used)}, ctx.now()
    )


def create_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    arn = ctx.arn("endpoint", name)
    with ctx.store.begin() as conn:
        if rows.load(ctx.store, conn, name) is not None:
            raise ValidationException(f'Cannot create already existing endpoint "{arn}".')
    current = snapshot(ctx, req["EndpointConfigName"])
    now = ctx.now()
    record = EndpointRecord(
        name=name,
        arn=arn,
        config_name=current.config_name,
        status=EndpointStatus.CREATING,
        failure_reason=None,
        creation_time=now,
        last_modified_time=now,
        deployment=Deployment(current, last_deployment_config=req.get("DeploymentConfig")),
        spec={k: req[k] for k in ("DeploymentConfig",) if k in req},
    )
    with ctx.store.begin() as conn:
        if rows.load(ctx.store, conn, name) is not None:
            raise ValidationException(f'Cannot create already existing endpoint "{arn}".')
        check_quota(ctx, conn, instances(current))
        rows.insert(ctx.store, conn, record)
        tags.save(conn, arn, req.get("Tags", []))
    ctx.wake()
    return {"EndpointArn": arn}


def get(ctx: ControlContext, name: str) -> EndpointRecord:
    with ctx.store.begin() as conn:
        record = rows.load(ctx.store, conn, name)
    if record is None:
        raise not_found(ctx, name)
    return record


def _images(snap: Snapshot, variant: dict) -> list[dict]:
    model = snap.models[variant["ModelName"]]
    containers = [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
    out = []
    for c in containers:
        image = c.get("Image", "")
        digest = hashlib.sha256(image.encode()).hexdigest()
        out.append(
            {
                "SpecifiedImage": image,
                "ResolvedImage": f"{image.split(':')[0] if '@' not in image else image.split('@')[0]}@sha256:{digest}",
                "ResolutionTime": snap.time,
            }
        )
    return out


def _variant_summaries(
    snap: Snapshot, variants: list[dict], running: dict[str, VariantView], pending: bool = False
) -> list[dict]:
    summaries = []
    for v in variants:
        want = snap.desired(v)
        live = running.get(v["VariantName"])
        summary: dict[str, Any] = {"VariantName": v["VariantName"], "DeployedImages": _images(snap, v)}
        if not pending:
            summary["CurrentWeight"] = live.current_weight if live else want.weight
        summary["DesiredWeight"] = want.weight
        if "ServerlessConfig" in v:
            summary["CurrentServerlessConfig"] = v["ServerlessConfig"]
            summary["DesiredServerlessConfig"] = v["ServerlessConfig"]
        else:
            if not pending:
                summary["CurrentInstanceCount"] = live.current_count if live else 0
            summary["DesiredInstanceCount"] = want.count
        if pending and "InstanceType" in v:
            summary["InstanceType"] = v["InstanceType"]
        if live is not None and live.statuses:
            summary["VariantStatus"] = list(live.statuses)
        summaries.append(summary)
    return summaries


def describe_endpoint(ctx: ControlContext, req: Request) -> Response:
    record = get(ctx, req["EndpointName"])
    current, pending = record.deployment.current, record.deployment.pending
    out: Response = {
        "EndpointName": record.name,
        "EndpointArn": record.arn,
        "EndpointConfigName": record.config_name,
        "EndpointStatus": record.status.value,
        "CreationTime": record.creation_time,
        "LastModifiedTime": record.last_modified_time,
    }
    if record.failure_reason:
        out["FailureReason"] = record.failure_reason
    config = current.config
    if record.status is EndpointStatus.CREATING:
        # Until the first deployment completes, SageMaker reports it as pending.
        out["PendingDeploymentSummary"] = _pending_summary(ctx, record, current, creating=True)
    else:
        running = ctx.running.variant_view(record.name)
        out["ProductionVariants"] = _variant_summaries(current, current.production_variants, running)
        if current.shadow_variants:
            out["ShadowProductionVariants"] = _variant_summaries(current, current.shadow_variants, running)
        if pending is not None:
            out["PendingDeploymentSummary"] = _pending_summary(ctx, record, pending, creating=False)
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
    if record.deployment.last_deployment_config is not None:
        out["LastDeploymentConfig"] = record.deployment.last_deployment_config
    return out


def _pending_summary(ctx: ControlContext, record: EndpointRecord, snap: Snapshot, creating: bool) -> dict:
    view = ctx.running.variant_view(record.name) if creating else ctx.running.pending_view(record.name)
    default_status = "Creating" if creating else "Updating"
    variants = _variant_summaries(snap, snap.production_variants, view, pending=True)
    for s in variants:
        s.setdefault("VariantStatus", [{"Status": default_status, "StartTime": snap.time}])
    out = {"EndpointConfigName": snap.config_name, "ProductionVariants": variants, "StartTime": snap.time}
    if snap.shadow_variants:
        out["ShadowProductionVariants"] = _variant_summaries(snap, snap.shadow_variants, view, True)
    return out


def list_endpoints(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        found = [r.to_row() for r in rows.load_all(ctx.store, conn)]
    found = listing.filter_rows(found, req, status_column="status")
    found = listing.sort_rows(found, req, {"Name": "name", "CreationTime": "creation_time", "Status": "status"})
    return listing.paginate(
        found,
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


def _require_in_service(ctx: ControlContext, name: str) -> EndpointRecord:
    record = get(ctx, name)
    if record.status.in_progress:
        raise in_progress(ctx, name)
    if record.status is not EndpointStatus.IN_SERVICE:
        raise ValidationException(
            f'Cannot update endpoint "{record.arn}" in status {record.status.value}; only an InService endpoint '
            "can be updated."
        )
    return record


def _retain(current: Snapshot, pending: Snapshot, excluded: set[str]) -> Snapshot:
    """RetainAllVariantProperties: keep the running counts, weights and data capture."""
    variants = dict(pending.variants)
    for name, state in pending.variants.items():
        old = current.variants.get(name)
        if old is None:
            continue
        variants[name] = VariantState(
            old.weight if "DesiredWeight" not in excluded else state.weight,
            old.count if "DesiredInstanceCount" not in excluded else state.count,
        )
    config = dict(pending.config)
    if "DataCaptureConfig" not in excluded:
        if "DataCaptureConfig" in current.config:
            config["DataCaptureConfig"] = current.config["DataCaptureConfig"]
        else:
            config.pop("DataCaptureConfig", None)
    return replace(pending, variants=variants, config=config)


def _commit_update(ctx: ControlContext, name: str, deployment: Deployment) -> None:
    with ctx.store.begin() as conn:
        fresh = rows.load(ctx.store, conn, name)
        if fresh is None:
            raise not_found(ctx, name)
        if fresh.status is not EndpointStatus.IN_SERVICE:
            raise in_progress(ctx, name)
        # Blue/green runs the pending fleets beside the current ones; a capacity change resizes in place.
        wanted = instances(deployment.current) + (instances(deployment.pending) if deployment.pending else 0)
        check_quota(ctx, conn, wanted - _in_use(fresh))
        rows.save(
            ctx.store,
            conn,
            fresh,
            status=EndpointStatus.UPDATING,
            failure_reason=None,
            last_modified_time=ctx.now(),
            deployment=deployment,
        )
    ctx.wake()


def update_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    record = _require_in_service(ctx, name)
    deployment = record.deployment
    current = deployment.current
    pending = snapshot(ctx, req["EndpointConfigName"])
    if pending.config_name == current.config_name and not req.get("RetainAllVariantProperties"):
        raise ValidationException(
            f"The endpoint {record.arn} is already using endpoint configuration {pending.config_name}; "
            "specify a different endpoint configuration."
        )
    if req.get("RetainAllVariantProperties"):
        excluded = {p["VariantPropertyType"] for p in req.get("ExcludeRetainedVariantProperties", [])}
        pending = _retain(current, pending, excluded)
    elif req.get("ExcludeRetainedVariantProperties"):
        raise ValidationException(
            "ExcludeRetainedVariantProperties can only be specified when RetainAllVariantProperties is true."
        )
    policy = req.get("DeploymentConfig")
    if policy is None and req.get("RetainDeploymentConfig"):
        policy = deployment.last_deployment_config
    green_instances = sum(pending.desired(v).count for v in pending.production_variants)
    reason = validate_deployment_config(policy, green_instances)
    if reason is not None:
        raise ValidationException(reason)
    deployment = replace(
        deployment,
        pending=pending,
        pending_policy=policy,
        capacity_change=False,
        last_deployment_config=policy if policy is not None else deployment.last_deployment_config,
    )
    _commit_update(ctx, name, deployment)
    return {"EndpointArn": record.arn}


def update_endpoint_weights_and_capacities(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    record = _require_in_service(ctx, name)
    current = record.deployment.current
    variants = {v["VariantName"]: v for v in current.production_variants}
    unknown = [d["VariantName"] for d in req["DesiredWeightsAndCapacities"] if d["VariantName"] not in variants]
    if unknown:
        raise ValidationException(
            f'The variant(s) "[{", ".join(unknown)}]" is/are not present in the endpoint {record.arn}.'
        )
    names = [d["VariantName"] for d in req["DesiredWeightsAndCapacities"]]
    if len(set(names)) != len(names):
        raise ValidationException("DesiredWeightsAndCapacities names a variant more than once.")
    for change in req["DesiredWeightsAndCapacities"]:
        variant = change["VariantName"]
        state = current.desired(variants[variant])
        if "DesiredWeight" in change:
            state = replace(state, weight=float(change["DesiredWeight"]))
        if "DesiredInstanceCount" in change:
            if "ServerlessConfig" in variants[variant]:
                raise ValidationException(f"Variant {variant} is serverless; DesiredInstanceCount does not apply.")
            state = replace(state, count=int(change["DesiredInstanceCount"]))
        if (
            "DesiredWeight" not in change
            and "DesiredInstanceCount" not in change
            and "ServerlessUpdateConfig" not in change
        ):
            raise ValidationException(
                f"Variant {variant}: specify DesiredWeight, DesiredInstanceCount or ServerlessUpdateConfig."
            )
        current = current.with_variant(variant, state)
    _commit_update(ctx, name, replace(record.deployment, current=current, capacity_change=True))
    return {"EndpointArn": record.arn}


def delete_endpoint(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointName"]
    schedules.check_endpoint_free(ctx, name)  # Model Monitor: a monitored endpoint cannot be deleted
    with ctx.store.begin() as conn:
        record = rows.load(ctx.store, conn, name)
        if record is None:
            raise not_found(ctx, name)
        if record.status.in_progress:
            raise in_progress(ctx, name)
        if record.status is not EndpointStatus.DELETING:
            rows.save(ctx.store, conn, record, status=EndpointStatus.DELETING, last_modified_time=ctx.now())
    ctx.wake()
    return {}
