"""What a request may target inside a variant: a model of a multi-model endpoint (TargetModel) or one
container of a Direct inference pipeline (TargetContainerHostname). The router checks these before a
request reaches an instance, so the caller gets SageMaker's ValidationError instead of a model error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Histogram

from modelhost.hosting.errors import (
    TargetContainerNotSupported,
    TargetContainerRequired,
    TargetContainerUnknown,
    TargetModelNotSupported,
    TargetModelRequired,
)
from modelhost.hosting.metrics import MICROSECOND_BUCKETS, REGISTRY
from modelhost.resources.containers import ModelDefinition

TARGET_MODEL = b"x-amzn-sagemaker-target-model"
TARGET_CONTAINER = b"x-amzn-sagemaker-target-container-hostname"

CONTAINER_LATENCY = Histogram(
    "modelhost_container_model_latency_microseconds",
    "Time each container of an inference pipeline took to answer (ModelLatency per ContainerName)",
    ("endpoint", "variant", "container"),
    buckets=MICROSECOND_BUCKETS,
    registry=REGISTRY,
)


@dataclass(frozen=True)
class VariantTargets:
    """How a variant's model is addressed (read once per request, built once per route)."""

    multi_model: bool = False
    pipeline: bool = False
    direct_hostnames: tuple[str, ...] = ()  # non-empty for a Direct pipeline

    @classmethod
    def of(cls, definition: ModelDefinition) -> VariantTargets:
        return cls(
            multi_model=definition.multi_model,
            pipeline=definition.is_pipeline,
            direct_hostnames=definition.hostnames if definition.direct else (),
        )

    @property
    def plain(self) -> bool:
        """A single-model, single-container variant: nothing to check or record beyond the default."""
        return not (self.multi_model or self.pipeline)


PLAIN = VariantTargets()


def find_targets(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(TargetModel, TargetContainerHostname) of the forwarded headers."""
    model = container = None
    for name, value in headers:
        if name == TARGET_MODEL:
            model = value.decode("latin-1")
        elif name == TARGET_CONTAINER:
            container = value.decode("latin-1")
    return model, container


def check_targets(endpoint: str, targets: VariantTargets, model: str | None, container: str | None) -> None:
    """Refuse a request whose target headers do not fit the variant's model."""
    if model is not None and not targets.multi_model:
        raise TargetModelNotSupported(endpoint)
    if model is None and targets.multi_model:
        raise TargetModelRequired(endpoint)
    if targets.direct_hostnames:
        if container is None:
            raise TargetContainerRequired(endpoint)
        if container not in targets.direct_hostnames:
            raise TargetContainerUnknown(endpoint, container, targets.direct_hostnames)
    elif container is not None:
        raise TargetContainerNotSupported(endpoint)


def observe_containers(endpoint: str, variant: str, latencies: Sequence[tuple[str, float]]) -> None:
    for host, us in latencies:
        CONTAINER_LATENCY.labels(endpoint, variant, host).observe(us)
