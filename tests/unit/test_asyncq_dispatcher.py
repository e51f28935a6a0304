"""The async dispatcher (hosting/asyncq/dispatcher.py) with a fake FleetHandle (no processes): the
per-instance concurrency limit, unavailable replicas, ReplicaUnreachable / ReplicaLost / timeouts,
and claims balanced by releases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from modelhost.backends.handle import ReplicaLost, ReplicaUnreachable
from modelhost.hosting.asyncq import MAX_ATTEMPTS, AsyncInference
from modelhost.hosting.asyncq.dispatcher import pick
from modelhost.hosting.router import Router
from modelhost.store import tables
from modelhost.store.db import MetadataStore
from tests.helpers import stored_object
from tests.unit.stream_fakes import (
    BUCKET,
    MemoryReply,
    StreamFleet,
    StreamReplica,
    async_config,
    endpoint_record,
    env,
    insert_endpoint,
    publish,
    upper,
)


def _rows(store: MetadataStore) -> list[dict]:
    with store.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(tables.async_requests.select().order_by("seq"))]


def tmp_path_store(tmp_path: Path) -> MetadataStore:
    """The scenario's metadata store, opened again after the queue stopped."""
    return MetadataStore(f"sqlite:///{tmp_path / 'data' / 'modelhost.db'}")


async def _until(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _scenario(
    tmp_path: Path,
    replicas: list[StreamReplica],
    body: Callable[[AsyncInference, Callable[[], None], MetadataStore], Awaitable[Any]],
    concurrency: int = 2,
    setup: Callable[[StreamFleet], None] | None = None,
) -> StreamFleet:
    settings, store, _buckets, blobs = env(tmp_path)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", concurrency)))
    fleet = StreamFleet(replicas)
    if setup is not None:
        setup(fleet)

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        try:
            await body(q, lambda: publish(router, "ep", fleet), store)
            await _until(lambda: q.backlog("ep") == 0)
            assert q.dispatcher.slots == {}
        finally:
            await q.stop()

    asyncio.run(main())
    # every claim on a replica was released, and nothing is counted on it any more
    assert fleet.claims == fleet.releases
    assert all(r.outstanding == 0 for r in replicas)
    return fleet


async def _submit(q: AsyncInference, n: int, **params: Any) -> list[dict[str, str]]:
    return [await q.submit("ep", {"InferenceId": f"id-{i}", **params}, f"body-{i}".encode()) for i in range(n)]


# --- picking


def test_pick_prefers_the_least_busy_available_replica_under_the_limit() -> None:
    a, b, c = StreamReplica("v/0"), StreamReplica("v/1"), StreamReplica("w/0")
    v, w = StreamFleet([a, b]), StreamFleet([c], variant="w")
    fleets = [("v", v), ("w", w)]
    assert pick(fleets, {}, 2) == ("v", v, a)  # all idle: the first
    assert pick(fleets, {a: 1}, 2) == ("v", v, b)
    assert pick(fleets, {a: 1, b: 1}, 2) == ("w", w, c)  # across variants
    assert pick(fleets, {a: 2, b: 2, c: 1}, 2) == ("w", w, c)
    assert pick(fleets, {a: 2, b: 2, c: 2}, 2) is None  # every replica at its limit
    c.healthy = False
    assert pick(fleets, {a: 2, b: 1}, 2) == ("v", v, b)
    a.healthy = b.healthy = False
    assert pick(fleets, {}, 2) is None  # nothing available
    assert pick([], {}, 2) is None


# --- runs


def test_concurrency_limit_per_replica(tmp_path: Path) -> None:
    replicas = [StreamReplica("v/0", delay=0.05), StreamReplica("v/1", delay=0.05)]

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        await _submit(q, 12)  # all queued before the route appears
        route()
        await _until(lambda: [r["status"] for r in _rows(store)] == ["Completed"] * 12)

    fleet = _scenario(tmp_path, replicas, body, concurrency=3)
    assert [r.peak for r in replicas] == [3, 3]  # MaxConcurrentInvocationsPerInstance, on each
    assert sum(len(r.seen) for r in replicas) == 12
    assert sum(fleet.claims.values()) == 12


def test_unavailable_replicas_are_skipped(tmp_path: Path) -> None:
    down, up = StreamReplica("v/0"), StreamReplica("v/1", delay=0.01)
    down.healthy = False

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        route()
        await _submit(q, 5)
        await _until(lambda: [r["status"] for r in _rows(store)] == ["Completed"] * 5)

    fleet = _scenario(tmp_path, [down, up], body)
    assert down.seen == [] and "v/0" not in fleet.claims
    assert sorted(up.seen) == sorted(f"body-{i}".encode() for i in range(5))


def test_headers_reach_the_replica(tmp_path: Path) -> None:
    replica = StreamReplica("v/0", delay=0)

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        route()
        await q.submit("ep", {"InferenceId": "h", "ContentType": "text/csv", "Accept": "a/b"}, b"x")
        await _until(lambda: _rows(store)[0]["status"] == "Completed")

    _scenario(tmp_path, [replica], body)
    assert replica.headers == [
        [(b"content-type", b"text/csv"), (b"accept", b"a/b"), (b"x-amzn-sagemaker-inference-id", b"h")]
    ]


def test_unreachable_requeues_without_counting_an_attempt(tmp_path: Path) -> None:
    gone, ok = StreamReplica("v/0"), StreamReplica("v/1", delay=0.01)

    def setup(fleet: StreamFleet) -> None:
        async def answer(replica: StreamReplica, headers: list[tuple[bytes, bytes]], body: bytes) -> MemoryReply:
            if replica is gone:
                raise ReplicaUnreachable("cannot connect")
            return await upper(replica, headers, body)

        fleet.answer = answer

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        route()
        await _submit(q, 1)
        await _until(lambda: _rows(store)[0]["status"] == "Completed")

    fleet = _scenario(tmp_path, [gone, ok], body, setup=setup)
    assert fleet.unreachable == ["v/0"] and not gone.healthy  # out of rotation
    assert ok.seen == [b"body-0"]
    rows = _rows(tmp_path_store(tmp_path))
    assert rows[0]["attempts"] == 1  # the unreachable try did not count
    assert fleet.claims == {"v/0": 1, "v/1": 1}


def test_lost_replica_requeues_then_fails_after_max_attempts(tmp_path: Path) -> None:
    replica = StreamReplica("v/0", delay=0)

    def setup(fleet: StreamFleet) -> None:
        async def answer(replica: StreamReplica, headers: list[tuple[bytes, bytes]], body: bytes) -> MemoryReply:
            # the replica dies while the answer streams back
            return MemoryReply(200, {b"content-type": b"text/plain"}, b"partial", ReplicaLost("connection reset"))

        fleet.answer = answer

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        route()
        await _submit(q, 1)
        await _until(lambda: _rows(store)[0]["status"] == "Failed")

    fleet = _scenario(tmp_path, [replica], body, setup=setup)
    assert len(replica.seen) == MAX_ATTEMPTS
    assert [line for _, line in fleet.log.lines] == [
        f"request id-0 lost its instance (connection reset); re-queued (attempt {n})" for n in range(1, MAX_ATTEMPTS)
    ]
    row = _rows(tmp_path_store(tmp_path))[0]
    assert row["attempts"] == MAX_ATTEMPTS
    failure = (stored_object(tmp_path / "data", f"s3://{BUCKET}/ep-f/id-0-error.out") or b"").decode()
    assert failure == (
        'ClientError: Received server error (0) from primary with message "The container primary failed: '
        f'connection reset." after {MAX_ATTEMPTS} attempts.'
    )
    assert stored_object(tmp_path / "data", f"s3://{BUCKET}/ep/id-0.out") is None
    assert all(reply.closed for reply in fleet.replies)


def test_timeout_recycles_the_replica_and_fails(tmp_path: Path) -> None:
    replica = StreamReplica("v/0", delay=5)

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        route()
        await q.submit("ep", {"InferenceId": "slow", "InvocationTimeoutSeconds": 1}, b"x")
        await _until(lambda: _rows(store)[0]["status"] == "Failed")

    fleet = _scenario(tmp_path, [replica], body)
    assert fleet.recycled == ["v/0"]
    failure = (stored_object(tmp_path / "data", f"s3://{BUCKET}/ep-f/slow-error.out") or b"").decode()
    assert "(InvocationTimeoutSeconds: 1)" in failure and "modelhost logs ep" in failure


def test_model_error_fails_with_its_answer(tmp_path: Path) -> None:
    replica = StreamReplica("v/0", delay=0)

    def setup(fleet: StreamFleet) -> None:
        async def answer(replica: StreamReplica, headers: list[tuple[bytes, bytes]], body: bytes) -> MemoryReply:
            return MemoryReply(422, {b"content-type": b"text/plain"}, b"bad input")

        fleet.answer = answer

    async def body(q: AsyncInference, route: Callable[[], None], store: MetadataStore) -> None:
        route()
        await _submit(q, 1)
        await _until(lambda: _rows(store)[0]["status"] == "Failed")

    _scenario(tmp_path, [replica], body, setup=setup)
    failure = (stored_object(tmp_path / "data", f"s3://{BUCKET}/ep-f/id-0-error.out") or b"").decode()
    assert failure == (
        'ClientError: Received client error (422) from primary with message "bad input". '
        "See the endpoint's logs (modelhost logs ep) for more information."
    )
