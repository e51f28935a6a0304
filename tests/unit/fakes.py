"""In-memory stand-ins for a backend (FakeBackend, FakeFleet, FakeReplica) and helpers that build
the real collaborators around them: Settings with a tmp data dir, a MetadataStore on sqlite in
tmp (the migrations run at construction), endpoint records written with store/endpoints.py.

Real database, fake fleets: the control loops under test run exactly as in the server, only the
replicas are Python objects that answer at once.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from modelhost.backends.handle import (
    DeploymentFailed,
    FleetRequest,
    ReplicaFailed,
    ReplicaResponse,
    StreamedReply,
)
from modelhost.config import Settings
from modelhost.control import tags
from modelhost.control.context import ControlContext
from modelhost.controllers.reconciler import Reconciler
from modelhost.hosting.router import Router
from modelhost.resources.endpoint import Deployment, EndpointRecord, EndpointStatus, Snapshot
from modelhost.resources.stats import FleetStats
from modelhost.store import endpoints as rows
from modelhost.store.db import MetadataStore
from modelhost.store.logs import EndpointLog

ACCOUNT = "123456789012"
REGION = "us-east-1"

# --- fake backend


class FakeReplica:
    def __init__(self, name: str) -> None:
        self.name = name
        self.outstanding = 0
        self.healthy = False
        self.leaving = False

    @property
    def available(self) -> bool:
        return self.healthy and not self.leaving

    def __repr__(self) -> str:
        return f"FakeReplica({self.name!r}, outstanding={self.outstanding}, healthy={self.healthy})"


Responder = Callable[[FakeReplica, list[tuple[bytes, bytes]], bytes, float], Any]


def echo(replica: FakeReplica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float) -> ReplicaResponse:
    """The default model: answers 200 with the body and the replica's name in a header."""
    return ReplicaResponse(200, {b"content-type": b"application/json", b"x-replica": replica.name.encode()}, body)


class FakeFleet:
    """A FleetHandle kept wholly in memory.

    Knobs (set before the reconciler gets to them): ``start_error`` makes ``start`` raise
    ReplicaFailed; ``start_gate`` (an asyncio.Event) holds ``start`` until set; ``scale_error``
    makes a scale-out raise ReplicaFailed (the fleet stays as it was); ``responder`` answers
    invocations (return a ReplicaResponse or raise ReplicaUnreachable/Lost/Timeout; may be async).
    Records: ``start_calls``, ``scale_calls`` [(count, drain_timeout)], ``stop_calls`` [drain_timeout],
    ``invocations`` [(replica name, body)], ``unreachable``/``recycled`` [replica name].
    """

    def __init__(
        self,
        request: FleetRequest,
        *,
        start_error: str | None = None,
        start_gate: asyncio.Event | None = None,
    ) -> None:
        self.request = request
        self.variant = request.variant
        self.desired = request.count
        self.stats = FleetStats()
        self.log = request.log
        self.crash_loops: dict[str, str] = {}
        self._next = 0
        self._replicas: list[FakeReplica] = [self._new_replica() for _ in range(request.count)]
        self.start_error = start_error
        self.start_gate = start_gate
        self.scale_error: str | None = None
        self.responder: Responder = echo
        self.start_calls = 0
        self.started = False
        self.scale_calls: list[tuple[int, float]] = []
        self.stop_calls: list[float] = []
        self.invocations: list[tuple[str, bytes]] = []
        self.unreachable: list[str] = []
        self.recycled: list[str] = []
        self.released: list[str] = []

    def _new_replica(self) -> FakeReplica:
        replica = FakeReplica(f"{self.variant}/{self._next}")
        self._next += 1
        return replica

    def __repr__(self) -> str:
        return f"FakeFleet({self.request.owner}/{self.variant}, size={self.size}, stopped={self.stopped})"

    # --- FleetHandle

    @property
    def size(self) -> int:
        return len(self._replicas)

    @property
    def healthy_count(self) -> int:
        return sum(1 for r in self._replicas if r.healthy)

    @property
    def stopped(self) -> bool:
        return bool(self.stop_calls)

    def replicas(self) -> Sequence[FakeReplica]:
        return list(self._replicas)

    async def start(self) -> None:
        self.start_calls += 1
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.start_error is not None:
            await self.stop(0)
            raise ReplicaFailed(self.start_error)
        for r in self._replicas:
            r.healthy = True
        self.started = True

    async def scale_to(self, count: int, drain_timeout: float) -> None:
        self.scale_calls.append((count, drain_timeout))
        current = len(self._replicas)
        if count > current:
            if self.scale_error is not None:
                raise ReplicaFailed(self.scale_error)
            fresh = [self._new_replica() for _ in range(count - current)]
            for r in fresh:
                r.healthy = True
            self._replicas = self._replicas + fresh
        elif count < current:
            leaving = self._replicas[count:]
            for r in leaving:
                r.leaving = True
            self._replicas = self._replicas[:count]
        self.desired = count

    def acquire_now(self) -> FakeReplica | None:
        best: FakeReplica | None = None
        for r in self._replicas:
            if r.available and (best is None or r.outstanding < best.outstanding):
                best = r
        if best is not None:
            best.outstanding += 1
        return best

    async def acquire(self, wait: float) -> FakeReplica | None:
        deadline = time.monotonic() + wait
        while True:
            replica = self.acquire_now()
            if replica is not None or self.stopped or time.monotonic() >= deadline:
                return replica
            await asyncio.sleep(0.005)

    def claim(self, replica: FakeReplica) -> None:
        replica.outstanding += 1

    def release(self, replica: FakeReplica) -> None:
        replica.outstanding -= 1
        self.released.append(replica.name)

    async def invoke(
        self, replica: FakeReplica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        self.invocations.append((replica.name, body))
        result = self.responder(replica, headers, body, timeout)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def invoke_stream(
        self, replica: FakeReplica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        raise NotImplementedError("the fake fleet does not stream")

    def mark_unreachable(self, replica: FakeReplica) -> None:
        replica.healthy = False
        self.unreachable.append(replica.name)

    def recycle(self, replica: FakeReplica) -> None:
        self.recycled.append(replica.name)

    async def stop(self, drain_timeout: float) -> None:
        self.stop_calls.append(drain_timeout)
        for r in self._replicas:
            r.healthy = False


def image_of(model: dict[str, Any]) -> str:
    container = model.get("PrimaryContainer") or model["Containers"][0]
    return str(container["Image"])


class FakeBackend:
    """Makes FakeFleets and records every FleetRequest.

    ``deploy_failures[model]`` makes create_fleet raise DeploymentFailed for that model (as named to
    ``model_spec``); ``start_failures[model]`` makes its fleets' start raise ReplicaFailed;
    ``start_gate`` is handed to every new fleet."""

    def __init__(self) -> None:
        self.requests: list[FleetRequest] = []
        self.fleets: list[FakeFleet] = []
        self.deploy_failures: dict[str, str] = {}
        self.start_failures: dict[str, str] = {}
        self.start_gate: asyncio.Event | None = None
        self.closed = False

    async def create_fleet(self, request: FleetRequest) -> FakeFleet:
        self.requests.append(request)
        model = model_name_of(request.model)
        if model in self.deploy_failures:
            raise DeploymentFailed(self.deploy_failures[model])
        fleet = FakeFleet(request, start_error=self.start_failures.get(model), start_gate=self.start_gate)
        self.fleets.append(fleet)
        return fleet

    async def close(self) -> None:
        self.closed = True

    def fleets_of(self, model: str) -> list[FakeFleet]:
        return [f for f in self.fleets if model_name_of(f.request.model) == model]

    def fleet(self, model: str, variant: str) -> FakeFleet:
        (found,) = [f for f in self.fleets_of(model) if f.variant == variant]
        return found


# --- resources


def model_spec(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A CreateModel request as the snapshot keeps it; the fake backend knows it by ``name``."""
    container: dict[str, Any] = {"Image": f"fake.example/{name}:1", "ModelDataUrl": f"s3://models/{name}.tar.gz"}
    if env is not None:
        container["Environment"] = env
    return {"PrimaryContainer": container, "ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/test"}


def model_name_of(model: dict[str, Any]) -> str:
    return image_of(model).removeprefix("fake.example/").removesuffix(":1")


def variant(name: str, model: str, count: int = 1, weight: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "VariantName": name,
        "ModelName": model,
        "InitialInstanceCount": count,
        "InitialVariantWeight": weight,
        "InstanceType": "ml.m5.large",
        **extra,
    }


def snapshot(
    config_name: str,
    variants: list[dict[str, Any]],
    shadows: list[dict[str, Any]] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
) -> Snapshot:
    """Freeze a config of ``variants``; models default to ``model_spec`` of every ModelName used."""
    config: dict[str, Any] = {"ProductionVariants": variants}
    if shadows:
        config["ShadowProductionVariants"] = shadows
    used = {v["ModelName"] for v in variants + (shadows or [])}
    models = {**{m: model_spec(m) for m in used}, **(models or {})}
    return Snapshot.freeze(config_name, config, models, time.time())


def record(
    name: str,
    current: Snapshot,
    status: EndpointStatus = EndpointStatus.CREATING,
    **deployment: Any,
) -> EndpointRecord:
    now = round(time.time(), 3)
    return EndpointRecord(
        name=name,
        arn=f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name.lower()}",
        config_name=current.config_name,
        status=status,
        failure_reason=None,
        creation_time=now,
        last_modified_time=now,
        deployment=Deployment(current, **deployment),
    )


def insert(store: MetadataStore, rec: EndpointRecord, tag_list: list[dict[str, str]] | None = None) -> EndpointRecord:
    with store.begin() as conn:
        rows.insert(store, conn, rec)
        if tag_list:
            tags.save(conn, rec.arn, tag_list)
    return rec


def load(store: MetadataStore, name: str) -> EndpointRecord | None:
    with store.begin() as conn:
        return rows.load(store, conn, name)


def save(store: MetadataStore, rec: EndpointRecord, **changes: Any) -> EndpointRecord:
    with store.begin() as conn:
        return rows.save(store, conn, rec, **changes)


def with_deployment(rec: EndpointRecord, **changes: Any) -> Deployment:
    return replace(rec.deployment, **changes)


# --- environment


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "region": REGION,
        "account_id": ACCOUNT,
        "stop_grace": 7.5,
        "instance_wait_timeout": 0.05,
        "max_instances": 1000,  # fake fleets use no machine: the quota (from this machine's size) must not bite
    }
    values.update(overrides)
    return Settings(**values)


def make_store(tmp_path: Path) -> MetadataStore:
    return MetadataStore(f"sqlite:///{tmp_path / 'db' / 'modelhost.db'}")


@dataclass
class Env:
    """A reconciler over a real store with a fake backend and a real router."""

    settings: Settings
    store: MetadataStore
    backend: FakeBackend
    router: Router
    reconciler: Reconciler

    def ctx(self) -> ControlContext:
        # The operations these tests call (endpoints, autoscaling) never touch blobs; the blob store is
        # left out so the tests do not depend on store/blobs*.
        return ControlContext(self.settings, self.store, blobs=cast(Any, None))

    def insert(self, rec: EndpointRecord, tag_list: list[dict[str, str]] | None = None) -> EndpointRecord:
        return insert(self.store, rec, tag_list)

    def load(self, name: str) -> EndpointRecord | None:
        return load(self.store, name)

    def save(self, rec: EndpointRecord, **changes: Any) -> EndpointRecord:
        return save(self.store, rec, **changes)

    def sync(self) -> None:
        """Start one control-loop pass over the stored endpoints (the steps run as tasks)."""
        with self.store.begin() as conn:
            records = rows.load_all(self.store, conn)
        self.reconciler.sync(records)

    async def pass_once(self) -> None:
        """One control-loop pass over the stored endpoints, run to completion."""
        self.sync()
        await self.reconciler.wait_idle()

    def close(self) -> None:
        for endpoint_log in list(self.reconciler.logs.values()):
            endpoint_log.close()
        self.store.engine.dispose()


def make_env(tmp_path: Path, **settings: Any) -> Env:
    s = make_settings(tmp_path, **settings)
    store = make_store(tmp_path)
    backend = FakeBackend()
    router = Router(instance_wait=s.instance_wait_timeout)
    return Env(s, store, backend, router, Reconciler(s, store, backend, router))


def env_fixture(tmp_path: Path, **settings: Any) -> Iterator[Env]:
    env = make_env(tmp_path, **settings)
    try:
        yield env
    finally:
        env.close()


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait (on the event loop) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def fleet_request(variant_name: str, count: int, log: EndpointLog) -> FleetRequest:
    """A FleetRequest for a FakeFleet built by hand (router tests)."""
    return FleetRequest(
        owner="ep",
        variant=variant_name,
        model=model_spec("m"),
        count=count,
        log=log,
        label=f"Variant {variant_name}",
    )
