"""Handing queued requests to replicas, and what happens to a request on its way.

Each pass goes over the async endpoints with a backlog: requests leave their heap oldest first
(``seq``) for the least busy available replica of the endpoint's production variants, at most
``MaxConcurrentInvocationsPerInstance`` per replica (weights are not used for async). A request
is counted on its replica (``FleetHandle.claim``, so a scale-in drains it like a real-time one)
until its run ends. A run claims the row, expires it past its TTL, or exchanges it under
``InvocationTimeoutSeconds``; nothing reached the replica (ReplicaUnreachable): re-queued
uncounted; the replica went away (ReplicaLost): re-queued, or failed after ``MAX_ATTEMPTS``;
timed out: the replica is recycled and the request fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Sequence

from modelhost.backends.handle import FleetHandle, Replica, ReplicaLost, ReplicaUnreachable
from modelhost.hosting.asyncq.capture import capture_async
from modelhost.hosting.asyncq.committer import Committer
from modelhost.hosting.asyncq.endpoints import EndpointTable
from modelhost.hosting.asyncq.exchange import Exchange, Failure
from modelhost.hosting.asyncq.items import MAX_ATTEMPTS, AsyncEndpoint, Item, Tasks
from modelhost.hosting.asyncq.metrics import FleetsOf, QueueMetrics
from modelhost.hosting.asyncq.queue import RequestRows
from modelhost.hosting.capture import DataCapture

log = logging.getLogger("modelhost.async")

TICK = 0.5  # dispatcher re-check (instances coming and going) and gauge refresh


def pick(
    fleets: Sequence[tuple[str, FleetHandle]], slots: dict[Replica, int], limit: int
) -> tuple[str, FleetHandle, Replica] | None:
    """The available replica with the fewest requests of ours below ``limit`` (the first such in variant order)."""
    best: tuple[str, FleetHandle, Replica] | None = None
    fewest = limit
    for variant, fleet in fleets:
        for replica in fleet.replicas():
            if not replica.available:
                continue
            n = slots.get(replica, 0)
            if n < fewest:
                best, fewest = (variant, fleet, replica), n
    return best


class Dispatcher:
    def __init__(
        self,
        table: EndpointTable,
        fleets_of: FleetsOf,
        rows: RequestRows,
        exchange: Exchange,
        committer: Committer,
        metrics: QueueMetrics,
        tasks: Tasks,
        capture: DataCapture | None = None,
    ) -> None:
        self.table = table
        self.fleets_of = fleets_of
        self.rows = rows
        self.exchange = exchange
        self.committer = committer
        self.metrics = metrics
        self.tasks = tasks
        self.slots: dict[Replica, int] = {}  # replica -> requests this dispatcher has on it
        self.kick = asyncio.Event()
        self.stopping = False  # (as well as the cancel: before 3.12, wait_for may swallow a cancellation)
        self.capture = capture  # DataCaptureConfig on async endpoints too

    def wake(self) -> None:
        """Run a pass now (a request was queued, a slot came free, an endpoint changed)."""
        self.kick.set()

    def queue(self, item: Item) -> None:
        self.table.queue(item)
        self.kick.set()

    async def loop(self) -> None:
        gauges_at = 0.0
        while not self.stopping:
            if self.kick.is_set():
                await asyncio.sleep(0)  # (let the others run: no timer task when there is work already)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.kick.wait(), TICK)
            self.kick.clear()
            try:
                self.dispatch()
                now = time.monotonic()
                if now - gauges_at >= TICK:  # (a pass per finished request: the gauges need not follow each)
                    gauges_at = now
                    self.metrics.update_gauges(self.table.endpoints.values(), self.fleets_of)
            except Exception:
                log.exception("async dispatch pass failed")

    def dispatch(self) -> None:
        """One pass: start as many queued requests as the replicas' limits allow."""
        for ep in self.table.endpoints.values():
            if not ep.heap:
                continue
            fleets = self.fleets_of(ep.name)
            if fleets is None:
                continue
            limit = ep.concurrency
            while ep.heap:
                best = pick(fleets, self.slots, limit)
                if best is None:
                    break
                variant, fleet, replica = best
                item = heapq.heappop(ep.heap)
                ep.in_flight[item.seq] = item
                self.slots[replica] = self.slots.get(replica, 0) + 1
                fleet.claim(replica)
                self.tasks.spawn(self.run(ep, item, variant, fleet, replica))

    async def run(self, ep: AsyncEndpoint, item: Item, variant: str, fleet: FleetHandle, replica: Replica) -> None:
        """One run of a dispatched request, from the claim of its row to its outcome (or back in the queue)."""
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.slots.get(replica, 1) - 1
            if left > 0:
                self.slots[replica] = left
            else:
                self.slots.pop(replica, None)
            fleet.release(replica)
            self.kick.set()

        m = self.metrics.variant(ep.name, variant)
        spec = item.spec
        fail = self.committer.fail
        try:
            if not await self.rows.claim(item.seq, spec["timeout"]):
                return
            item.attempts += 1
            claimed = time.time()
            m.time_in_backlog.observe((claimed - item.received) * 1000)
            if claimed - item.received > spec["ttl"]:
                release()
                m.expired_requests.inc()
                await fail(
                    item,
                    variant,
                    f"ExpiredRequest: The request waited {claimed - item.received:.0f} seconds in the queue, longer "
                    f"than its RequestTTLSeconds ({spec['ttl']}).",
                )
                return
            try:
                exchange = self.exchange.run(item, fleet, replica, m)
                # (an inline body's one request carries the timeout to the fleet: no task and timer for it)
                result = await (exchange if item.body is not None else asyncio.wait_for(exchange, spec["timeout"]))
            except ReplicaUnreachable:
                fleet.mark_unreachable(replica)  # nothing was sent: run it elsewhere, this attempt does not count
                release()
                await self.rows.requeue(item.seq, uncount=True)
                item.attempts -= 1
                ep.in_flight.pop(item.seq, None)
                self.queue(item)
                return
            except ReplicaLost as exc:
                release()
                if item.attempts < MAX_ATTEMPTS:
                    fleet.log.write(
                        f"{variant}/async",
                        f"request {item.inference_id} lost its instance ({exc}); re-queued (attempt {item.attempts})",
                    )
                    await self.rows.requeue(item.seq, uncount=False)
                    ep.in_flight.pop(item.seq, None)
                    self.queue(item)
                    return
                m.invocation_failures.inc()
                await fail(
                    item,
                    variant,
                    f"ClientError: Received server error (0) from primary with "
                    f'message "The container primary failed: {exc}." after {item.attempts} attempts.',
                )
                return
            except TimeoutError:
                fleet.recycle(replica)  # its model may be hung; it is restarted
                release()
                m.invocation_failures.inc()
                await fail(
                    item,
                    variant,
                    'ClientError: Received server error (0) from primary with message "Your invocation timed out '
                    "while waiting for a response from container primary. Review the latency metrics for each "
                    f'container, resolve the issue, and try again. (InvocationTimeoutSeconds: {spec["timeout"]})". '
                    f"See the endpoint's logs (modelhost logs {ep.name}) for more information.",
                )
                return
            release()
            if isinstance(result, Failure):
                if result.download:
                    m.request_download_failures.inc()
                else:
                    m.invocation_failures.inc()
                await fail(item, variant, result.reason, result.body)
                return
            if self.capture is not None:
                await capture_async(self.capture, self.exchange.blobs, item, variant, result)
            await self.committer.succeed(item, variant, result)
        except asyncio.CancelledError:
            raise  # shutdown: the row stays InProgress and runs again at the next start
        except Exception as exc:
            log.exception("async request %s failed unexpectedly", item.inference_id)
            with contextlib.suppress(Exception):
                await fail(item, variant, f"InternalFailure: {type(exc).__name__}: {exc}")
        finally:
            release()
            ep.in_flight.pop(item.seq, None)
