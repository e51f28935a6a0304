"""Application Auto Scaling for SageMaker variants (X-Amz-Target: AnyScaleFrontendService.*).

A scalable target is ``endpoint/<endpoint>/variant/<variant>`` with the dimension
``sagemaker:variant:DesiredInstanceCount``. Policies are target tracking on
``SageMakerVariantInvocationsPerInstance`` or on a customized metric named after our own metrics
(see controllers/autoscaler.py). Scaling itself goes through UpdateEndpointWeightsAndCapacities.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from sqlalchemy import Connection, and_, delete, select

from modelhost.control.context import ControlContext, Request, Response
from modelhost.control.operations import Operation
from modelhost.errors import ObjectNotFoundException, ValidationException
from modelhost.store import endpoints as endpoint_rows
from modelhost.store import tables

DIMENSION = "sagemaker:variant:DesiredInstanceCount"
RESOURCE = re.compile(r"endpoint/(?P<endpoint>[^/]+)/variant/(?P<variant>[^/]+)")
PREDEFINED = "SageMakerVariantInvocationsPerInstance"
# Metrics a CustomizedMetricSpecification may name (ours; see controllers/autoscaler.py).
CUSTOM_METRICS = (
    "InvocationsPerInstance",
    "Invocations",
    "ModelLatency",
    "Invocation5XXErrors",
    "Invocation4XXErrors",
    # asynchronous inference (hosting/asyncq.py): queued plus in-flight requests
    "ApproximateBacklogSizePerInstance",
    "ApproximateBacklogSize",
)


def _check_target_ref(req: Request) -> tuple[str, str]:
    if req["ServiceNamespace"] != "sagemaker":
        raise ValidationException(
            f"Unsupported service namespace {req['ServiceNamespace']}; modelhost scales sagemaker."
        )
    if req["ScalableDimension"] != DIMENSION:
        raise ValidationException(
            f"Unsupported scalable dimension {req['ScalableDimension']} for service namespace sagemaker; "
            f"use {DIMENSION}."
        )
    m = RESOURCE.fullmatch(req["ResourceId"])
    if m is None:
        raise ValidationException(
            f"Unsupported resource ID {req['ResourceId']}; expected endpoint/<endpoint-name>/variant/<variant-name>."
        )
    return m["endpoint"], m["variant"]


def decode_row(row: Any) -> dict:
    out = dict(row._mapping)
    out["spec"] = json.loads(out["spec"])
    return out


def _target(conn: Connection, resource_id: str) -> dict | None:
    t = tables.scalable_targets
    row = conn.execute(select(t).where(and_(t.c.resource_id == resource_id, t.c.dimension == DIMENSION))).first()
    return decode_row(row) if row is not None else None


def _no_target(req: Request) -> ObjectNotFoundException:
    return ObjectNotFoundException(
        f"No scalable target registered for service namespace: {req['ServiceNamespace']}, resource ID: "
        f"{req['ResourceId']}, scalable dimension: {req['ScalableDimension']}"
    )


def register_scalable_target(ctx: ControlContext, req: Request) -> Response:
    endpoint, variant = _check_target_ref(req)
    with ctx.store.begin() as conn:
        record = endpoint_rows.load(ctx.store, conn, endpoint)
    if record is None:
        raise ValidationException(f"The endpoint {endpoint} does not exist.")
    names = {v["VariantName"] for v in record.deployment.current.production_variants}
    if variant not in names:
        raise ValidationException(f"The variant {variant} does not exist in endpoint {endpoint}.")
    arn = (
        f"arn:aws:application-autoscaling:{ctx.settings.region}:{ctx.settings.account_id}:scalable-target/"
        f"{uuid.uuid5(uuid.NAMESPACE_URL, req['ResourceId']).hex}"
    )
    with ctx.store.begin() as conn:
        existing = _target(conn, req["ResourceId"])
        spec = dict(existing["spec"]) if existing else {}
        for key in ("MinCapacity", "MaxCapacity", "RoleARN", "SuspendedState"):
            if key in req:
                spec[key] = req[key]
        if existing is None and ("MinCapacity" not in req or "MaxCapacity" not in req):
            raise ValidationException("MinCapacity and MaxCapacity are required to register a new scalable target.")
        if spec["MinCapacity"] > spec["MaxCapacity"]:
            raise ValidationException(
                f"Minimum capacity {spec['MinCapacity']} cannot be greater than maximum capacity {spec['MaxCapacity']}."
            )
        spec.setdefault(
            "RoleARN",
            f"arn:aws:iam::{ctx.settings.account_id}:role/aws-service-role/sagemaker.application-autoscaling."
            "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
        )
        t = tables.scalable_targets
        if existing is None:
            conn.execute(
                t.insert().values(
                    resource_id=req["ResourceId"],
                    dimension=DIMENSION,
                    arn=arn,
                    creation_time=ctx.now(),
                    spec=json.dumps(spec),
                )
            )
        else:
            conn.execute(
                t.update()
                .where(and_(t.c.resource_id == req["ResourceId"], t.c.dimension == DIMENSION))
                .values(spec=json.dumps(spec))
            )
    return {"ScalableTargetARN": existing["arn"] if existing else arn}


def describe_scalable_targets(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = [decode_row(r) for r in conn.execute(select(tables.scalable_targets))]
    wanted = set(req.get("ResourceIds") or [])
    items = [
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": r["resource_id"],
            "ScalableDimension": r["dimension"],
            "MinCapacity": r["spec"]["MinCapacity"],
            "MaxCapacity": r["spec"]["MaxCapacity"],
            "RoleARN": r["spec"]["RoleARN"],
            "CreationTime": r["creation_time"],
            "SuspendedState": r["spec"].get(
                "SuspendedState",
                {
                    "DynamicScalingInSuspended": False,
                    "DynamicScalingOutSuspended": False,
                    "ScheduledScalingSuspended": False,
                },
            ),
            "ScalableTargetARN": r["arn"],
        }
        for r in sorted(rows, key=lambda r: r["creation_time"])
        if req["ServiceNamespace"] == "sagemaker"
        and (not wanted or r["resource_id"] in wanted)
        and req.get("ScalableDimension", r["dimension"]) == r["dimension"]
    ]
    return _page(items, req, "ScalableTargets")


def _page(items: list[dict], req: Request, key: str) -> Response:
    try:
        start = int(req.get("NextToken") or 0)
    except ValueError:
        raise ValidationException(f"Invalid NextToken: {req['NextToken']}") from None
    size = int(req.get("MaxResults", 50))
    out: Response = {key: items[start : start + size]}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out


def deregister_scalable_target(ctx: ControlContext, req: Request) -> Response:
    _check_target_ref(req)
    with ctx.store.begin() as conn:
        if _target(conn, req["ResourceId"]) is None:
            raise _no_target(req)
        for table in (tables.scalable_targets, tables.scaling_policies):
            conn.execute(
                delete(table).where(and_(table.c.resource_id == req["ResourceId"], table.c.dimension == DIMENSION))
            )
    return {}


def _check_policy(req: Request) -> dict:
    if req.get("PolicyType", "StepScaling") != "TargetTrackingScaling":
        raise ValidationException("modelhost supports PolicyType TargetTrackingScaling only.")
    config = req.get("TargetTrackingScalingPolicyConfiguration")
    if config is None:
        raise ValidationException(
            "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy."
        )
    predefined = config.get("PredefinedMetricSpecification")
    custom = config.get("CustomizedMetricSpecification")
    if (predefined is None) == (custom is None):
        raise ValidationException(
            "Exactly one of PredefinedMetricSpecification or CustomizedMetricSpecification must be specified."
        )
    if predefined is not None and predefined["PredefinedMetricType"] != PREDEFINED:
        raise ValidationException(
            f"Unsupported PredefinedMetricType {predefined['PredefinedMetricType']} for SageMaker; use {PREDEFINED}."
        )
    if custom is not None and custom.get("MetricName") not in CUSTOM_METRICS:
        raise ValidationException(
            f"Unsupported CustomizedMetricSpecification.MetricName {custom.get('MetricName')!r}; modelhost "
            f"evaluates its own metrics: {', '.join(CUSTOM_METRICS)}."
        )
    if config["TargetValue"] <= 0:
        raise ValidationException("TargetValue must be greater than 0.")
    return config


def put_scaling_policy(ctx: ControlContext, req: Request) -> Response:
    _check_target_ref(req)
    with ctx.store.begin() as conn:
        if _target(conn, req["ResourceId"]) is None:
            raise _no_target(req)
    config = _check_policy(req)
    t = tables.scaling_policies
    name, resource_id = req["PolicyName"], req["ResourceId"]
    arn = (
        f"arn:aws:autoscaling:{ctx.settings.region}:{ctx.settings.account_id}:scalingPolicy:"
        f"{uuid.uuid5(uuid.NAMESPACE_URL, resource_id).hex}:resource/sagemaker/{resource_id}:policyName/{name}"
    )
    alarms = [
        {
            "AlarmName": f"TargetTracking-{resource_id}-Alarm{kind}-{uuid.uuid5(uuid.NAMESPACE_URL, arn + kind)}",
            "AlarmARN": f"arn:aws:cloudwatch:{ctx.settings.region}:{ctx.settings.account_id}:alarm:TargetTracking-"
            f"{resource_id}-Alarm{kind}",
        }
        for kind in ("High", "Low")
    ]
    spec = {"PolicyType": "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": config, "Alarms": alarms}
    with ctx.store.begin() as conn:
        if _target(conn, resource_id) is None:
            raise _no_target(req)
        where = and_(t.c.resource_id == resource_id, t.c.dimension == DIMENSION, t.c.name == name)
        if conn.execute(select(t.c.name).where(where)).first() is None:
            conn.execute(
                t.insert().values(
                    resource_id=resource_id,
                    dimension=DIMENSION,
                    name=name,
                    arn=arn,
                    creation_time=ctx.now(),
                    spec=json.dumps(spec),
                )
            )
        else:
            conn.execute(t.update().where(where).values(spec=json.dumps(spec)))
    return {"PolicyARN": arn, "Alarms": alarms}


def describe_scaling_policies(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = [decode_row(r) for r in conn.execute(select(tables.scaling_policies))]
    names = set(req.get("PolicyNames") or [])
    items = [
        {
            "PolicyARN": r["arn"],
            "PolicyName": r["name"],
            "ServiceNamespace": "sagemaker",
            "ResourceId": r["resource_id"],
            "ScalableDimension": r["dimension"],
            "CreationTime": r["creation_time"],
            **r["spec"],
        }
        for r in sorted(rows, key=lambda r: r["creation_time"])
        if (not names or r["name"] in names)
        and req.get("ResourceId", r["resource_id"]) == r["resource_id"]
        and req.get("ScalableDimension", r["dimension"]) == r["dimension"]
    ]
    return _page(items, req, "ScalingPolicies")


def delete_scaling_policy(ctx: ControlContext, req: Request) -> Response:
    _check_target_ref(req)
    t = tables.scaling_policies
    with ctx.store.begin() as conn:
        where = and_(t.c.resource_id == req["ResourceId"], t.c.dimension == DIMENSION, t.c.name == req["PolicyName"])
        if conn.execute(select(t.c.name).where(where)).first() is None:
            raise ObjectNotFoundException(
                f"No scaling policy found for service namespace: sagemaker, resource ID: {req['ResourceId']}, "
                f"scalable dimension: {req['ScalableDimension']}, policy name: {req['PolicyName']}"
            )
        conn.execute(delete(t).where(where))
    return {}


def record_activity(ctx: ControlContext, resource_id: str, activity: dict) -> None:
    with ctx.store.begin() as conn:
        conn.execute(
            tables.scaling_activities.insert().values(
                activity_id=activity["ActivityId"],
                resource_id=resource_id,
                dimension=DIMENSION,
                start_time=activity["StartTime"],
                spec=json.dumps(activity),
            )
        )


def describe_scaling_activities(ctx: ControlContext, req: Request) -> Response:
    t = tables.scaling_activities
    query = select(t).order_by(t.c.start_time.desc())
    if "ResourceId" in req:
        query = query.where(t.c.resource_id == req["ResourceId"])
    with ctx.store.begin() as conn:
        items = [decode_row(r)["spec"] for r in conn.execute(query)]
    if not req.get("IncludeNotScaledActivities"):
        items = [a for a in items if a.get("StatusCode") != "NotScaled"]
    return _page(items, req, "ScalingActivities")


OPERATIONS: dict[str, Operation] = {
    "RegisterScalableTarget": register_scalable_target,
    "DescribeScalableTargets": describe_scalable_targets,
    "DeregisterScalableTarget": deregister_scalable_target,
    "PutScalingPolicy": put_scaling_policy,
    "DescribeScalingPolicies": describe_scaling_policies,
    "DeleteScalingPolicy": delete_scaling_policy,
    "DescribeScalingActivities": describe_scaling_activities,
}
