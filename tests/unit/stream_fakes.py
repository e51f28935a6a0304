"""A FleetHandle whose replicas stream (the async queue's side of the protocol), kept wholly in memory,
and helpers to set up the async queue around it: a real metadata store, the real local blob store,
async endpoint records written with store/endpoints.py, a route published on a real Router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from modelhost.backends.handle import ReplicaResponse, ReplicaTimeout, StreamedReply
from modelhost.config import Settings
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.resources.endpoint import Deployment, EndpointRecord, EndpointStatus, Snapshot
from modelhost.resources.stats import FleetStats
from modelhost.store import endpoints as endpoint_rows
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.buckets import BucketStore
from modelhost.store.db import MetadataStore

BUCKET = "out"
PIECE = 64 * 1024


class StreamReplica:
    """Records the bodies it received, in arrival order, and the most requests it had at once."""

    def __init__(self, name: str, delay: float = 0.05) -> None:
        self.name = name
        self.delay = delay
        self.outstanding = 0
        self.healthy = True
        self.seen: list[bytes] = []
        self.headers: list[list[tuple[bytes, bytes]]] = []
        self.active = 0
        self.peak = 0

    @property
    def available(self) -> bool:
        return self.healthy

    def __repr__(self) -> str:
        return f"StreamReplica({self.name!r}, outstanding={self.outstanding})"


class MemoryReply:
    """A StreamedReply from bytes; ``lose_after`` raises the given error after that many bytes."""

    def __init__(
        self, status: int, headers: dict[bytes, bytes], body: bytes, lose: BaseException | None = None
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.lose = lose
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), PIECE):
            yield self.body[i : i + PIECE]
            await asyncio.sleep(0)
        if self.lose is not None:
            raise self.lose

    async def read_all(self, limit: int) -> bytes:
        return self.body[:limit]

    def close(self) -> None:
        self.closed = True


Answer = Callable[[StreamReplica, list[tuple[bytes, bytes]], bytes], Awaitable[MemoryReply]]


async def upper(replica: StreamReplica, headers: list[tuple[bytes, bytes]], body: bytes) -> MemoryReply:
    """The default model: the body upper-cased, after the replica's delay."""
    await asyncio.sleep(replica.delay)
    return MemoryReply(200, {b"content-type": b"text/x-upper"}, body.upper())


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, source: str, line: str) -> None:
        self.lines.append((source, line))


class StreamFleet:
    """The FleetHandle calls the async queue makes, recorded: ``claims``/``releases`` per replica name,
    ``unreachable``/``recycled`` replica names. ``answer`` plays the model (may raise ReplicaUnreachable
    or ReplicaLost, or return a reply that fails while it is read)."""

    def __init__(self, replicas: Sequence[StreamReplica], variant: str = "v") -> None:
        self.variant = variant
        self.desired = len(replicas)
        self.stats = FleetStats()
        self.log = RecordingLog()
        self.crash_loops: dict[str, str] = {}
        self.members = list(replicas)
        self.answer: Answer = upper
        self.claims: dict[str, int] = {}
        self.releases: dict[str, int] = {}
        self.unreachable: list[str] = []
        self.recycled: list[str] = []
        self.replies: list[MemoryReply] = []

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def healthy_count(self) -> int:
        return sum(1 for r in self.members if r.healthy)

    def replicas(self) -> Sequence[StreamReplica]:
        return list(self.members)

    async def start(self) -> None:
        pass

    async def scale_to(self, count: int, drain_timeout: float) -> None:
        raise NotImplementedError

    def acquire_now(self) -> StreamReplica | None:
        raise NotImplementedError("the async queue claims the replica it picked")

    async def acquire(self, wait: float) -> StreamReplica | None:
        raise NotImplementedError("the async queue claims the replica it picked")

    def claim(self, replica: StreamReplica) -> None:
        replica.outstanding += 1
        self.claims[replica.name] = self.claims.get(replica.name, 0) + 1

    def release(self, replica: StreamReplica) -> None:
        replica.outstanding -= 1
        self.releases[replica.name] = self.releases.get(replica.name, 0) + 1

    async def invoke(
        self, replica: StreamReplica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ReplicaResponse:
        """Inline bodies: one request, the answer whole (a reply that fails while read raises its error)."""

        async def once() -> AsyncIterator[bytes]:
            yield body

        async def whole() -> ReplicaResponse:
            reply = await self.invoke_stream(replica, headers, len(body), once())
            try:
                data = b"".join([c async for c in reply.chunks()])  # (raises ``lose``, as a lost connection does)
            finally:
                reply.close()
            return ReplicaResponse(reply.status, reply.headers, data)

        try:  # (the timeout is the fleet's, as FleetHandle.invoke says: the dispatcher adds none)
            return await asyncio.wait_for(whole(), timeout)
        except TimeoutError:
            raise ReplicaTimeout(f"replica {replica.name} did not answer within {timeout:g}s") from None

    async def invoke_stream(
        self, replica: StreamReplica, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedReply:
        assert replica.outstanding > 0, "invoked without a claim"
        body = b"".join([c async for c in chunks])
        assert len(body) == size
        replica.active += 1
        replica.peak = max(replica.peak, replica.active)
        try:
            reply = await self.answer(replica, headers, body)
        finally:
            replica.active -= 1
        replica.seen.append(body)
        replica.headers.append(headers)
        self.replies.append(reply)
        return reply

    def mark_unreachable(self, replica: StreamReplica) -> None:
        replica.healthy = False
        self.unreachable.append(replica.name)

    def recycle(self, replica: StreamReplica) -> None:
        self.recycled.append(replica.name)

    async def stop(self, drain_timeout: float) -> None:
        pass


# --- the queue's environment


def env(tmp: Path) -> tuple[Settings, MetadataStore, BucketStore, LocalBlobStore]:
    settings = Settings(data_dir=tmp / "data")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = MetadataStore(f"sqlite:///{settings.data_dir / 'modelhost.db'}")
    buckets = BucketStore(settings.buckets_dir, settings.data_dir)
    if not (settings.buckets_dir / BUCKET).exists():
        buckets.create_bucket(BUCKET)
    return settings, store, buckets, LocalBlobStore(buckets)


def endpoint_record(
    name: str, config: dict[str, Any], status: EndpointStatus = EndpointStatus.IN_SERVICE
) -> EndpointRecord:
    return EndpointRecord(
        name=name,
        arn=f"arn:{name}",
        config_name=name,
        status=status,
        failure_reason=None,
        creation_time=1.0,
        last_modified_time=1.0,
        deployment=Deployment(Snapshot.freeze(name, config, {}, 1.0)),
    )


def async_config(name: str, concurrency: int, **output: Any) -> dict[str, Any]:
    return {
        "ProductionVariants": [{"VariantName": "v", "ModelName": "m", "InitialInstanceCount": 1}],
        "AsyncInferenceConfig": {
            "OutputConfig": {
                "S3OutputPath": f"s3://{BUCKET}/{name}",
                "S3FailurePath": f"s3://{BUCKET}/{name}-f",
                **output,
            },
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
        },
    }


def insert_endpoint(store: MetadataStore, record: EndpointRecord) -> None:
    with store.begin() as conn:
        endpoint_rows.insert(store, conn, record)


def publish(router: Router, name: str, *fleets: StreamFleet) -> None:
    """Route the endpoint to ``fleets`` (one variant each), as the reconciler publishes a route."""
    router.publish(
        EndpointRoute(
            name,
            [
                VariantRoute(f.variant, 1.0, f, 60.0, f"arn:log:{name}", VariantMetrics.for_variant(name, f.variant))
                for f in fleets
            ],
        )
    )
