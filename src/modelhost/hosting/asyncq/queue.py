"""The durable rows of ``async_requests`` and the one writer every change goes through.

Row states: ``Pending --claim--> InProgress --> Completing --> Completed | Failed``. A claim sets
the lease (owner = this server run, ``attempts`` + 1); ``Completing`` holds the outcome and the
notification until step 2 of the commit (committer.py) is done. Every write is queued on the
group-commit ``Writer``: operations queued while a transaction runs share the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select

from modelhost.hosting.asyncq.sql import DirectSqlite, Statement, Tx
from modelhost.store import tables
from modelhost.store.db import MetadataStore

T = tables.async_requests
UNFINISHED = ("Pending", "InProgress", "Completing")

# The per-request statements, written out once and run on the driver's cursor (sql.py).
_INSERT = Statement(
    "INSERT INTO async_requests (inference_id, endpoint, status, received_time, attempts, spec, body) "
    "VALUES (:inference_id, :endpoint, 'Pending', :received, 0, :spec, :body) RETURNING seq"
)
_CLAIM = Statement(
    "UPDATE async_requests SET status = 'InProgress', lease_owner = :owner, lease_expires = :expires, "
    "attempts = attempts + 1 WHERE seq = :seq AND status = 'Pending'"
)
_REQUEUE = "UPDATE async_requests SET status = 'Pending', lease_owner = NULL, lease_expires = NULL{uncount} "
_REQUEUE_WHERE = "WHERE seq = :seq AND status = 'InProgress'"
_REQUEUES = {
    (uncount, any_owner): Statement(
        _REQUEUE.format(uncount=", attempts = attempts - 1" if uncount else "")
        + _REQUEUE_WHERE
        + ("" if any_owner else " AND lease_owner = :owner")
    )
    for uncount in (False, True)
    for any_owner in (False, True)
}
_COMPLETING = (
    "UPDATE async_requests SET status = 'Completing', outcome = :outcome, notification = :note, "
    "completed_time = :completed, body = :body WHERE seq = :seq AND status = :from_status"
)
_COMPLETING_OWNED = Statement(_COMPLETING + " AND lease_owner = :owner")
_COMPLETING_ANY = Statement(_COMPLETING)
_UPDATE_OUTCOME = Statement("UPDATE async_requests SET outcome = :outcome, notification = :note WHERE seq = :seq")
# (the row's body, the request's or the response's, is not needed once the request is finished)
_DONE = Statement(
    "UPDATE async_requests SET status = :status, lease_owner = NULL, lease_expires = NULL, body = NULL "
    "WHERE seq = :seq AND status = 'Completing'"
)
_RELEASE_ALL = Statement(
    "UPDATE async_requests SET status = 'Pending', lease_owner = NULL, lease_expires = NULL, "
    "attempts = attempts - 1 WHERE status = 'InProgress' AND lease_owner = :owner"
)
_NOTIFIED = Statement("UPDATE async_requests SET notification = NULL WHERE seq = :seq")

Op = Callable[[Tx], Any]


class Writer:
    """Group commit: operations queued while a transaction runs share the next one. On SQLite
    (``DirectSqlite``) each transaction runs on the event loop, unless another writer holds the
    database; then, and on other databases, in a thread.

    A ``lazy`` operation (the steps after a request's answer: nobody waits on them but its own
    commit) does not start a transaction before ``LAZY_WAIT`` after the last one began, so under
    load one transaction carries many of them; an eager one (an accept, a claim: a client or a
    replica slot waits) starts the next transaction at once and takes the lazy ones along."""

    CHECKPOINT_EVERY = 1.0  # seconds between checkpoints of the WAL the loop's commits grew
    LAZY_WAIT = 0.002  # seconds

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._ops: list[tuple[Op, asyncio.Future[Any]]] = []
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.direct: DirectSqlite | None = None  # (opened at start, closed at stop)
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpoint_at = 0.0
        self._dirty = False  # commits on the loop since the last checkpoint
        self._began = 0.0  # (loop time) when the last transaction began
        self._lazy: asyncio.TimerHandle | None = None  # wakes the loop for lazy ops alone
        self.batches = 0  # batches of ops run, and the ops in them (bench/async_tx.py reads them)
        self.batched_ops = 0

    def start(self) -> None:
        if self._task is None:  # a follower front door starts it before it is promoted (controllers/async_sharing.py)
            if self.direct is None and DirectSqlite.usable(self.store):
                self.direct = DirectSqlite(self.store)
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        deadline = time.monotonic() + 10
        while self._ops and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in (self._task, self._checkpoint):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._checkpoint = None
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        if self.direct is not None:
            if self._dirty:
                await asyncio.to_thread(self.direct.checkpoint)
            self.direct.close()
            self.direct = None

    async def run(self, op: Op, lazy: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._ops.append((op, fut))
        if not lazy:
            self._event.set()
        elif self._lazy is None and not self._event.is_set():
            self._lazy = loop.call_at(self._began + self.LAZY_WAIT, self._event.set)
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._event.wait()
            await asyncio.sleep(0)  # (one more pass of the loop: the ops it makes share this transaction)
            self._event.clear()
            if self._lazy is not None:
                self._lazy.cancel()
                self._lazy = None
            ops, self._ops = self._ops, []
            if not ops:
                continue
            self._began = loop.time()
            self.batches += 1
            self.batched_ops += len(ops)
            results = self._execute(ops)
            if len(results) < len(ops):  # (another writer has the database: wait for it in a thread)
                results += await asyncio.to_thread(self._execute_pooled, ops[len(results) :])
            for (_, fut), (ok, value) in zip(ops, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if self.direct is None or not self._dirty or now - self._checkpoint_at < self.CHECKPOINT_EVERY:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._checkpoint_at, self._dirty = now, False
        self._checkpoint = asyncio.create_task(asyncio.to_thread(self.direct.checkpoint))

    def _execute(self, ops: list[tuple[Op, Any]]) -> list[tuple[bool, Any]]:
        """The batch on the loop's connection: the results of the first ops, all of them unless
        the database was busy (the rest are for ``_execute_pooled``)."""
        direct = self.direct
        if direct is None:
            return []
        tx = direct.begin()
        if tx is None:
            return []
        try:
            done = [(True, op(tx)) for op, _ in ops]
            direct.commit()
            self._dirty = True
            return done
        except Exception:
            with contextlib.suppress(Exception):
                direct.rollback()
        # Something failed the batch (rolled back as a whole): each op in its own transaction.
        out: list[tuple[bool, Any]] = []
        for op, _ in ops:
            tx = direct.begin()
            if tx is None:
                return out  # (those done are committed: the others go to a thread)
            try:
                out.append((True, op(tx)))
                direct.commit()
                self._dirty = True
            except Exception as exc:
                with contextlib.suppress(Exception):
                    direct.rollback()
                out.append((False, exc))
        return out

    def _execute_pooled(self, ops: list[tuple[Op, Any]]) -> list[tuple[bool, Any]]:
        """(In a thread) the batch on a pooled connection, which waits for other writers."""
        try:
            with self.store.begin() as conn:
                tx = Tx.of(conn)
                return [(True, op(tx)) for op, _ in ops]
        except Exception:
            pass
        # Something failed the batch (rolled back as a whole): run each in its own transaction.
        out: list[tuple[bool, Any]] = []
        for op, _ in ops:
            try:
                with self.store.begin() as conn:
                    out.append((True, op(Tx.of(conn))))
            except Exception as exc:
                out.append((False, exc))
        return out


def _dumps(note: dict | None) -> str | None:
    return json.dumps(note) if note is not None else None


class RequestRows:
    """The row operations of one server run (``run_id`` owns its leases), each awaited through the writer."""

    def __init__(self, store: MetadataStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.writer = Writer(store)

    def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        """A graceful stop is no crash: what this run had in flight goes back to the queue uncounted."""
        await self.writer.run(self._release_all)
        await self.writer.stop()

    async def insert(
        self, inference_id: str, endpoint: str, received: float, spec: dict[str, Any], body: bytes | None
    ) -> int:
        """A new Pending row (with the inline body, if any); returns its ``seq`` (the queue order).
        Inserts queued together share one transaction: each caller returns once it is committed."""
        params = {
            "inference_id": inference_id,
            "endpoint": endpoint,
            "received": received,
            "spec": json.dumps(spec),
            "body": body,
        }

        def op(tx: Tx) -> int:
            return int(tx.scalar(_INSERT, params))

        return int(await self.writer.run(op))

    async def claim(self, seq: int, timeout: float) -> bool:
        """Pending -> InProgress under this run's lease; False if the row was not Pending."""
        params = {"seq": seq, "owner": self.run_id, "expires": time.time() + timeout + 60}

        def op(tx: Tx) -> bool:
            return tx.rowcount(_CLAIM, params) == 1

        return bool(await self.writer.run(op))

    async def requeue(self, seq: int, uncount: bool, any_owner: bool = False) -> None:
        """InProgress -> Pending; ``uncount`` takes the claim's attempt back (nothing ran)."""
        statement = _REQUEUES[(uncount, any_owner)]
        params = {"seq": seq} if any_owner else {"seq": seq, "owner": self.run_id}

        def op(tx: Tx) -> None:
            tx.execute(statement, params)

        await self.writer.run(op)

    def _release_all(self, tx: Tx) -> None:
        tx.execute(_RELEASE_ALL, {"owner": self.run_id})

    async def completing(
        self,
        seq: int,
        outcome: dict,
        note: dict | None,
        from_status: str,
        any_owner: bool = False,
        body: bytes | None = None,
    ) -> bool:
        """Commit step 1: ``from_status`` -> Completing with the outcome, and ``body`` (a small
        response, which replaces the request's; committer.py); False if the row was not there."""
        owned = from_status == "InProgress" and not any_owner
        statement = _COMPLETING_OWNED if owned else _COMPLETING_ANY
        params = {
            "seq": seq,
            "from_status": from_status,
            "outcome": json.dumps(outcome),
            "note": _dumps(note),
            "completed": outcome["time"],
            "body": body,
        }
        if owned:
            params["owner"] = self.run_id

        def op(tx: Tx) -> bool:
            return tx.rowcount(statement, params) == 1

        return bool(await self.writer.run(op, lazy=True))

    async def update_outcome(self, seq: int, outcome: dict, note: dict | None) -> None:
        params = {"seq": seq, "outcome": json.dumps(outcome), "note": _dumps(note)}

        def op(tx: Tx) -> None:
            tx.execute(_UPDATE_OUTCOME, params)

        await self.writer.run(op, lazy=True)

    async def done(self, seq: int, status: str) -> None:
        """Completing -> Completed | Failed (the end of the commit)."""

        def op(tx: Tx) -> None:
            tx.execute(_DONE, {"seq": seq, "status": status})

        await self.writer.run(op, lazy=True)

    async def notified(self, seq: int) -> None:
        def op(tx: Tx) -> None:
            tx.execute(_NOTIFIED, {"seq": seq})

        await self.writer.run(op, lazy=True)

    def load_unfinished(self) -> list[dict]:
        """(Blocking; at start) rows not yet finished, or finished with a notification not yet sent."""
        with self.store.begin() as conn:
            rows = conn.execute(
                select(T).where(or_(T.c.status.in_(UNFINISHED), T.c.notification.is_not(None))).order_by(T.c.seq)
            )
            return [dict(r._mapping) for r in rows]
