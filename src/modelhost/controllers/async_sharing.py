"""The async queue with several front doors on one database: every door accepts, the leader dispatches.

A follower writes each accepted request as its Pending row (and its inline body's file under the
shared data dir) exactly as a single server does, but never dispatches: its in-memory copies are
dropped every pass. The leader's dispatcher recovers every unfinished row when it is promoted (the
recovery a restarted server runs) and, every pass after that, adopts the Pending rows written by
other front doors since. A row is claimed by a conditional update, so a request seen twice still
runs once.
"""

from __future__ import annotations

import asyncio
import json
import time

from sqlalchemy import func, select

from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.asyncq.items import Item
from modelhost.resources.endpoint import EndpointRecord
from modelhost.store import tables

T = tables.async_requests
SETTLE = 1.0  # seconds: a row younger than this may be this leader's own submission, not yet in its heap


class AsyncSharing:
    def __init__(self, asyncq: AsyncInference) -> None:
        self.asyncq = asyncq
        self.watermark = 0  # the highest seq this leader has seen

    async def start_accepting(self) -> None:
        """A follower: the row writer only (no recovery, no dispatcher)."""
        self.asyncq.rows.start()

    async def promote(self) -> None:
        """Recover every unfinished row and dispatch from now on."""
        self.watermark = await asyncio.to_thread(self._max_seq)
        await self.asyncq.start()

    async def follower_pass(self, records: list[EndpointRecord]) -> None:
        await self.asyncq.sync_endpoints(records)
        table = self.asyncq.table
        for ep in table.endpoints.values():
            ep.heap.clear()  # the leader runs them (they are rows)
        table.orphans.clear()

    async def leader_pass(self, _records: list[EndpointRecord]) -> None:
        """Queue the Pending rows other front doors accepted since the last pass (a second the oldest)."""
        # (the seqs first: with one front door, or a leader that accepts most, they are all known)
        seqs = await asyncio.to_thread(self._pending_after, self.watermark, time.time() - SETTLE)
        if not seqs:
            return
        table = self.asyncq.table
        known = {item.seq for ep in table.endpoints.values() for item in ep.heap}
        known.update(seq for ep in table.endpoints.values() for seq in ep.in_flight)
        known.update(item.seq for items in table.orphans.values() for item in items)
        self.watermark = seqs[-1]
        adopt = [seq for seq in seqs if seq not in known]
        if not adopt:
            return
        for row in await asyncio.to_thread(self._rows, adopt):
            if row["status"] != "Pending":
                continue  # (claimed meanwhile)
            spec = json.loads(row["spec"])
            body = bytes(row["body"]) if row["body"] is not None else None  # (the inline body is in the row)
            item = Item(
                row["seq"], row["inference_id"], row["endpoint"], row["received_time"], row["attempts"], spec, body
            )
            self.asyncq.dispatcher.queue(item)

    def _max_seq(self) -> int:
        with self.asyncq.store.begin() as conn:
            return int(conn.execute(select(func.max(T.c.seq))).scalar() or 0)

    def _pending_after(self, seq: int, received_before: float) -> list[int]:
        """Pending rows after ``seq`` up to the first received after ``received_before`` (a row
        younger than SETTLE may be this door's own, being queued right now: the next pass looks again)."""
        with self.asyncq.store.begin() as conn:
            rows = conn.execute(
                select(T.c.seq, T.c.received_time).where(T.c.status == "Pending", T.c.seq > seq).order_by(T.c.seq)
            )
            out = []
            for row_seq, received in rows:
                if received > received_before:
                    break
                out.append(int(row_seq))
            return out

    def _rows(self, seqs: list[int]) -> list[dict]:
        out: list[dict] = []
        with self.asyncq.store.begin() as conn:
            for i in range(0, len(seqs), 500):  # (bound parameters per statement)
                chosen = select(T).where(T.c.seq.in_(seqs[i : i + 500])).order_by(T.c.seq)
                out += [dict(r._mapping) for r in conn.execute(chosen)]
        return out
