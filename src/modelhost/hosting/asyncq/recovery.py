"""At start: finish, re-queue or fail what the previous run left, and clear its work files.

``Completing`` rows are finished (committer.py: the temp file there means install it, gone means
it was). ``InProgress`` rows (their run died with the server) go back to ``Pending`` and run
again, oldest first, or fail after ``MAX_ATTEMPTS`` interrupted runs (a payload that crashes its
instance every time). Finished rows whose notification was not yet sent send it now. Whatever
else is in the work directories belongs to no row (a crash before the row was written): removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

from modelhost.hosting.asyncq.committer import Committer
from modelhost.hosting.asyncq.endpoints import EndpointTable
from modelhost.hosting.asyncq.items import MAX_ATTEMPTS, Item, Tasks
from modelhost.hosting.asyncq.queue import RequestRows


async def recover(
    rows: RequestRows,
    table: EndpointTable,
    committer: Committer,
    tasks: Tasks,
    inputs_dir: Path,
    tmp_dir: Path,
) -> list[Item]:
    """Returns the requests to queue again, oldest first."""
    queued: list[Item] = []
    referenced: set[str] = set()
    for row in await asyncio.to_thread(rows.load_unfinished):
        spec = json.loads(row["spec"])
        body = bytes(row["body"]) if row.get("body") is not None else None
        item = Item(row["seq"], row["inference_id"], row["endpoint"], row["received_time"], row["attempts"], spec, body)
        status = row["status"]
        if status == "Completing":
            outcome = json.loads(row["outcome"])
            note = json.loads(row["notification"]) if row["notification"] else None
            await committer.finish(item, outcome, note, body)
        elif status in ("Pending", "InProgress"):
            if spec.get("inline"):
                referenced.add(spec["inline"])
            if status == "InProgress" and row["attempts"] >= MAX_ATTEMPTS:
                ep = table.get(item.endpoint)
                await committer.fail(
                    item,
                    ep.first_variant if ep else "",
                    f"InternalFailure: The request was interrupted {row['attempts']} times (server or "
                    "instance crashes) and was not retried again.",
                    from_status="InProgress",
                    any_owner=True,
                )
                continue
            if status == "InProgress":
                await rows.requeue(item.seq, uncount=False, any_owner=True)
            queued.append(item)
        elif row["notification"]:  # finished, notification not yet delivered
            variant = json.loads(row["outcome"] or "{}").get("variant", "")
            tasks.spawn(committer.deliver(item.seq, item.endpoint, variant, json.loads(row["notification"])))
    for directory, keep in ((inputs_dir, referenced), (tmp_dir, set())):
        for entry in os.scandir(directory):
            if entry.path not in keep:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return queued
