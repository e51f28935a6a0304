"""What the leading front door publishes in the database so that every other front door can route.

Several front doors (``serve --workers N``, or servers on several machines) share one metadata
database; one of them leads and runs the fleets. It writes each endpoint's live route as a
``PublishedRoute`` (the same tree as the router's ``EndpointRoute``: variants by weight, shadow,
blue/green green side) where every fleet is named by a ``FleetLocator`` — the backend's address of
its replicas (the local backend: the instances' unix sockets; Ray: the Serve application). The
other front doors rebuild their routing table from these rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ReplicaAddress:
    name: str  # "<variant>/<index>" as in the leader's logs
    address: str  # a unix socket path (local) or a Serve application name (ray)
    healthy: bool = True


@dataclass(frozen=True)
class FleetLocator:
    """Where a fleet's replicas are reached; ``kind`` names the backend that can attach to it."""

    kind: str  # "local" | "ray" | "" (not reachable from another front door: answered as no capacity)
    replicas: tuple[ReplicaAddress, ...] = ()

    @classmethod
    def of(cls, data: dict[str, Any]) -> FleetLocator:
        return cls(data["kind"], tuple(ReplicaAddress(**r) for r in data.get("replicas", ())))


@dataclass(frozen=True)
class PublishedVariant:
    name: str
    weight: float
    timeout: float
    log_stream_arn: str
    locator: FleetLocator
    multi_model: bool = False
    pipeline: bool = False
    direct_hostnames: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: dict[str, Any]) -> PublishedVariant:
        return cls(
            **{
                **data,
                "locator": FleetLocator.of(data["locator"]),
                "direct_hostnames": tuple(data.get("direct_hostnames", ())),
            }
        )


@dataclass(frozen=True)
class PublishedRoute:
    endpoint: str
    variants: tuple[PublishedVariant, ...]
    shadow: PublishedVariant | None = None
    shadow_share: float = 0.0
    green: PublishedRoute | None = None
    green_share: float = 0.0
    config_name: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def of(cls, data: dict[str, Any]) -> PublishedRoute:
        return cls(
            endpoint=data["endpoint"],
            variants=tuple(PublishedVariant.of(v) for v in data["variants"]),
            shadow=PublishedVariant.of(data["shadow"]) if data.get("shadow") else None,
            shadow_share=data.get("shadow_share", 0.0),
            green=cls.of(data["green"]) if data.get("green") else None,
            green_share=data.get("green_share", 0.0),
            config_name=data.get("config_name", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> PublishedRoute:
        return cls.of(json.loads(text))
