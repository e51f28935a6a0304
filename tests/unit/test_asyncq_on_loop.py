"""The queue's writes on the event loop (issue 15 §5): on SQLite, a request's row transactions
and its small output object make no thread hop; a database or bucket index held by another writer
sends them to a thread instead, where they wait for it, without stalling the loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.asyncq import batches as batches_module
from modelhost.hosting.asyncq import queue as queue_module
from modelhost.hosting.asyncq.sql import Statement
from modelhost.hosting.router import Router
from modelhost.store import tables
from modelhost.store.buckets.objects import ObjectAttrs
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


def _statuses(store: Any) -> list[str]:
    with store.begin() as conn:
        return [r.status for r in conn.execute(tables.async_requests.select().order_by("seq"))]


@contextlib.contextmanager
def _batch_held_by_a_thread(buckets: Any) -> Iterator[threading.Event]:
    """The bucket store's batch held by another thread until the yielded event is set (or the block ends)."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with buckets.batch():
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        yield release
    finally:
        release.set()
        t.join()


def _count_hops(monkeypatch: Any) -> list[str]:
    """The names of the functions the queue's writer and batches hand to a thread."""
    hops: list[str] = []
    real = asyncio.to_thread

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(queue_module.asyncio, "to_thread", counted)
    monkeypatch.setattr(batches_module.asyncio, "to_thread", counted)
    return hops


async def _until(pred: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_rows_and_small_outputs_make_no_thread_hop(tmp_path: Path, monkeypatch: Any) -> None:
    settings, store, buckets, blobs = env(tmp_path)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", 4)))
    hops = _count_hops(monkeypatch)

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        hops.clear()  # (recovery at start reads in a thread)
        try:
            await asyncio.gather(*(q.submit("ep", {"InferenceId": f"l-{i}"}, b"x%d" % i) for i in range(20)))
            publish(router, "ep", StreamFleet([StreamReplica("v/0", delay=0)]))
            q.dispatcher.wake()
            await _until(lambda: q.backlog("ep") == 0)
            await _until(lambda: set(_statuses(store)) == {"Completed"})
            # insert, claim, completing, done and the output object: all on the loop
            assert [h for h in hops if h != "checkpoint"] == []
        finally:
            await q.stop()
        for i in range(20):
            assert buckets.open_object(BUCKET, f"ep/l-{i}.out")[1].read() == b"X%d" % i

    asyncio.run(main())


def test_a_busy_database_sends_the_batch_to_a_thread(tmp_path: Path, monkeypatch: Any) -> None:
    """Another connection holds the write lock: the submit waits in a thread (the loop keeps
    running) and is committed once the lock is let go."""
    settings, store, buckets, blobs = env(tmp_path)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", 4)))
    hops = _count_hops(monkeypatch)
    other = sqlite3.connect(settings.data_dir / "modelhost.db", isolation_level=None, check_same_thread=False)

    async def main() -> None:
        q = AsyncInference(settings, store, blobs, Router(1))
        await q.start()
        try:
            other.execute("BEGIN IMMEDIATE")
            submit = asyncio.ensure_future(q.submit("ep", {"InferenceId": "busy"}, b"x"))
            ticks = 0
            while ticks < 20:  # the loop is not stalled by the waiting transaction
                await asyncio.sleep(0.01)
                ticks += 1
            assert not submit.done()
            assert "_execute_pooled" in hops
            other.execute("COMMIT")
            accepted = await asyncio.wait_for(submit, 10)
            assert accepted["InferenceId"] == "busy"
            assert _statuses(store) == ["Pending"]
            hops.clear()
            await q.submit("ep", {"InferenceId": "free"}, b"y")  # free again: back on the loop
            assert "_execute_pooled" not in hops
        finally:
            await q.stop()
            other.close()

    asyncio.run(main())


def test_batch_now_never_waits(tmp_path: Path) -> None:
    """The bucket store's batch for the loop starts only when no thread or process holds it."""
    _settings, _store, buckets, _blobs = env(tmp_path)
    attrs = ObjectAttrs("text/plain")
    with buckets.batch_now() as began:
        assert began
        buckets.write_object(BUCKET, "now/a", b"a", "0cc175b9c0f1b6a831c399e269772661", attrs)
    assert buckets.open_object(BUCKET, "now/a")[1].read() == b"a"

    with _batch_held_by_a_thread(buckets), buckets.batch_now() as began:
        assert not began  # another thread's batch: not waited for

    other = sqlite3.connect(buckets.meta_dir / "objects.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing the index
    try:
        with buckets.batch_now() as began:
            assert not began
    finally:
        other.execute("ROLLBACK")
        other.close()
    with buckets.batch_now() as began:  # (the busy timeout is back for the blocking batch)
        assert began
    assert buckets.index._db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_a_held_bucket_store_sends_small_outputs_to_the_thread(tmp_path: Path) -> None:
    settings, store, buckets, blobs = env(tmp_path)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", 4)))

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        try:
            with _batch_held_by_a_thread(buckets) as release:
                await q.submit("ep", {"InferenceId": "held"}, b"z")
                publish(router, "ep", StreamFleet([StreamReplica("v/0", delay=0)]))
                q.dispatcher.wake()
                await _until(lambda: _statuses(store) == ["Completing"])
                await asyncio.sleep(0.1)
                assert _statuses(store) == ["Completing"]  # waiting for the store, in the thread
                release.set()
                await _until(lambda: _statuses(store) == ["Completed"])
        finally:
            await q.stop()
        assert buckets.open_object(BUCKET, "ep/held.out")[1].read() == b"Z"

    asyncio.run(main())


def test_lazy_ops_ride_the_next_transaction(tmp_path: Path) -> None:
    """The steps after an answer (lazy) wait up to LAZY_WAIT after the last transaction began, so
    under load they share one; an eager op (an accept, a claim) is never held back, and takes the
    waiting lazy ones along; a lazy op at idle runs at once."""
    _settings, store, _buckets, _blobs = env(tmp_path)
    select_one = Statement("SELECT 1")

    def op(tx: Any) -> int:
        return int(tx.scalar(select_one, {}))

    async def main() -> None:
        writer = queue_module.Writer(store)
        writer.start()
        assert writer.direct is not None
        loop = asyncio.get_running_loop()
        try:
            assert await writer.run(op) == 1  # eager
            began = loop.time()
            lazy = [asyncio.ensure_future(writer.run(op, lazy=True)) for _ in range(10)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not any(f.done() for f in lazy)  # held for company
            assert await asyncio.gather(*lazy) == [1] * 10
            assert loop.time() - began >= writer.LAZY_WAIT * 0.9
            assert (writer.batches, writer.batched_ops) == (2, 11)  # the ten in one transaction

            await asyncio.sleep(writer.LAZY_WAIT * 5)
            more = [asyncio.ensure_future(writer.run(op, lazy=True)) for _ in range(5)]
            await asyncio.sleep(0)
            claimed = await asyncio.wait_for(writer.run(op), 1)  # eager: at once, with the five
            assert claimed == 1 and all(f.done() for f in more)
            assert (writer.batches, writer.batched_ops) == (3, 17)

            await asyncio.sleep(writer.LAZY_WAIT * 5)
            t0 = loop.time()
            assert await writer.run(op, lazy=True) == 1  # idle: no wait
            assert loop.time() - t0 < writer.LAZY_WAIT
        finally:
            await writer.stop()

    asyncio.run(main())


def test_loop_batches_wait_only_right_after_a_batch(tmp_path: Path) -> None:
    """Small outputs: the first batch after a quiet spell begins in the same pass of the loop; one
    right after another waits WAIT for company."""
    later = batches_module.ThreadBatches()
    began: list[int] = []

    @contextlib.contextmanager
    def now() -> Iterator[bool]:
        began.append(0)
        yield True

    batches = batches_module.LoopBatches(now, later)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await batches.run(lambda: "a") == "a"
        assert loop.time() - t0 < batches.WAIT and len(began) == 1
        t1 = loop.time()
        assert await asyncio.gather(*(batches.run(lambda i=i: i) for i in range(8))) == list(range(8))
        assert loop.time() - t1 >= batches.WAIT * 0.9
        assert len(began) == 2  # the eight in one batch
        assert (batches.batches, batches.batched_calls) == (2, 9)

    asyncio.run(main())
