"""A model's containers as typed records: one container, an inference pipeline (Serial or Direct), or a
multi-model container; and CreateModel's rules for them (AWS's, checked before anything is stored).

Pure: no I/O. The control plane validates with :func:`check_model`; the backends read
:func:`model_definition` to decide what one replica is made of.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_CONTAINERS = 15  # Containers in one model (the old limit of 5 is obsolete)
SINGLE_MODEL = "SingleModel"
MULTI_MODEL = "MultiModel"


class ExecutionMode(enum.Enum):
    SERIAL = "Serial"  # container n's response is container n+1's request
    DIRECT = "Direct"  # the caller picks one container with TargetContainerHostname


class ContainerRuleViolation(ValueError):
    """A CreateModel request breaks one of AWS's rules for containers; the message is AWS-worded."""


@dataclass(frozen=True)
class ContainerDefinition:
    """One ``ContainerDefinition`` of a model (only what hosting reads)."""

    hostname: str  # ContainerHostname, or the position-based name when the model sets none
    image: str
    model_data_url: str | None
    model_data_source: Mapping[str, Any] | None
    environment: Mapping[str, str]
    mode: str = SINGLE_MODEL
    cache_enabled: bool = True  # MultiModelConfig.ModelCacheSetting (Enabled by default)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def multi_model(self) -> bool:
        return self.mode == MULTI_MODEL


@dataclass(frozen=True)
class ModelDefinition:
    containers: tuple[ContainerDefinition, ...]
    execution_mode: ExecutionMode = ExecutionMode.SERIAL

    @property
    def is_pipeline(self) -> bool:
        return len(self.containers) > 1

    @property
    def multi_model(self) -> bool:
        """The model is a multi-model endpoint's (its only container has Mode MultiModel)."""
        return len(self.containers) == 1 and self.containers[0].multi_model

    @property
    def direct(self) -> bool:
        return self.is_pipeline and self.execution_mode is ExecutionMode.DIRECT

    @property
    def hostnames(self) -> tuple[str, ...]:
        return tuple(c.hostname for c in self.containers)


def default_hostname(position: int) -> str:
    """The name of a pipeline container that sets no ContainerHostname (1-based position)."""
    return f"container-{position}"


def _container(raw: Mapping[str, Any], position: int, pipeline: bool) -> ContainerDefinition:
    cache = (raw.get("MultiModelConfig") or {}).get("ModelCacheSetting", "Enabled")
    hostname = raw.get("ContainerHostname") or (default_hostname(position) if pipeline else "primary")
    return ContainerDefinition(
        hostname=hostname,
        image=raw.get("Image", ""),
        model_data_url=raw.get("ModelDataUrl"),
        model_data_source=raw.get("ModelDataSource"),
        environment=dict(raw.get("Environment") or {}),
        mode=raw.get("Mode", SINGLE_MODEL),
        cache_enabled=cache != "Disabled",
        raw=raw,
    )


def model_definition(model: Mapping[str, Any]) -> ModelDefinition:
    """The frozen CreateModel request (PrimaryContainer or Containers) as a typed record."""
    if "PrimaryContainer" in model:
        raws: list[Mapping[str, Any]] = [model["PrimaryContainer"]]
    else:
        raws = list(model.get("Containers") or [])
    pipeline = len(raws) > 1
    mode = (model.get("InferenceExecutionConfig") or {}).get("Mode", ExecutionMode.SERIAL.value)
    return ModelDefinition(
        tuple(_container(raw, i, pipeline) for i, raw in enumerate(raws, 1)),
        ExecutionMode(mode),
    )


def check_model(req: Mapping[str, Any]) -> None:
    """CreateModel's container rules (raises ContainerRuleViolation)."""
    has_primary, has_list = "PrimaryContainer" in req, "Containers" in req
    if has_primary == has_list:
        raise ContainerRuleViolation("Exactly one of PrimaryContainer or Containers must be specified.")
    raws = [req["PrimaryContainer"]] if has_primary else list(req["Containers"])
    if not raws:
        raise ContainerRuleViolation("Containers must contain at least one ContainerDefinition.")
    if len(raws) > MAX_CONTAINERS:
        raise ContainerRuleViolation(
            f"1 validation error detected: Value at 'containers' failed to satisfy constraint: Member must have "
            f"length less than or equal to {MAX_CONTAINERS}"
        )
    mode = (req.get("InferenceExecutionConfig") or {}).get("Mode", ExecutionMode.SERIAL.value)
    if has_primary and "InferenceExecutionConfig" in req:
        raise ContainerRuleViolation("InferenceExecutionConfig can only be specified for a model with Containers.")
    hostnames = [c.get("ContainerHostname") for c in raws]
    named = [h for h in hostnames if h]
    if has_list:
        if named and len(named) != len(hostnames):
            raise ContainerRuleViolation(
                "ContainerHostname must be specified for every container in Containers, or for none of them."
            )
        if mode == ExecutionMode.DIRECT.value and len(named) != len(hostnames):
            raise ContainerRuleViolation(
                "ContainerHostname must be specified for every container when InferenceExecutionConfig.Mode is Direct."
            )
        duplicates = sorted({h for h in named if named.count(h) > 1})
        if duplicates:
            raise ContainerRuleViolation(
                f"ContainerHostname values must be unique within a model; duplicated: {', '.join(duplicates)}."
            )
    multi = [c for c in raws if c.get("Mode") == MULTI_MODEL]
    for c in raws:
        if c.get("MultiModelConfig") and c.get("Mode") != MULTI_MODEL:
            raise ContainerRuleViolation("MultiModelConfig can only be specified for a container with Mode MultiModel.")
        if c.get("Mode") == MULTI_MODEL and c.get("ModelDataSource"):
            raise ContainerRuleViolation(
                "ModelDataSource is not supported for a container with Mode MultiModel; use ModelDataUrl with an S3 "
                "prefix."
            )
        if c.get("Mode") == MULTI_MODEL and not c.get("ModelDataUrl"):
            raise ContainerRuleViolation(
                "ModelDataUrl (an S3 prefix) is required for a container with Mode MultiModel."
            )
    if len(multi) > 1:
        raise ContainerRuleViolation("At most one container of an inference pipeline can have Mode MultiModel.")
