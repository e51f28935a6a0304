"""An endpoint's desired state as typed records, and the one place they are (de)serialised.

The endpoints table keeps, per endpoint, a *deployment*: the snapshot of the endpoint config and
models it runs (``current``), frozen when the endpoint was created or updated so that deleting a
config or model never breaks a running endpoint or a restart, plus the snapshot being rolled out
by UpdateEndpoint (``pending``) with its deployment policy. The records are frozen: a change is a
new record (``dataclasses.replace``), written back whole.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field, replace
from typing import Any


class EndpointStatus(enum.StrEnum):
    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    IN_SERVICE = "InService"
    OUT_OF_SERVICE = "OutOfService"
    DELETING = "Deleting"
    FAILED = "Failed"

    @property
    def in_progress(self) -> bool:
        """A change is being applied: UpdateEndpoint and DeleteEndpoint are refused."""
        return self in _IN_PROGRESS

    @property
    def restorable(self) -> bool:
        """The current snapshot's fleets must be running (after a restart they are started again)."""
        return self in _RESTORABLE


_IN_PROGRESS = frozenset(
    {EndpointStatus.CREATING, EndpointStatus.UPDATING, EndpointStatus.SYSTEM_UPDATING, EndpointStatus.ROLLING_BACK}
)
_RESTORABLE = frozenset({EndpointStatus.IN_SERVICE, EndpointStatus.UPDATING, EndpointStatus.ROLLING_BACK})


@dataclass(frozen=True)
class VariantState:
    """A variant's desired weight and instance count (UpdateEndpointWeightsAndCapacities and the
    autoscaler change these; the endpoint config keeps the initial values)."""

    weight: float
    count: int

    @classmethod
    def initial(cls, variant: dict[str, Any]) -> VariantState:
        count = 1 if "ServerlessConfig" in variant else int(variant.get("InitialInstanceCount", 1))
        return cls(float(variant.get("InitialVariantWeight", 1.0)), count)


@dataclass(frozen=True)
class Snapshot:
    """An endpoint config and the models it names, as CreateEndpointConfig / CreateModel received them."""

    config_name: str
    config: dict[str, Any]
    models: dict[str, dict[str, Any]]
    variants: dict[str, VariantState]
    time: float

    @classmethod
    def freeze(
        cls, config_name: str, config: dict[str, Any], models: dict[str, dict[str, Any]], now: float
    ) -> Snapshot:
        config = copy.deepcopy(config)
        variants = config["ProductionVariants"] + config.get("ShadowProductionVariants", [])
        return cls(
            config_name,
            config,
            copy.deepcopy(models),
            {v["VariantName"]: VariantState.initial(v) for v in variants},
            now,
        )

    @property
    def production_variants(self) -> list[dict[str, Any]]:
        return list(self.config["ProductionVariants"])

    @property
    def shadow_variants(self) -> list[dict[str, Any]]:
        return list(self.config.get("ShadowProductionVariants") or [])

    @property
    def all_variants(self) -> list[dict[str, Any]]:
        return self.production_variants + self.shadow_variants

    def desired(self, variant: dict[str, Any]) -> VariantState:
        return self.variants.get(variant["VariantName"]) or VariantState.initial(variant)

    def with_variant(self, name: str, state: VariantState) -> Snapshot:
        return replace(self, variants={**self.variants, name: state})

    def to_json(self) -> dict[str, Any]:
        return {
            "config_name": self.config_name,
            "config": self.config,
            "models": self.models,
            "variants": {n: {"weight": s.weight, "count": s.count} for n, s in self.variants.items()},
            "time": self.time,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            data["config_name"],
            data["config"],
            data["models"],
            {n: VariantState(float(s["weight"]), int(s["count"])) for n, s in (data.get("variants") or {}).items()},
            float(data["time"]),
        )


@dataclass(frozen=True)
class Deployment:
    current: Snapshot
    pending: Snapshot | None = None  # the config UpdateEndpoint is rolling out (blue/green)
    pending_policy: dict[str, Any] | None = None  # its DeploymentConfig
    capacity_change: bool = False  # current.variants changed: scale in place
    last_deployment_config: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "current": self.current.to_json(),
            "pending": self.pending.to_json() if self.pending else None,
        }
        if self.pending_policy is not None:
            out["pending_policy"] = self.pending_policy
        if self.capacity_change:
            out["capacity_change"] = True
        if self.last_deployment_config is not None:
            out["last_deployment_config"] = self.last_deployment_config
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        pending = data.get("pending")
        return cls(
            Snapshot.from_json(data["current"]),
            Snapshot.from_json(pending) if pending else None,
            data.get("pending_policy"),
            bool(data.get("capacity_change")),
            data.get("last_deployment_config"),
        )


@dataclass(frozen=True)
class VariantView:
    """What runs for one variant now, as DescribeEndpoint shows it."""

    current_weight: float
    current_count: int
    statuses: tuple[dict[str, Any], ...] = ()  # VariantStatus entries: {"Status", "StatusMessage"?, "StartTime"}


@dataclass(frozen=True)
class EndpointRecord:
    """One row of the endpoints table."""

    name: str
    arn: str
    config_name: str
    status: EndpointStatus
    failure_reason: str | None
    creation_time: float
    last_modified_time: float
    deployment: Deployment
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name.lower()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EndpointRecord:
        return cls(
            row["name"],
            row["arn"],
            row["config_name"],
            EndpointStatus(row["status"]),
            row.get("failure_reason"),
            float(row["creation_time"]),
            float(row["last_modified_time"]),
            Deployment.from_json(row["deployment"]),
            row.get("spec") or {},
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "name_key": self.key,
            "name": self.name,
            "arn": self.arn,
            "config_name": self.config_name,
            "status": self.status.value,
            "failure_reason": self.failure_reason,
            "creation_time": self.creation_time,
            "last_modified_time": self.last_modified_time,
            "spec": self.spec,
            "deployment": self.deployment.to_json(),
        }
