"""CreateEndpointConfig / DescribeEndpointConfig / ListEndpointConfigs / DeleteEndpointConfig."""

from __future__ import annotations

import re
import socket

from modelhost.control import listing, models, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ValidationException
from modelhost.resources import serverless as serverless_rules
from modelhost.resources.webhooks import webhook_refusal
from modelhost.store import tables

ECHOED = (
    "ProductionVariants",
    "ShadowProductionVariants",
    "DataCaptureConfig",
    "AsyncInferenceConfig",
    "ExplainerConfig",
    "KmsKeyId",
    "ExecutionRoleArn",
    "VpcConfig",
    "EnableNetworkIsolation",
    "MetricsConfig",
)
INSTANCE_FIELDS = ("InitialInstanceCount", "InstanceType")


def not_found(ctx: ControlContext, name: str) -> ValidationException:
    return ValidationException(f'Could not find endpoint configuration "{ctx.arn("endpoint-config", name)}".')


def _check_variants(ctx: ControlContext, req: Request) -> None:
    variants = req["ProductionVariants"] + req.get("ShadowProductionVariants", [])
    names = [v["VariantName"] for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationException(f"Variant names must be unique; duplicated: {', '.join(duplicates)}.")
    if req.get("ShadowProductionVariants") and (
        len(req["ProductionVariants"]) != 1 or len(req["ShadowProductionVariants"]) != 1
    ):
        raise ValidationException(
            "When ShadowProductionVariants is specified, exactly one production variant and one shadow "
            "variant are allowed."
        )
    for v in variants:
        serverless = "ServerlessConfig" in v
        if serverless and any(f in v for f in INSTANCE_FIELDS):
            raise ValidationException(
                f"Variant {v['VariantName']}: ServerlessConfig cannot be combined with InstanceType or "
                "InitialInstanceCount."
            )
        if not serverless:
            for f in INSTANCE_FIELDS:
                if f not in v:
                    raise ValidationException(
                        f"Variant {v['VariantName']}: {f} is required for instance-based variants."
                    )
        if serverless and (reason := serverless_rules.variant_refusal(v)) is not None:
            raise ValidationException(reason)
        if "ModelName" not in v:
            raise ValidationException(f"Variant {v['VariantName']}: ModelName is required.")
        models.get(ctx, v["ModelName"])  # raises 'Could not find model "arn..."'
    if any("ServerlessConfig" in v for v in variants):
        named = {v["ModelName"]: models.get(ctx, v["ModelName"])["spec"] for v in req["ProductionVariants"]}
        if (reason := serverless_rules.config_refusal(req, named)) is not None:
            raise ValidationException(reason)


SNS_ARN = re.compile(r"arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+")


def resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


def _check_async(ctx: ControlContext, req: Request) -> None:
    """AsyncInferenceConfig rules the service model does not express (hosting/asyncq.py runs it)."""
    config = req.get("AsyncInferenceConfig")
    if config is None:
        return
    output = config.get("OutputConfig")
    if not output or not output.get("S3OutputPath"):
        raise ValidationException("AsyncInferenceConfig.OutputConfig.S3OutputPath is required.")
    for key in ("S3OutputPath", "S3FailurePath"):
        uri = output.get(key)
        if uri is not None and not re.fullmatch(r"s3://[^/]+(/.*)?", uri):
            raise ValidationException(
                f"AsyncInferenceConfig.OutputConfig.{key} {uri!r} is not supported: modelhost writes to s3:// URIs."
            )
    concurrency = (config.get("ClientConfig") or {}).get("MaxConcurrentInvocationsPerInstance")
    if concurrency is not None and not 1 <= concurrency <= 1000:
        raise ValidationException("MaxConcurrentInvocationsPerInstance must be between 1 and 1000.")
    notification = output.get("NotificationConfig") or {}
    for key in ("SuccessTopic", "ErrorTopic"):
        topic = notification.get(key)
        # An http(s):// URL (a webhook receiving the same JSON) is a modelhost extension.
        if topic is not None and not (SNS_ARN.fullmatch(topic) or re.fullmatch(r"https?://[^\s/]+.*", topic)):
            raise ValidationException(
                f"AsyncInferenceConfig NotificationConfig.{key} {topic!r} must be an SNS topic ARN or an "
                "http(s):// URL."
            )
        reason = (
            webhook_refusal(topic, ctx.settings.webhook_allow, resolve) if topic and topic.startswith("http") else None
        )
        if reason is not None:
            raise ValidationException(
                f"AsyncInferenceConfig NotificationConfig.{key} {topic!r} is not allowed: {reason}."
            )
    include = notification.get("IncludeInferenceResponseIn") or []
    if len(set(include)) != len(include):
        raise ValidationException("IncludeInferenceResponseIn names a topic type more than once.")
    for kind, key in (("SUCCESS_NOTIFICATION_TOPIC", "SuccessTopic"), ("ERROR_NOTIFICATION_TOPIC", "ErrorTopic")):
        if kind in include and not notification.get(key):
            raise ValidationException(f"IncludeInferenceResponseIn contains {kind} but no {key} is configured.")
    if any("ServerlessConfig" in v for v in req["ProductionVariants"]):
        raise ValidationException("AsyncInferenceConfig cannot be combined with a serverless variant.")


def create_endpoint_config(ctx: ControlContext, req: Request) -> Response:
    _check_variants(ctx, req)
    _check_async(ctx, req)
    name = req["EndpointConfigName"]
    arn = ctx.arn("endpoint-config", name)
    spec = {k: req[k] for k in ECHOED if k in req}
    for v in spec["ProductionVariants"]:
        if "ServerlessConfig" not in v:
            v.setdefault("InitialVariantWeight", 1.0)
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.endpoint_configs, name) is not None:
            raise ValidationException(f'Cannot create already existing endpoint configuration "{arn}".')
        ctx.store.insert(
            conn,
            tables.endpoint_configs,
            {"name_key": name.lower(), "name": name, "arn": arn, "creation_time": ctx.now(), "spec": spec},
        )
        tags.save(conn, arn, req.get("Tags", []))
    return {"EndpointConfigArn": arn}


def get(ctx: ControlContext, name: str) -> dict:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.endpoint_configs, name)
    if row is None:
        raise not_found(ctx, name)
    return row


def describe_endpoint_config(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["EndpointConfigName"])
    return {
        "EndpointConfigName": row["name"],
        "EndpointConfigArn": row["arn"],
        "CreationTime": row["creation_time"],
        **row["spec"],
    }


def list_endpoint_configs(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.endpoint_configs)
    rows = listing.filter_rows(rows, req)
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time"})
    return listing.paginate(
        rows,
        req,
        "EndpointConfigs",
        lambda r: {
            "EndpointConfigName": r["name"],
            "EndpointConfigArn": r["arn"],
            "CreationTime": r["creation_time"],
        },
    )


def delete_endpoint_config(ctx: ControlContext, req: Request) -> Response:
    name = req["EndpointConfigName"]
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.endpoint_configs, name)
        if row is None:
            raise not_found(ctx, name)
        # Allowed while an endpoint uses it, as in SageMaker: the endpoint keeps its deployment snapshot.
        ctx.store.delete(conn, tables.endpoint_configs, name)
        tags.drop_all(conn, row["arn"])
    return {}
