"""What an export writes, resolved from the server: one variant per model to serve (an endpoint's
production variants with their weights, instance types and counts, and autoscaling; or one model)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.export.fetch import FetchError, ModelSource, from_model, resolve
from modelhost.export.inspect import decide

DEFAULT_INSTANCE_TYPE = "ml.m5.large"
RUNTIME_EXTRAS = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "huggingface": "huggingface",
    "pytorch": "pytorch",
    "onnx": "onnx",
    "spacy": "spacy",
    "tensorflow": "tensorflow",
}


@dataclass(frozen=True)
class Scaling:
    """A variant's scalable target and its target-tracking policy (the first one)."""

    min_capacity: int
    max_capacity: int
    metric: str  # SageMakerVariantInvocationsPerInstance, or a customized metric's name
    target: float


@dataclass
class Variant:
    name: str  # VariantName, or the model name when a model is exported
    model: ModelSource
    runtime: str
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    weight: float = 1.0
    scaling: Scaling | None = None

    @property
    def slug(self) -> str:
        """The name as a DNS-1123 label (Kubernetes object names, compose services, directories)."""
        return dns_label(self.name)

    @property
    def extra(self) -> str | None:
        return RUNTIME_EXTRAS.get(self.runtime)


@dataclass
class Plan:
    name: str  # the endpoint or model exported
    kind: str  # "endpoint" or "model"
    variants: list[Variant]

    @property
    def slug(self) -> str:
        return dns_label(self.name)


def dns_label(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "model"


def runtime_of(source: ModelSource, runtime: str | None = None) -> str:
    if runtime:
        return runtime
    found, _, _ = decide(source.model_dir, source.image)
    if found is None:
        raise FetchError(f"cannot tell the framework of {source.label}; pass --runtime (e.g. sklearn)")
    return found


def _scaling(autoscaling: Any, endpoint: str, variant: str) -> Scaling | None:
    resource = f"endpoint/{endpoint}/variant/{variant}"
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
    target = next(iter(targets.get("ScalableTargets", [])), None)
    if target is None:
        return None
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)
    for policy in policies.get("ScalingPolicies", []):
        config = policy.get("TargetTrackingScalingPolicyConfiguration")
        if not config:
            continue
        spec = config.get("PredefinedMetricSpecification")
        metric = spec["PredefinedMetricType"] if spec else config["CustomizedMetricSpecification"]["MetricName"]
        return Scaling(target["MinCapacity"], target["MaxCapacity"], metric, float(config["TargetValue"]))
    return Scaling(target["MinCapacity"], target["MaxCapacity"], "", 0.0)


def plan_for(name: str, sm: Any, s3: Any, autoscaling: Any, work: Path, runtime: str | None = None) -> Plan:
    """An endpoint (DescribeEndpoint → its config's variants) or a model (a name, path or s3:// URI)."""
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = None
    if not name.startswith("s3://") and not Path(name.removeprefix("file://")).expanduser().exists():
        try:
            endpoint = sm.describe_endpoint(EndpointName=name)
        except ClientError:
            endpoint = None  # not an endpoint: a model, then
        except BotoCoreError as exc:
            raise FetchError(f"{name}: {exc}") from None
    if endpoint is None:
        source = resolve(name, sm, s3, work)
        return Plan(source.label, "model", [Variant(source.label, source, runtime_of(source, runtime))])
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    variants = []
    for pv in config["ProductionVariants"]:
        if "ServerlessConfig" in pv and "InitialInstanceCount" not in pv:
            count = 1
        else:
            count = int(
                live.get(pv["VariantName"], {}).get("DesiredInstanceCount") or pv.get("InitialInstanceCount", 1)
            )
        weight = float(live.get(pv["VariantName"], {}).get("CurrentWeight", pv.get("InitialVariantWeight", 1.0)))
        source = from_model(sm.describe_model(ModelName=pv["ModelName"]), s3, work)
        variants.append(
            Variant(
                pv["VariantName"],
                source,
                runtime_of(source, runtime),
                pv.get("InstanceType") or DEFAULT_INSTANCE_TYPE,
                count,
                weight,
                _scaling(autoscaling, endpoint["EndpointName"], pv["VariantName"]),
            )
        )
    return Plan(endpoint["EndpointName"], "endpoint", variants)
