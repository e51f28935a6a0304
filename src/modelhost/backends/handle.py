"""The interface every backend implements: a fleet of replicas of one variant (or job).

The data plane (hosting/) and the control loops (controllers/) only ever talk to a backend through
these types, so a Ray backend can implement them next and the control logic is unit-testable
with a fake. A *replica* is one running copy of a model that honours the container contract
(``GET /ping``, ``POST /invocations``); the local backend's replicas are processes on this machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from modelhost.backends.multimodel import MultiModelEvents
from modelhost.resources.serverless import ServerlessConfig
from modelhost.resources.stats import FleetStats
from modelhost.store.logs import EndpointLog


class DeploymentFailed(Exception):
    """The model cannot run (unsupported image, bad artifact, ...); the message is meant for FailureReason."""


class ReplicaFailed(Exception):
    """A replica could not start or pass its health check; the message is meant for FailureReason."""


class ReplicaUnreachable(Exception):
    """Nothing reached the replica (it is restarting): the request may safely go elsewhere."""


class ReplicaLost(Exception):
    """The replica went away mid-request: the request may or may not have run."""


class ReplicaTimeout(Exception):
    """The replica did not answer within the request's timeout (its model may be hung)."""


@dataclass(frozen=True)
class FleetRequest:
    """What a backend needs to run copies of one model."""

    owner: str  # the endpoint or job whose log the replicas write to
    variant: str
    model: dict[str, Any]  # the frozen CreateModel request (PrimaryContainer / Containers, ...)
    count: int
    log: EndpointLog
    label: str  # prefixes failure reasons, e.g. "Variant AllTraffic"
    extra_env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float | None = None
    download_timeout: float = 3600.0
    volume_size_gb: int | None = None  # the variant's VolumeSizeInGB (bounds extracted model data)
    # The variant's InstanceType: a multi-model instance's memory budget; the Ray backend sizes replicas from it.
    instance_type: str = ""
    events: MultiModelEvents | None = None  # where a multi-model fleet reports loads, hits and evictions
    # Serverless (endpoint variant or Lambda function): instances come and go with demand, start from
    # a pre-imported template where the backend has one, and are held to the memory size.
    serverless: ServerlessConfig | None = None


@dataclass
class ReplicaResponse:
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


class StreamedReply(Protocol):
    """A response whose body is read as it arrives (async inference, large payloads); reading it
    raises ReplicaLost if the replica goes away meanwhile."""

    status: int
    headers: dict[bytes, bytes]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read_all(self, limit: int) -> bytes: ...

    def close(self) -> None: ...


class Replica(Protocol):
    name: str  # "<variant>/<index>", used in log lines
    outstanding: int  # requests in flight (the router's least-outstanding policy reads it)

    @property
    def available(self) -> bool:
        """Healthy and not leaving the fleet: may take a new request."""
        ...


R = TypeVar("R", bound=Replica)


def least_outstanding(replicas: Iterable[R], usable: Callable[[R], bool]) -> R | None:
    """The usable replica with the fewest requests in flight (the first of equals), or None."""
    best: R | None = None
    for replica in replicas:
        if usable(replica) and (best is None or replica.outstanding < best.outstanding):
            best = replica
    return best


class FleetHandle(Protocol):
    variant: str
    desired: int  # the instance count the fleet is kept at
    stats: FleetStats  # counters read by rollback alarms and the autoscaler
    log: EndpointLog
    crash_loops: dict[str, str]  # replica name -> why it keeps failing (shown as a VariantStatus)

    @property
    def size(self) -> int:
        """Replicas in the fleet, healthy or not."""
        ...

    @property
    def healthy_count(self) -> int: ...

    def replicas(self) -> Sequence[Replica]:
        """The fleet's replicas now (the async dispatcher spreads work over the available ones)."""
        ...

    async def start(self) -> None:
        """Start every replica and wait until all are healthy; on failure stop them all and raise ReplicaFailed."""
        ...

    async def scale_to(self, count: int, drain_timeout: float) -> None:
        """New replicas join only once healthy (ReplicaFailed leaves the fleet as it was); removed ones
        leave the rotation at once, finish what they have in flight, then stop."""
        ...

    def acquire_now(self) -> Replica | None:
        """The available replica with the fewest outstanding requests, counted as busy; None if none."""
        ...

    async def acquire(self, wait: float) -> Replica | None:
        """As acquire_now, waiting up to ``wait`` seconds for a replica to become available."""
        ...

    def claim(self, replica: Replica) -> None:
        """Count a request on a replica chosen by the caller (as acquire does)."""
        ...

    def release(self, replica: Replica) -> None:
        """The request counted by acquire/claim is done."""
        ...

    async def invoke(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        """POST /invocations; raises ReplicaUnreachable, ReplicaLost or ReplicaTimeout."""
        ...

    async def invoke_stream(
        self, replica: Replica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        """POST /invocations with a streamed body and response; raises ReplicaUnreachable or ReplicaLost."""
        ...

    def mark_unreachable(self, replica: Replica) -> None:
        """A request could not reach it: take it out of rotation until its supervisor sees it healthy."""
        ...

    def recycle(self, replica: Replica) -> None:
        """Replace a replica that timed out on a request (its model may be hung)."""
        ...

    async def stop(self, drain_timeout: float) -> None: ...


class Backend(Protocol):
    """Makes fleets. ``create_fleet`` resolves the model (image -> runtime, artifact) and raises
    DeploymentFailed when it cannot run; the fleet's replicas start with ``FleetHandle.start``."""

    async def create_fleet(self, request: FleetRequest) -> FleetHandle: ...

    async def close(self) -> None: ...
