"""The queue's rows after 0008_async_fast: the inline body and a small response live in the row
(no files), accepts share transactions (group commit), and every state a crash leaves with a
body in the row is finished once at the next start."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.asyncq import queue as queue_module
from modelhost.hosting.router import Router
from modelhost.store import tables
from modelhost.store.db import MetadataStore
from tests.unit.stream_fakes import (
    BUCKET,
    StreamFleet,
    StreamReplica,
    async_config,
    endpoint_record,
    env,
    insert_endpoint,
    publish,
)


def _rows(store: MetadataStore) -> list[dict]:
    with store.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(tables.async_requests.select().order_by("seq"))]


def _insert(store: MetadataStore, name: str, status: str, body: bytes | None, outcome: dict | None = None) -> int:
    spec = {
        "input": None,
        "inline": None,
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
    with store.begin() as conn:
        result = conn.execute(
            tables.async_requests.insert().values(
                inference_id=name,
                endpoint="ep",
                status=status,
                received_time=time.time(),
                attempts=1 if status != "Pending" else 0,
                lease_owner="dead-run" if status != "Pending" else None,
                spec=json.dumps(spec),
                outcome=json.dumps(outcome) if outcome else None,
                body=body,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def _until(pred: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_accepts_share_transactions_and_keep_the_body_in_the_row(tmp_path: Path, monkeypatch: Any) -> None:
    settings, store, buckets, blobs = env(tmp_path)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", 4)))
    batches: list[int] = []
    execute = queue_module.Writer._execute

    def counted(self: queue_module.Writer, ops: list) -> list:
        batches.append(len(ops))
        return execute(self, ops)

    monkeypatch.setattr(queue_module.Writer, "_execute", counted)

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        try:
            accepted = await asyncio.gather(*(q.submit("ep", {"InferenceId": f"b-{i}"}, b"x%d" % i) for i in range(50)))
            # each submit returned after its row was committed: all 50 are there, with their bodies
            rows = _rows(store)
            assert [r["inference_id"] for r in rows] == [a["InferenceId"] for a in accepted]
            assert [bytes(r["body"]) for r in rows] == [b"x%d" % i for i in range(50)]
            assert not list(q.inputs_dir.iterdir())  # no file beside the row
            assert len(batches) < 50 and max(batches) > 1  # group commit: shared transactions
            publish(router, "ep", StreamFleet([StreamReplica("v/0", delay=0)]))
            q.dispatcher.wake()
            await _until(lambda: q.backlog("ep") == 0)
        finally:
            await q.stop()
        rows = _rows(store)
        assert {r["status"] for r in rows} == {"Completed"}
        assert all(r["body"] is None for r in rows)  # dropped once finished
        assert not list(q.tmp_dir.iterdir())  # small responses never touched a temp file
        for i in range(50):
            assert buckets.open_object(BUCKET, f"ep/b-{i}.out")[1].read() == b"X%d" % i

    asyncio.run(main())


def test_recovery_of_rows_holding_their_bytes(tmp_path: Path) -> None:
    """A Pending row with its body (runs with it), and Completing rows whose object is in the row:
    a response (written now, with its content type) and a failure reason (the failure object)."""
    settings, store, buckets, blobs = env(tmp_path)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", 4)))
    pending = _insert(store, "pending", "Pending", b"from-the-row")
    ok = _insert(
        store,
        "ok",
        "Completing",
        b"THE RESPONSE",
        {
            "status": "Completed",
            "time": time.time(),
            "tmp": None,
            "inrow": True,
            "etag": "x",
            "size": 12,
            "content_type": "text/csv",
            "location": f"s3://{BUCKET}/ep/ok.out",
            "variant": "v",
        },
    )
    failed = _insert(
        store,
        "failed",
        "Completing",
        None,
        {
            "status": "Failed",
            "time": time.time(),
            "tmp": None,
            "inrow": True,
            "reason": "ClientError: model says no",
            "etag": "y",
            "size": 26,
            "content_type": "text/plain",
            "location": f"s3://{BUCKET}/ep-f/failed-error.out",
            "variant": "v",
        },
    )

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        inst = StreamReplica("v/0", delay=0)
        try:
            by_seq = {r["seq"]: r for r in _rows(store)}
            assert by_seq[ok]["status"] == "Completed" and by_seq[failed]["status"] == "Failed"
            publish(router, "ep", StreamFleet([inst]))
            q.dispatcher.wake()
            await _until(lambda: {r["seq"]: r for r in _rows(store)}[pending]["status"] == "Completed")
        finally:
            await q.stop()
        assert inst.seen == [b"from-the-row"]
        meta = buckets.head_object(BUCKET, "ep/ok.out")
        assert (meta.size, meta.attrs.content_type) == (12, "text/csv")
        assert buckets.open_object(BUCKET, "ep/ok.out")[1].read() == b"THE RESPONSE"
        assert buckets.open_object(BUCKET, "ep-f/failed-error.out")[1].read() == b"ClientError: model says no"
        assert buckets.open_object(BUCKET, "ep/pending.out")[1].read() == b"FROM-THE-ROW"
        assert all(r["body"] is None for r in _rows(store))

    asyncio.run(main())
