"""The async inference queue (hosting/asyncq/) against a real metadata store and blob store, with
a fake fleet (tests/unit/stream_fakes.py) in place of model processes: ordering, the
per-instance concurrency limit, claiming, and recovery of every state a crash can leave."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from modelhost.config import Settings
from modelhost.hosting import asyncq
from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.router import Router
from modelhost.store import tables
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.buckets import BucketStore
from modelhost.store.db import MetadataStore
from tests.unit.stream_fakes import (
    BUCKET,
    StreamFleet,
    async_config,
    endpoint_record,
    env,
    insert_endpoint,
    publish,
)
from tests.unit.stream_fakes import StreamReplica as FakeInstance


def _env(tmp: Path) -> tuple[Settings, MetadataStore, BucketStore, LocalBlobStore]:
    return env(tmp)


def _endpoint(store: MetadataStore, name: str, concurrency: int) -> None:
    insert_endpoint(store, endpoint_record(name, async_config(name, concurrency)))


def _route(router: Router, name: str, inst: FakeInstance) -> None:
    publish(router, name, StreamFleet([inst]))


def _rows(store: MetadataStore) -> list[dict]:
    with store.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(tables.async_requests.select().order_by("seq"))]


async def _until(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())


def test_oldest_first_within_the_concurrency_limit(tmp_path: Path) -> None:
    settings, store, buckets, blobs = _env(tmp_path)
    _endpoint(store, "ep", concurrency=2)

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        inst = FakeInstance("v/0", delay=0.05)
        try:
            accepted = [await q.submit("ep", {"InferenceId": f"id-{i}"}, f"body-{i}".encode()) for i in range(10)]
            assert q.backlog("ep") == 10  # no route yet: everything waits
            _route(router, "ep", inst)
            q.dispatcher.wake()
            await _until(lambda: len([k for k, _ in buckets.iter_keys(BUCKET, "ep/") if k.endswith(".out")]) == 10)
            await _until(lambda: q.backlog("ep") == 0)
        finally:
            await q.stop()
        # oldest first: dispatched in order, two at a time (so neighbours may swap on arrival)
        order = [int(b.split(b"-")[1]) for b in inst.seen]
        assert sorted(order) == list(range(10))
        assert all(abs(pos - i) <= 1 for pos, i in enumerate(order)), order
        assert inst.peak == 2  # MaxConcurrentInvocationsPerInstance
        for i, a in enumerate(accepted):
            assert a["OutputLocation"] == f"s3://{BUCKET}/ep/id-{i}.out"
            assert buckets.open_object(BUCKET, f"ep/id-{i}.out")[1].read() == f"BODY-{i}".encode()
            assert buckets.head_object(BUCKET, f"ep/id-{i}.out").attrs.content_type == "text/x-upper"
        rows = _rows(store)
        assert [r["status"] for r in rows] == ["Completed"] * 10
        assert [r["attempts"] for r in rows] == [1] * 10
        assert not list(q.inputs_dir.iterdir()) and not list(q.tmp_dir.iterdir())

    run(main)


def test_claim_takes_a_pending_row_once(tmp_path: Path) -> None:
    settings, store, buckets, blobs = _env(tmp_path)
    _endpoint(store, "ep", concurrency=1)

    async def main() -> None:
        q = AsyncInference(settings, store, blobs, Router(1))
        await q.start()
        try:
            await q.submit("ep", {}, b"x")
            seq = _rows(store)[0]["seq"]
            assert await q.rows.claim(seq, 10) is True
            assert await q.rows.claim(seq, 10) is False  # already claimed
            row = _rows(store)[0]
            assert (row["status"], row["lease_owner"], row["attempts"]) == ("InProgress", q.run_id, 1)
            assert row["lease_expires"] > time.time()
        finally:
            await q.stop()
        # a graceful stop hands what was claimed back, uncounted
        row = _rows(store)[0]
        assert (row["status"], row["lease_owner"], row["attempts"]) == ("Pending", None, 0)

    run(main)


def _insert(
    store: MetadataStore, status: str, attempts: int, spec: dict, outcome: dict | None = None, inference_id: str = "r"
) -> int:
    with store.begin() as conn:
        result = conn.execute(
            tables.async_requests.insert().values(
                inference_id=inference_id,
                endpoint="ep",
                status=status,
                received_time=time.time(),
                attempts=attempts,
                lease_owner="dead-run" if status == "InProgress" else None,
                spec=json.dumps(spec),
                outcome=json.dumps(outcome) if outcome else None,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def _spec(name: str, tmp: Path) -> dict:
    inline = tmp / f"in-{name}"
    inline.write_bytes(name.encode())
    return {
        "input": None,
        "inline": str(inline),
        "content_type": None,
        "accept": None,
        "custom_attributes": None,
        "ttl": 21600,
        "timeout": 60,
        "output": f"s3://{BUCKET}/ep/{name}.out",
        "failure": f"s3://{BUCKET}/ep-f/{name}-error.out",
        "success_topic": None,
        "error_topic": None,
        "include": [],
    }


def test_recovery_after_a_crash(tmp_path: Path) -> None:
    """Rows as a kill -9 leaves them: InProgress (re-queued, or failed after MAX_ATTEMPTS runs),
    Completing with the temp file (renamed now) or without it (the rename happened)."""
    settings, store, buckets, blobs = _env(tmp_path)
    _endpoint(store, "ep", concurrency=4)
    work = settings.async_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    requeued = _insert(store, "InProgress", 1, _spec("requeued", settings.async_dir.parent), inference_id="a")
    exhausted = _insert(
        store, "InProgress", asyncq.MAX_ATTEMPTS, _spec("exhausted", settings.async_dir.parent), inference_id="b"
    )
    tmp_file = work / "out-pending"
    tmp_file.write_bytes(b"RESULT")
    renamed = _insert(
        store,
        "Completing",
        1,
        _spec("renamed", settings.async_dir.parent),
        {
            "status": "Completed",
            "time": time.time(),
            "tmp": str(tmp_file),
            "etag": "e",
            "size": 6,
            "content_type": "text/csv",
            "location": f"s3://{BUCKET}/ep/renamed.out",
            "variant": "v",
        },
        inference_id="c",
    )
    (settings.buckets_dir / BUCKET / "ep").mkdir(parents=True, exist_ok=True)
    (settings.buckets_dir / BUCKET / "ep" / "done.out").write_bytes(b"DONE")
    done = _insert(
        store,
        "Completing",
        1,
        _spec("done", settings.async_dir.parent),
        {
            "status": "Completed",
            "time": time.time(),
            "tmp": str(work / "out-gone"),
            "etag": "e2",
            "size": 4,
            "content_type": "text/csv",
            "location": f"s3://{BUCKET}/ep/done.out",
            "variant": "v",
        },
        inference_id="d",
    )
    (work / "out-orphan").write_bytes(b"garbage")  # a crash before its row was written

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        inst = FakeInstance("v/0")
        try:
            by_seq = {r["seq"]: r for r in _rows(store)}
            assert by_seq[requeued]["status"] == "Pending" and by_seq[requeued]["attempts"] == 1
            assert by_seq[exhausted]["status"] == "Failed"
            assert by_seq[renamed]["status"] == "Completed" and by_seq[done]["status"] == "Completed"
            assert not (work / "out-orphan").exists()
            _route(router, "ep", inst)
            q.dispatcher.wake()
            await _until(lambda: {r["seq"]: r for r in _rows(store)}[requeued]["status"] == "Completed")
        finally:
            await q.stop()
        assert inst.seen == [b"requeued"]  # only the re-queued request runs again
        assert _rows(store)[0]["attempts"] == 2
        meta = buckets.head_object(BUCKET, "ep/renamed.out")
        assert (meta.size, meta.attrs.content_type) == (6, "text/csv")
        assert buckets.head_object(BUCKET, "ep/done.out").attrs.content_type == "text/csv"
        failure = buckets.open_object(BUCKET, "ep-f/exhausted-error.out")[1].read().decode()
        assert failure.startswith(f"InternalFailure: The request was interrupted {asyncq.MAX_ATTEMPTS} times")

    run(main)


def test_unknown_and_sync_endpoints_are_refused(tmp_path: Path) -> None:
    settings, store, buckets, blobs = _env(tmp_path)
    insert_endpoint(store, endpoint_record("rt", {"ProductionVariants": [{"VariantName": "v"}]}))
    from modelhost.hosting.errors import EndpointNotFound, NotAsyncEndpoint

    async def main() -> None:
        q = AsyncInference(settings, store, blobs, Router(1))
        await q.start()
        try:
            with pytest.raises(EndpointNotFound, match="nope"):
                await q.submit("nope", {}, b"x")
            with pytest.raises(NotAsyncEndpoint, match="not an asynchronous inference endpoint"):
                await q.submit("rt", {}, b"x")
            assert "rt" not in q.names
        finally:
            await q.stop()

    run(main)
