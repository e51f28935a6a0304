"""Serverless endpoints: the ServerlessConfig record, SageMaker's limits and the scaling decision.

Pure policy, no I/O: control/ validates configs with it, hosting/serverless/ and controllers/ act on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_CONCURRENCY = 200
MAX_PAYLOAD = 4 * 1024 * 1024  # serverless InvokeEndpoint request limit (4 MB)
INVOCATION_TIMEOUT = 60.0  # seconds: /invocations on serverless times out at 60 s
COLD_START_LIMIT = 180.0  # seconds: the container must pass /ping within 3 minutes
DEFAULT_IDLE_SECONDS = 300.0


@dataclass(frozen=True)
class ServerlessConfig:
    """One serverless variant's limits (or a Lambda function's: its memory and concurrency)."""

    memory_mb: int
    max_concurrency: int
    provisioned: int = 0

    @classmethod
    def from_variant(cls, spec: dict[str, Any]) -> ServerlessConfig:
        return cls(
            int(spec.get("MemorySizeInMB", 1024)),
            int(spec.get("MaxConcurrency", 1)),
            int(spec.get("ProvisionedConcurrency", 0) or 0),
        )


def variant_refusal(variant: dict[str, Any]) -> str | None:
    """Why a variant's ServerlessConfig is invalid (SageMaker's words), or None."""
    name = variant.get("VariantName", "")
    sc = variant.get("ServerlessConfig") or {}
    memory = sc.get("MemorySizeInMB")
    concurrency = sc.get("MaxConcurrency")
    if memory is None or concurrency is None:
        return f"Variant {name}: ServerlessConfig requires MemorySizeInMB and MaxConcurrency."
    if memory not in MEMORY_SIZES:
        return (
            f"Value '{memory}' at 'productionVariants.{name}.serverlessConfig.memorySizeInMB' failed to satisfy "
            "constraint: Member must be one of 1024, 2048, 3072, 4096, 5120, 6144 (MB)."
        )
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        return (
            f"Value '{concurrency}' at 'productionVariants.{name}.serverlessConfig.maxConcurrency' failed to "
            f"satisfy constraint: Member must have value between 1 and {MAX_CONCURRENCY}."
        )
    provisioned = sc.get("ProvisionedConcurrency")
    if provisioned is not None and not 1 <= provisioned <= concurrency:
        return (
            f"Variant {name}: ProvisionedConcurrency ({provisioned}) must be between 1 and MaxConcurrency "
            f"({concurrency})."
        )
    return None


def config_refusal(config: dict[str, Any], models: dict[str, dict[str, Any]]) -> str | None:
    """What a serverless endpoint config may not have (the features SageMaker serverless lacks)."""
    variants = config.get("ProductionVariants") or []
    if not any("ServerlessConfig" in v for v in variants):
        return None
    if len(variants) > 1 or config.get("ShadowProductionVariants"):
        return "Serverless endpoints support only one production variant (no further or shadow variants)."
    if config.get("DataCaptureConfig"):
        return "DataCaptureConfig is not supported for serverless endpoints."
    if config.get("AsyncInferenceConfig"):
        return "AsyncInferenceConfig cannot be combined with a serverless variant."
    model = models.get(variants[0].get("ModelName", ""))
    if model is not None:
        containers = model.get("Containers") or []
        if len(containers) > 1:
            return "Inference pipelines (models with several containers) are not supported for serverless endpoints."
        container = model.get("PrimaryContainer") or (containers[0] if containers else {})
        if container.get("Mode") == "MultiModel":
            return "Multi-model endpoints (Mode MultiModel) are not supported for serverless endpoints."
    return None


@dataclass(frozen=True)
class FleetLoad:
    """What a serverless fleet looks like now, for the scaling decision."""

    size: int  # instances running or starting
    in_flight: int  # admitted requests, waiting or running
    idle_for: float  # seconds since the last request finished (or arrived)
    provisioned: int


def scale_in_target(load: FleetLoad, idle_seconds: float) -> int | None:
    """The size to scale in to, or None to leave the fleet as it is: back to the provisioned count
    once nothing has been asked for idle_seconds (never below it)."""
    if load.in_flight or load.size <= load.provisioned or load.idle_for < idle_seconds:
        return None
    return load.provisioned


def wants_instance(waiting: int, idle_instances: int, starting: bool, size: int, max_concurrency: int) -> bool:
    """Scale out by one: requests are waiting that no idle instance takes, and there is room. One
    start at a time, so requests arriving during a cold start share it (single flight)."""
    return not starting and waiting > idle_instances and size < max_concurrency
