"""The async queue's transactions per request, with and without the lazy wait (issue 15 §5).

The queue alone, in this one process: ``AsyncInference`` on a SQLite metadata DB and the embedded
bucket store, in front of a fake replica that answers at once (tests/unit/stream_fakes.py), so
what is counted is the queue's own work. ``--requests`` small requests are submitted by
``--clients`` concurrent callers and drained at ``MaxConcurrentInvocationsPerInstance``
``--concurrency``. Two settings, interleaved over ``--rounds``:

- ``lazy``: the defaults: the steps after an answer wait up to ``Writer.LAZY_WAIT`` for company,
  small-output batches ``LoopBatches.WAIT`` after the last one;
- ``eager``: both waits 0 (each step's transaction starts on the next pass of the loop, as before).

Per run: metadata transactions per request and operations per transaction (``Writer.batches``,
``batched_ops``), bucket-index batches on the loop and objects per batch (``LoopBatches``; the
batches a held index sends to the thread are not counted there), the
rate and the process's CPU per request. The process is pinned to one CPU (``--cpu``).

    .venv/bin/python bench/async_tx.py [--requests 3000] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.unit.stream_fakes import (  # noqa: E402
    StreamFleet,
    StreamReplica,
    async_config,
    endpoint_record,
    env,
    insert_endpoint,
    publish,
)

from modelhost.hosting.asyncq import AsyncInference  # noqa: E402
from modelhost.hosting.asyncq.batches import LoopBatches  # noqa: E402
from modelhost.hosting.asyncq.queue import Writer  # noqa: E402
from modelhost.hosting.router import Router  # noqa: E402
from modelhost.store import tables  # noqa: E402
from modelhost.store.db import MetadataStore  # noqa: E402

DEFAULT_WAITS = (Writer.LAZY_WAIT, LoopBatches.WAIT)


def completed(store: MetadataStore) -> int:
    t = tables.async_requests
    with store.begin() as conn:
        return int(conn.execute(select(func.count()).select_from(t).where(t.c.status == "Completed")).scalar_one())


async def one_run(tmp: Path, requests: int, clients: int, concurrency: int) -> dict:
    settings, store, _buckets, blobs = env(tmp)
    insert_endpoint(store, endpoint_record("ep", async_config("ep", concurrency)))
    router = Router(1)
    q = AsyncInference(settings, store, blobs, router)
    await q.start()
    try:
        writer, loop_batches = q.rows.writer, q.committer.now_batches
        publish(router, "ep", StreamFleet([StreamReplica("v/0", delay=0)]))
        gate = asyncio.Semaphore(clients)

        async def submit(i: int) -> None:
            async with gate:
                await q.submit("ep", {"InferenceId": f"r-{i}"}, b"x" * 100)

        t0, c0 = time.perf_counter(), time.process_time()
        b0, o0 = writer.batches, writer.batched_ops
        await asyncio.gather(*(submit(i) for i in range(requests)))
        while q.backlog("ep") > 0 or completed(store) < requests:  # (every row Completed: outputs written)
            await asyncio.sleep(0.01)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        tx, ops = writer.batches - b0, writer.batched_ops - o0
        return {
            "requests": requests,
            "metadata_transactions": tx,
            "transactions_per_request": tx / requests,
            "ops_per_transaction": ops / tx,
            "index_batches": loop_batches.batches,
            "objects_per_index_batch": loop_batches.batched_calls / max(loop_batches.batches, 1),
            "rps": requests / seconds,
            "cpu_ms_per_request": cpu / requests * 1000,
        }
    finally:
        await q.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4, help="MaxConcurrentInvocationsPerInstance")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpu", type=int, default=1, help="the CPU this process is pinned to (-1: unpinned)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "async_tx.json")
    args = ap.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    runs: list[dict] = []
    for r in range(args.rounds):
        for setting, waits in (("eager", (0.0, 0.0)), ("lazy", DEFAULT_WAITS)):
            Writer.LAZY_WAIT, LoopBatches.WAIT = waits
            with tempfile.TemporaryDirectory() as tmp:
                result = asyncio.run(one_run(Path(tmp), args.requests, args.clients, args.concurrency))
            runs.append({"round": r + 1, "setting": setting, "waits_s": waits, **result})
    Writer.LAZY_WAIT, LoopBatches.WAIT = DEFAULT_WAITS

    print(
        f"\nasync queue alone: {args.requests} x 100 B, {args.clients} callers, concurrency {args.concurrency}, "
        f"a fake replica; one process on CPU {args.cpu}"
    )
    cols = ("transactions_per_request", "ops_per_transaction", "objects_per_index_batch", "rps", "cpu_ms_per_request")
    print(f"{'round':<7}{'setting':<9}" + "".join(f"{c:>26}" for c in cols))
    for run in runs:
        print(f"{run['round']:<7}{run['setting']:<9}" + "".join(f"{run[c]:>26.3f}" for c in cols))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
