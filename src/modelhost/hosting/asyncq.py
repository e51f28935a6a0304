"""Asynchronous inference: a durable request queue, its dispatcher and the commit protocol.

Every accepted InvokeEndpointAsync request is a row of ``async_requests`` (written before the
202 goes out; an inline body is saved as a file under ``<data-dir>/async/inputs`` first). The
row moves through

    Pending --claim--> InProgress --(output in a temp file)--> Completing --> Completed | Failed

* **Claim.** The dispatcher hands each instance up to ``MaxConcurrentInvocationsPerInstance``
  requests, oldest first (``seq`` order). A claim sets the lease: the owner is this server run,
  and ``attempts`` counts the runs started. A request whose ``RequestTTLSeconds`` passed while
  it waited expires at its claim.
* **Exchange.** The input is streamed from its file to the instance socket and the response
  from the socket into a temp file (``backends/local/http.py: stream_request``): nothing is held whole,
  whatever the size. ``InvocationTimeoutSeconds`` bounds the whole exchange.
* **Commit, in two steps.** (1) ``Completing`` is written with the outcome (final status, temp
  file, ETag, content type, location, the notification to send); (2) the temp file is renamed
  onto the output key (atomic, ``BucketStore.commit``) and the row becomes ``Completed`` (or
  ``Failed``). A crash between the steps is finished at the next start: the temp file still
  there means the rename did not happen; gone means it did. So an output is written whole or
  not at all, and a request reaches ``Completed``/``Failed`` exactly once.
  With a configured S3 service (``MODELHOST_S3_ENDPOINT_URL``, ``remote``) the input object is
  streamed from that service, and step (2) uploads the temp file to it (one PUT, or a multipart
  upload whose completion is atomic) and then removes the temp file: a crash between the two
  uploads it again at the next start, to the same key, which is harmless.
* **Restart.** Rows ``InProgress`` (their run died with the server) go back to ``Pending`` and
  run again, oldest first; after ``MAX_ATTEMPTS`` interrupted runs a request fails instead of
  looping (a payload that crashes its instance every time). An instance that dies mid-request
  (connection lost) has its requests re-queued the same way, to run on another instance.
  The model may therefore *execute* a request more than once; it *completes* once.
* **Notifications** are stored with the outcome and sent after the commit (at least once: a
  crash before the send re-sends at the next start), see hosting/notify.py.

Output object: ``<S3OutputPath>[/<S3OutputPathExtension>]/<Filename or InferenceId.out>``;
failure object: ``<S3FailurePath>[/<S3OutputPathExtension>]/<Filename or InferenceId>-error.out``
holding the failure reason (text/plain). Without ``S3FailurePath`` a failure is reported only in
the error notification.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from sqlalchemy import Connection, or_, select

from modelhost.backends.local.http import ConnectError, ConnectionLost, StreamedResponse, stream_request
from modelhost.config import Settings
from modelhost.errors import ValidationError
from modelhost.hosting import notify
from modelhost.hosting.metrics import (
    APPROXIMATE_AGE_OF_OLDEST_REQUEST,
    APPROXIMATE_BACKLOG_SIZE,
    APPROXIMATE_BACKLOG_SIZE_PER_INSTANCE,
    HAS_BACKLOG_WITHOUT_CAPACITY,
    AsyncVariantMetrics,
)
from modelhost.hosting.router import Router
from modelhost.store import tables
from modelhost.store.buckets import BucketStore, ObjectAttrs, S3StoreError, check_key
from modelhost.store.db import MetadataStore
from modelhost.store.remote_s3 import RemoteS3

log = logging.getLogger("modelhost.async")

MAX_ATTEMPTS = 3  # interrupted runs (server or instance crash) before a request fails
DEFAULT_CONCURRENCY = 4  # MaxConcurrentInvocationsPerInstance when the config leaves it to us
DEFAULT_TTL = 21600
DEFAULT_TIMEOUT = 900
INLINE_MAX = 128000
CHUNK = 1024 * 1024
TICK = 0.5  # dispatcher re-check (instances coming and going) and gauge refresh
REFRESH = 1.0  # async endpoint table refresh
EMBED_LIMIT = 128 * 1024  # IncludeInferenceResponseIn: responses up to 128 KB
ERROR_KEEP = 64 * 1024  # bytes of a model's error answer kept for the failure reason
LIVE = ("InService", "Updating", "SystemUpdating", "RollingBack")
UNFINISHED = ("Pending", "InProgress", "Completing")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def join_uri(base: str, *parts: str | None) -> str:
    out = base.rstrip("/")
    for p in parts:
        if p:
            out += "/" + p.strip("/")
    return out


def _iso(t: float) -> str:
    return notify.iso_millis(t)


@dataclass
class Item:
    """A queued or running request (the row, in memory)."""

    seq: int
    inference_id: str
    endpoint: str
    received: float
    attempts: int
    spec: dict[str, Any]
    body: bytes | None = None  # an inline body accepted by this run (also saved in its file)

    def __lt__(self, other: Item) -> bool:
        return self.seq < other.seq


@dataclass
class AsyncEndpoint:
    name: str
    status: str
    config: dict[str, Any]
    variants: list[str]
    heap: list[Item] = field(default_factory=list)
    in_flight: dict[int, Item] = field(default_factory=dict)

    @property
    def concurrency(self) -> int:
        client = self.config.get("ClientConfig") or {}
        return int(client.get("MaxConcurrentInvocationsPerInstance") or DEFAULT_CONCURRENCY)

    @property
    def backlog(self) -> int:
        return len(self.heap) + len(self.in_flight)


class _Writer:
    """Group commit: operations queued while a transaction runs share the next one."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._ops: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        deadline = time.monotonic() + 10
        while self._ops and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self, op: Callable[[Connection], Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append((op, fut))
        self._event.set()
        return await fut

    async def _loop(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            ops, self._ops = self._ops, []
            if not ops:
                continue
            results = await asyncio.to_thread(self._execute, ops)
            for (_, fut), (ok, value) in zip(ops, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _execute(self, ops: list[tuple[Callable[[Connection], Any], Any]]) -> list[tuple[bool, Any]]:
        try:
            with self.store.begin() as conn:
                return [(True, op(conn)) for op, _ in ops]
        except Exception:
            pass
        # Something failed the batch (rolled back as a whole): run each in its own transaction.
        out: list[tuple[bool, Any]] = []
        for op, _ in ops:
            try:
                with self.store.begin() as conn:
                    out.append((True, op(conn)))
            except Exception as exc:
                out.append((False, exc))
        return out


T = tables.async_requests


class AsyncInference:
    """The queue, the dispatcher, recovery and notifications of every async endpoint."""

    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        buckets: BucketStore,
        router: Router,
        remote: RemoteS3 | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.buckets = buckets
        self.remote = remote  # a configured S3 service holds every s3:// input and output object
        self.router = router
        self.run_id = uuid.uuid4().hex
        self.endpoints: dict[str, AsyncEndpoint] = {}
        self.names: set[str] = set()  # async endpoint names: InvokeEndpoint refuses these
        self.known: set[str] = set()  # every endpoint name
        self.notifier = notify.Notifier(settings.sns_endpoint_url, settings.region)
        self.inputs_dir = settings.async_dir / "inputs"
        self.tmp_dir = settings.async_dir / "tmp"
        self._writer = _Writer(store)
        self._kick = asyncio.Event()
        self._refreshed = asyncio.Event()
        self._slots: dict[Any, int] = {}  # instance -> requests this dispatcher has on it
        self._tasks: set[asyncio.Task[Any]] = set()
        self._metrics: dict[tuple[str, str], AsyncVariantMetrics] = {}
        self._tested: set[tuple[str, float]] = set()  # (arn, creation time) sent a TestNotification
        self._main: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._orphans: dict[str, list[Item]] = {}  # queued for an endpoint not (yet) seen
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._writer.start()
        await self._refresh(initial=True)
        await self._recover()
        self._main = [asyncio.create_task(self._dispatch_loop()), asyncio.create_task(self._refresh_loop())]

    async def stop(self) -> None:
        # (a flag as well as the cancel: before 3.12, wait_for may swallow a cancellation)
        self._stopping = True
        for task in self._main:
            task.cancel()
        running = list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*self._main, *running, return_exceptions=True)
        # A graceful stop is no crash: what this run had in flight goes back to the queue uncounted.
        await self._writer.run(self._op_release_all)
        await self._writer.stop()

    def wake(self) -> None:
        """Thread-safe: re-read the endpoint table now (CreateEndpoint, DeleteEndpoint, ...)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._refreshed.set)

    def backlog(self, endpoint: str) -> int | None:
        """Queued plus in-flight requests of an async endpoint (None for other endpoints)."""
        ep = self.endpoints.get(endpoint)
        return ep.backlog if ep is not None else None

    # --- the endpoint table ------------------------------------------------------------------

    def _load_endpoints(self) -> list[dict]:
        with self.store.begin() as conn:
            return self.store.all(conn, tables.endpoints)

    async def _refresh_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._refreshed.wait(), REFRESH)
            self._refreshed.clear()
            try:
                await self._refresh()
            except Exception:
                log.exception("async endpoint refresh failed")

    async def _refresh(self, initial: bool = False) -> None:
        rows = await asyncio.to_thread(self._load_endpoints)
        seen: dict[str, AsyncEndpoint] = {}
        known = set()
        for row in rows:
            known.add(row["name"])
            config = row["deployment"]["current"]["config"]
            async_config = config.get("AsyncInferenceConfig")
            if async_config is None:
                continue
            ep = self.endpoints.get(row["name"])
            variants = [v["VariantName"] for v in config["ProductionVariants"]]
            if ep is None:
                ep = AsyncEndpoint(row["name"], row["status"], async_config, variants)
                for item in self._orphans.pop(row["name"], []):
                    heapq.heappush(ep.heap, item)
            ep.status, ep.config, ep.variants = row["status"], async_config, variants
            seen[row["name"]] = ep
            marker = (row["arn"], row["creation_time"])
            if row["status"] == "Creating" and marker not in self._tested:
                self._tested.add(marker)
                if not initial:
                    self._spawn(self._test_notifications(ep))
        gone = [ep for name, ep in self.endpoints.items() if name not in seen]
        self.endpoints = seen
        self.names.intersection_update(seen)
        self.names.update(seen)
        self.known = known
        for ep in gone:  # deleted (or no longer async): what still waits there fails visibly
            for item in ep.heap:
                if ep.name in known:
                    self._orphans.setdefault(ep.name, []).append(item)
                else:
                    self._spawn(
                        self._fail(
                            item,
                            self._variant(ep),
                            "InternalFailure: The endpoint was deleted before the request was processed.",
                            from_status="Pending",
                        )
                    )
            ep.heap = []
        for name in [n for n in self._orphans if n not in known]:
            for item in self._orphans.pop(name):
                self._spawn(
                    self._fail(
                        item,
                        "",
                        "InternalFailure: The endpoint was deleted before the request was processed.",
                        from_status="Pending",
                    )
                )
        self._kick.set()

    async def _test_notifications(self, ep: AsyncEndpoint) -> None:
        topics = (ep.config.get("OutputConfig") or {}).get("NotificationConfig") or {}
        for topic in dict.fromkeys(t for t in (topics.get("SuccessTopic"), topics.get("ErrorTopic")) if t):
            if not await self.notifier.send(topic, notify.TEST_NOTIFICATION):
                self._variant_metrics(ep.name, self._variant(ep)).notification_failures.inc()

    async def _endpoint(self, name: str) -> AsyncEndpoint:
        ep = self.endpoints.get(name)
        if ep is None or ep.status not in LIVE:
            await self._refresh()
            ep = self.endpoints.get(name)
        account = self.settings.account_id
        if ep is None:
            if name in self.known:
                raise ValidationError(
                    f"Endpoint {name} of account {account} is not an asynchronous inference endpoint: its endpoint "
                    "configuration has no AsyncInferenceConfig. Use InvokeEndpoint."
                )
            raise ValidationError(f"Endpoint {name} of account {account} not found.")
        if ep.status not in LIVE:
            raise ValidationError(f"Endpoint {name} of account {account} is not in service (status {ep.status}).")
        return ep

    @staticmethod
    def _variant(ep: AsyncEndpoint) -> str:
        return ep.variants[0] if ep.variants else ""

    def _variant_metrics(self, endpoint: str, variant: str) -> AsyncVariantMetrics:
        key = (endpoint, variant)
        m = self._metrics.get(key)
        if m is None:
            m = self._metrics[key] = AsyncVariantMetrics.for_variant(endpoint, variant)
        return m

    # --- accepting requests ------------------------------------------------------------------

    async def submit(self, name: str, params: dict[str, Any], body: bytes | None) -> dict[str, str]:
        """Persist one request and queue it; returns InferenceId, OutputLocation, FailureLocation."""
        ep = await self._endpoint(name)
        output_config = ep.config.get("OutputConfig") or {}
        inference_id = params.get("InferenceId") or str(uuid.uuid4())
        extension = params.get("S3OutputPathExtension")
        filename = params.get("Filename")
        output = join_uri(output_config["S3OutputPath"], extension, filename or f"{inference_id}.out")
        failure = (
            join_uri(output_config["S3FailurePath"], extension, f"{filename or inference_id}-error.out")
            if output_config.get("S3FailurePath")
            else None
        )
        for uri in (output, failure):
            if uri is not None:
                try:
                    check_key(split_s3(uri)[1])
                except S3StoreError as exc:
                    raise ValidationError(f"The output location {uri} is not a valid object key: {exc}") from None
        topics = output_config.get("NotificationConfig") or {}
        spec: dict[str, Any] = {
            "input": params.get("InputLocation"),
            "inline": None,
            "content_type": params.get("ContentType"),
            "accept": params.get("Accept"),
            "custom_attributes": params.get("CustomAttributes"),
            "ttl": int(params.get("RequestTTLSeconds") or DEFAULT_TTL),
            "timeout": int(params.get("InvocationTimeoutSeconds") or DEFAULT_TIMEOUT),
            "output": output,
            "failure": failure,
            "success_topic": topics.get("SuccessTopic"),
            "error_topic": topics.get("ErrorTopic"),
            "include": topics.get("IncludeInferenceResponseIn") or [],
        }
        if body is not None:
            path = self.inputs_dir / uuid.uuid4().hex
            await asyncio.to_thread(path.write_bytes, body)
            spec["inline"] = str(path)
        received = round(time.time(), 3)

        def insert(conn: Connection) -> int:
            result = conn.execute(
                T.insert().values(
                    inference_id=inference_id,
                    endpoint=ep.name,
                    status="Pending",
                    received_time=received,
                    attempts=0,
                    spec=json.dumps(spec),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        seq = await self._writer.run(insert)
        heapq.heappush(ep.heap, Item(seq, inference_id, ep.name, received, 0, spec, body))
        self._kick.set()
        out = {"InferenceId": inference_id, "OutputLocation": output}
        if failure is not None:
            out["FailureLocation"] = failure
        return out

    # --- recovery ----------------------------------------------------------------------------

    def _load_unfinished(self) -> list[dict]:
        with self.store.begin() as conn:
            rows = conn.execute(
                select(T).where(or_(T.c.status.in_(UNFINISHED), T.c.notification.is_not(None))).order_by(T.c.seq)
            )
            return [dict(r._mapping) for r in rows]

    async def _recover(self) -> None:
        rows = await asyncio.to_thread(self._load_unfinished)
        referenced: set[str] = set()
        for row in rows:
            spec = json.loads(row["spec"])
            item = Item(row["seq"], row["inference_id"], row["endpoint"], row["received_time"], row["attempts"], spec)
            status = row["status"]
            if status == "Completing":
                outcome = json.loads(row["outcome"])
                note = json.loads(row["notification"]) if row["notification"] else None
                await self._finish(item, outcome, note)
            elif status in ("Pending", "InProgress"):
                if spec.get("inline"):
                    referenced.add(spec["inline"])
                if status == "InProgress" and row["attempts"] >= MAX_ATTEMPTS:
                    ep = self.endpoints.get(item.endpoint)
                    await self._fail(
                        item,
                        self._variant(ep) if ep else "",
                        f"InternalFailure: The request was interrupted {row['attempts']} times (server or "
                        "instance crashes) and was not retried again.",
                        from_status="InProgress",
                        any_owner=True,
                    )
                    continue
                if status == "InProgress":
                    await self._writer.run(self._op_requeue(item.seq, uncount=False, any_owner=True))
                self._queue(item)
            elif row["notification"]:  # finished, notification not yet delivered
                variant = json.loads(row["outcome"] or "{}").get("variant", "")
                self._spawn(self._deliver(item.seq, item.endpoint, variant, json.loads(row["notification"])))
        # Whatever else is in the work dirs belongs to nothing: a crash before the row was written.
        for directory, keep in ((self.inputs_dir, referenced), (self.tmp_dir, set())):
            for entry in os.scandir(directory):
                if entry.path not in keep:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _queue(self, item: Item) -> None:
        ep = self.endpoints.get(item.endpoint)
        if ep is None:
            self._orphans.setdefault(item.endpoint, []).append(item)
        else:
            heapq.heappush(ep.heap, item)
        self._kick.set()

    # --- database operations (run by the group-commit writer) --------------------------------

    def _op_claim(self, seq: int, timeout: float) -> Callable[[Connection], bool]:
        def op(conn: Connection) -> bool:
            result = conn.execute(
                T.update()
                .where(T.c.seq == seq, T.c.status == "Pending")
                .values(
                    status="InProgress",
                    lease_owner=self.run_id,
                    lease_expires=time.time() + timeout + 60,
                    attempts=T.c.attempts + 1,
                )
            )
            return bool(result.rowcount == 1)

        return op

    def _op_requeue(self, seq: int, uncount: bool, any_owner: bool = False) -> Callable[[Connection], None]:
        def op(conn: Connection) -> None:
            where = [T.c.seq == seq, T.c.status == "InProgress"]
            if not any_owner:
                where.append(T.c.lease_owner == self.run_id)
            values: dict[str, Any] = {"status": "Pending", "lease_owner": None, "lease_expires": None}
            if uncount:
                values["attempts"] = T.c.attempts - 1
            conn.execute(T.update().where(*where).values(**values))

        return op

    def _op_release_all(self, conn: Connection) -> None:
        conn.execute(
            T.update()
            .where(T.c.status == "InProgress", T.c.lease_owner == self.run_id)
            .values(status="Pending", lease_owner=None, lease_expires=None, attempts=T.c.attempts - 1)
        )

    def _op_completing(
        self, seq: int, outcome: dict, note: dict | None, from_status: str, any_owner: bool = False
    ) -> Callable[[Connection], bool]:
        def op(conn: Connection) -> bool:
            where = [T.c.seq == seq, T.c.status == from_status]
            if from_status == "InProgress" and not any_owner:
                where.append(T.c.lease_owner == self.run_id)
            result = conn.execute(
                T.update()
                .where(*where)
                .values(
                    status="Completing",
                    outcome=json.dumps(outcome),
                    notification=json.dumps(note) if note is not None else None,
                    completed_time=outcome["time"],
                )
            )
            return bool(result.rowcount == 1)

        return op

    def _op_update_outcome(self, seq: int, outcome: dict, note: dict | None) -> Callable[[Connection], None]:
        def op(conn: Connection) -> None:
            conn.execute(
                T.update()
                .where(T.c.seq == seq)
                .values(outcome=json.dumps(outcome), notification=json.dumps(note) if note is not None else None)
            )

        return op

    @staticmethod
    def _op_done(seq: int, status: str) -> Callable[[Connection], None]:
        def op(conn: Connection) -> None:
            conn.execute(
                T.update()
                .where(T.c.seq == seq, T.c.status == "Completing")
                .values(status=status, lease_owner=None, lease_expires=None)
            )

        return op

    @staticmethod
    def _op_notified(seq: int) -> Callable[[Connection], None]:
        def op(conn: Connection) -> None:
            conn.execute(T.update().where(T.c.seq == seq).values(notification=None))

        return op

    # --- dispatch ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), TICK)
            self._kick.clear()
            try:
                self._dispatch()
                self._gauges()
            except Exception:
                log.exception("async dispatch pass failed")

    def _dispatch(self) -> None:
        for ep in self.endpoints.values():
            if not ep.heap:
                continue
            route = self.router.routes.get(ep.name)
            if route is None:
                continue
            limit = ep.concurrency
            while ep.heap:
                best = None
                for variant in route.variants:
                    for inst in variant.fleet.replicas():
                        if not inst.available:
                            continue
                        n = self._slots.get(inst, 0)
                        if n < limit and (best is None or n < best[2]):
                            best = (variant, inst, n)
                if best is None:
                    break
                variant, inst, n = best
                item = heapq.heappop(ep.heap)
                ep.in_flight[item.seq] = item
                self._slots[inst] = n + 1
                inst.outstanding += 1  # a scale-in drains it like a real-time request
                self._spawn(self._run(ep, item, variant, inst))

    def _gauges(self) -> None:
        now = time.time()
        for ep in self.endpoints.values():
            backlog = ep.backlog
            route = self.router.routes.get(ep.name)
            instances = sum(v.fleet.size for v in route.variants) if route is not None else 0
            oldest = min(
                [i.received for i in ep.in_flight.values()] + ([ep.heap[0].received] if ep.heap else []), default=None
            )
            APPROXIMATE_BACKLOG_SIZE.labels(ep.name).set(backlog)
            APPROXIMATE_BACKLOG_SIZE_PER_INSTANCE.labels(ep.name).set(backlog / instances if instances else backlog)
            APPROXIMATE_AGE_OF_OLDEST_REQUEST.labels(ep.name).set(now - oldest if oldest is not None else 0)
            HAS_BACKLOG_WITHOUT_CAPACITY.labels(ep.name).set(1 if backlog and not instances else 0)

    async def _run(self, ep: AsyncEndpoint, item: Item, variant: Any, inst: Any) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._slots.get(inst, 1) - 1
            if left > 0:
                self._slots[inst] = left
            else:
                self._slots.pop(inst, None)
            inst.outstanding -= 1
            self._kick.set()

        m = self._variant_metrics(ep.name, variant.name)
        spec = item.spec
        try:
            if not await self._writer.run(self._op_claim(item.seq, spec["timeout"])):
                return
            item.attempts += 1
            claimed = time.time()
            m.time_in_backlog.observe((claimed - item.received) * 1000)
            if claimed - item.received > spec["ttl"]:
                release()
                m.expired_requests.inc()
                await self._fail(
                    item,
                    variant.name,
                    f"ExpiredRequest: The request waited {claimed - item.received:.0f} seconds in the queue, longer "
                    f"than its RequestTTLSeconds ({spec['ttl']}).",
                )
                return
            try:
                result = await asyncio.wait_for(self._exchange(item, inst, m), spec["timeout"])
            except ConnectError:
                inst.healthy = False  # nothing was sent: run it elsewhere, this attempt does not count
                release()
                await self._writer.run(self._op_requeue(item.seq, uncount=True))
                item.attempts -= 1
                ep.in_flight.pop(item.seq, None)
                self._queue(item)
                return
            except ConnectionLost as exc:
                release()
                if item.attempts < MAX_ATTEMPTS:
                    variant.fleet.log.write(
                        f"{variant.name}/async",
                        f"request {item.inference_id} lost its instance ({exc}); re-queued (attempt {item.attempts})",
                    )
                    await self._writer.run(self._op_requeue(item.seq, uncount=False))
                    ep.in_flight.pop(item.seq, None)
                    self._queue(item)
                    return
                m.invocation_failures.inc()
                await self._fail(
                    item,
                    variant.name,
                    f"ClientError: Received server error (0) from primary with "
                    f'message "The container primary failed: {exc}." after {item.attempts} attempts.',
                )
                return
            except asyncio.TimeoutError:
                variant.fleet.recycle(inst)  # its model may be hung; it is restarted
                release()
                m.invocation_failures.inc()
                await self._fail(
                    item,
                    variant.name,
                    'ClientError: Received server error (0) from primary with message "Your invocation timed out '
                    "while waiting for a response from container primary. Review the latency metrics for each "
                    f'container, resolve the issue, and try again. (InvocationTimeoutSeconds: {spec["timeout"]})". '
                    f"See the endpoint's logs (modelhost logs {ep.name}) for more information.",
                )
                return
            release()
            if isinstance(result, _Failure):
                if result.download:
                    m.request_download_failures.inc()
                else:
                    m.invocation_failures.inc()
                await self._fail(item, variant.name, result.reason, result.body)
                return
            await self._succeed(item, variant.name, result)
        except asyncio.CancelledError:
            raise  # shutdown: the row stays InProgress and runs again at the next start
        except Exception as exc:
            log.exception("async request %s failed unexpectedly", item.inference_id)
            with contextlib.suppress(Exception):
                await self._fail(item, variant.name, f"InternalFailure: {type(exc).__name__}: {exc}")
        finally:
            release()
            ep.in_flight.pop(item.seq, None)

    async def _exchange(self, item: Item, inst: Any, m: AsyncVariantMetrics) -> _Success | _Failure:
        spec = item.spec
        started = time.perf_counter()
        f: _Readable | None = None
        if item.body is not None:  # small, already in memory: no file to read
            size, chunks = len(item.body), _one_chunk(item.body)
        else:
            try:
                opened, size = await asyncio.to_thread(self._open_input, spec)
            except _DownloadFailed as exc:
                return _Failure(str(exc), download=True)
            f, chunks = opened, _file_chunks(opened)
        headers: list[tuple[bytes, bytes]] = []
        for name, key in (
            (b"content-type", "content_type"),
            (b"accept", "accept"),
            (b"x-amzn-sagemaker-custom-attributes", "custom_attributes"),
        ):
            if spec.get(key) is not None:
                headers.append((name, spec[key].encode("latin-1")))
        headers.append((b"x-amzn-sagemaker-inference-id", item.inference_id.encode("latin-1")))
        resp: StreamedResponse | None = None
        try:
            resp = await stream_request(str(inst.socket_path), b"POST", b"/invocations", headers, size, chunks)
            m.request_download_latency.observe((time.perf_counter() - started) * 1e6)
            if resp.status >= 300:
                body = await resp.read_all(ERROR_KEEP)
                message = body.decode("utf-8", "replace")
                kind = "client" if 400 <= resp.status < 500 else "server"
                return _Failure(
                    f'ClientError: Received {kind} error ({resp.status}) from primary with message "{message}". '
                    f"See the endpoint's logs (modelhost logs {item.endpoint}) for more information.",
                    body=body,
                )
            content_type = resp.headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            return await self._receive(resp, content_type)
        finally:
            if resp is not None:
                resp.close()
            if f is not None:
                await asyncio.to_thread(f.close)

    def _open_input(self, spec: dict) -> tuple[_Readable, int]:
        if spec.get("inline"):
            path = Path(spec["inline"])
            where = "the inline request body"
        elif self.remote is not None:
            where = spec["input"]
            try:
                stream = self.remote.open_stream(where)
            except FileNotFoundError:
                raise _DownloadFailed(
                    f"RequestDownloadFailure: Could not download {where}: the object does not exist."
                ) from None
            except OSError as exc:
                raise _DownloadFailed(f"RequestDownloadFailure: Could not download {where}: {exc}") from None
            return stream, stream.size
        else:
            bucket, key = split_s3(spec["input"])
            where = spec["input"]
            try:
                path = self.buckets.object_path(bucket, key)
            except S3StoreError as exc:
                raise _DownloadFailed(f"RequestDownloadFailure: Could not download {where}: {exc}") from None
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise _DownloadFailed(
                f"RequestDownloadFailure: Could not download {where}: the object does not exist."
            ) from None
        return f, os.fstat(f.fileno()).st_size

    async def _receive(self, resp: StreamedResponse, content_type: str) -> _Success:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="out-")
        md5 = hashlib.md5()
        size = 0
        head = bytearray()  # the first EMBED_LIMIT + 1 bytes, for IncludeInferenceResponseIn
        pending: list[bytes] = []
        buffered = 0
        f = os.fdopen(fd, "wb")

        def flush(parts: list[bytes], last: bool = False) -> None:
            for p in parts:
                f.write(p)
                md5.update(p)
            if last:
                f.close()

        try:
            async for chunk in resp.chunks():
                size += len(chunk)
                if len(head) <= EMBED_LIMIT:
                    head += chunk[: EMBED_LIMIT + 1 - len(head)]
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= CHUNK:
                    parts, pending, buffered = pending, [], 0
                    await asyncio.to_thread(flush, parts)
            await asyncio.to_thread(flush, pending, True)
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        embedded = bytes(head) if size <= EMBED_LIMIT else None
        return _Success(name, md5.hexdigest(), size, content_type, embedded)

    # --- outcomes ----------------------------------------------------------------------------

    def _notification(self, item: Item, outcome: dict) -> dict[str, Any] | None:
        spec = item.spec
        ok = outcome["status"] == "Completed"
        topic = spec.get("success_topic") if ok else spec.get("error_topic")
        embedded = outcome.pop("embedded", None)  # only ever part of the message, never stored alone
        if not topic:
            return None
        request: dict[str, Any] = {}
        if ok and spec.get("content_type") is not None:
            request["contentType"] = spec["content_type"]
        request["endpointName"] = item.endpoint
        if spec.get("input"):
            request["inputLocation"] = spec["input"]
        message: dict[str, Any] = {
            "awsRegion": self.settings.region,
            "eventTime": _iso(outcome["time"]),
            "receivedTime": _iso(item.received),
            "invocationStatus": "Completed" if ok else "Failed",
        }
        if not ok:
            message["failureReason"] = outcome["reason"]
        message["requestParameters"] = request
        if ok:
            message["responseParameters"] = {
                "contentType": outcome["content_type"],
                "outputLocation": outcome["location"],
            }
        elif outcome.get("location"):
            message["responseParameters"] = {"failureLocation": outcome["location"]}
        message.update(
            inferenceId=item.inference_id, eventVersion="1.0", eventSource="aws:sagemaker", eventName="InferenceResult"
        )
        wanted = "SUCCESS_NOTIFICATION_TOPIC" if ok else "ERROR_NOTIFICATION_TOPIC"
        if wanted in spec.get("include", []) and embedded is not None:
            # The key is not documented [unverified]: UTF-8 text as is, anything else base64.
            try:
                message["responseBody"] = {"content": base64.b64decode(embedded).decode("utf-8"), "encoding": "UTF8"}
            except UnicodeDecodeError:
                message["responseBody"] = {"content": embedded, "encoding": "BASE64"}
        return {"topic": topic, "message": json.dumps(message)}

    async def _succeed(self, item: Item, variant: str, result: _Success) -> None:
        outcome: dict[str, Any] = {
            "status": "Completed",
            "time": round(time.time(), 3),
            "tmp": result.tmp,
            "etag": result.etag,
            "size": result.size,
            "content_type": result.content_type,
            "location": item.spec["output"],
            "variant": variant,
        }
        if result.embedded is not None:
            outcome["embedded"] = base64.b64encode(result.embedded).decode()
        note = self._notification(item, outcome)
        if not await self._writer.run(self._op_completing(item.seq, outcome, note, "InProgress")):
            with contextlib.suppress(OSError):
                os.unlink(result.tmp)  # the lease was lost (cannot happen with one server); drop it
            return
        await self._finish(item, outcome, note)

    async def _fail(
        self,
        item: Item,
        variant: str,
        reason: str,
        body: bytes | None = None,
        from_status: str = "InProgress",
        any_owner: bool = False,
    ) -> None:
        outcome = await self._failure_outcome(item, variant, reason, body)
        note = self._notification(item, outcome)
        if not await self._writer.run(self._op_completing(item.seq, outcome, note, from_status, any_owner)):
            if outcome.get("tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(outcome["tmp"])
            return
        await self._finish(item, outcome, note)

    async def _failure_outcome(self, item: Item, variant: str, reason: str, body: bytes | None) -> dict[str, Any]:
        outcome: dict[str, Any] = {
            "status": "Failed",
            "time": round(time.time(), 3),
            "reason": reason[:8192],
            "location": item.spec.get("failure"),
            "content_type": "text/plain",
            "variant": variant,
            "tmp": None,
        }
        if body is not None and len(body) <= EMBED_LIMIT:
            outcome["embedded"] = base64.b64encode(body).decode()
        if outcome["location"]:
            data = reason.encode("utf-8")

            def write() -> str:
                fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="err-")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return name

            outcome["tmp"] = await asyncio.to_thread(write)
            outcome["etag"] = hashlib.md5(data).hexdigest()
            outcome["size"] = len(data)
        return outcome

    def _install(self, outcome: dict) -> None:
        """Step 2 of the commit: the temp file onto the key (or, if that already happened before
        a crash, make sure the metadata index describes it)."""
        location, tmp = outcome.get("location"), outcome.get("tmp")
        if not location or not tmp:
            return
        if self.remote is not None:
            # Upload, then drop the temp file: still there after a crash means upload (again).
            if os.path.exists(tmp):
                self.remote.put_file(location, Path(tmp), outcome["content_type"])
                os.unlink(tmp)
            return
        bucket, key = split_s3(location)
        attrs = ObjectAttrs(content_type=outcome["content_type"])
        if os.path.exists(tmp):
            self.buckets.commit(bucket, key, Path(tmp), outcome["etag"], attrs)
            return
        with contextlib.suppress(OSError, S3StoreError):
            path = self.buckets.object_path(bucket, key)
            st = path.stat()
            if st.st_size == outcome["size"]:
                self.buckets.index.put(bucket, key, st, outcome["etag"], attrs)

    async def _finish(self, item: Item, outcome: dict, note: dict | None) -> None:
        """Commit step 2, then Completed/Failed; then the notification and the inline input."""
        variant = outcome.get("variant", "")
        m = self._variant_metrics(item.endpoint, variant)
        started = time.perf_counter()
        inline = item.spec.get("inline")

        def install_and_drop_input() -> None:
            self._install(outcome)
            if inline:
                with contextlib.suppress(OSError):
                    os.unlink(inline)

        try:
            await asyncio.to_thread(install_and_drop_input)
            if outcome["status"] == "Completed":
                m.response_upload_latency.observe((time.perf_counter() - started) * 1e6)
        except (S3StoreError, OSError) as exc:
            with contextlib.suppress(OSError):
                if outcome.get("tmp"):
                    os.unlink(outcome["tmp"])
            message = getattr(exc, "message", None) or str(exc)
            if outcome["status"] == "Completed":
                m.response_upload_failures.inc()
                outcome = await self._failure_outcome(
                    item,
                    variant,
                    f"ResponseUploadFailure: Could not upload the response to {outcome['location']}: {message}",
                    None,
                )
                note = self._notification(item, outcome)
                await self._writer.run(self._op_update_outcome(item.seq, outcome, note))
                try:
                    await asyncio.to_thread(self._install, outcome)
                except (S3StoreError, OSError) as exc2:
                    log.warning("async request %s: failure object not written: %s", item.inference_id, exc2)
                    outcome["location"] = None
                    note = self._notification(item, outcome)
                    await self._writer.run(self._op_update_outcome(item.seq, outcome, note))
            else:
                log.warning("async request %s: failure object not written: %s", item.inference_id, message)
                outcome["location"] = None
                note = self._notification(item, outcome)
                await self._writer.run(self._op_update_outcome(item.seq, outcome, note))
        await self._writer.run(self._op_done(item.seq, outcome["status"]))
        if outcome["status"] == "Completed":
            m.invocations_processed.inc()
        m.total_processing_time.observe((outcome["time"] - item.received) * 1000)
        if inline and os.path.exists(inline):  # (normally gone with the install)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, inline)
        if note is not None:
            self._spawn(self._deliver(item.seq, item.endpoint, variant, note))

    async def _deliver(self, seq: int, endpoint: str, variant: str, note: dict) -> None:
        delivered = await self.notifier.send(note["topic"], note["message"])
        if not delivered:
            self._variant_metrics(endpoint, variant).notification_failures.inc()
        # Delivered or given up: either way not sent again at the next start.
        await self._writer.run(self._op_notified(seq))

    # --- inspection (CLI, tests) -------------------------------------------------------------

    def describe(self, endpoint: str) -> dict[str, Any]:
        ep = self.endpoints.get(endpoint)
        if ep is None:
            return {}
        return {"backlog": ep.backlog, "queued": len(ep.heap), "in_flight": len(ep.in_flight)}


class _Readable(Protocol):
    """A request payload being streamed: a local file or a remote object's body."""

    def read(self, n: int, /) -> bytes: ...

    def close(self) -> None: ...


class _DownloadFailed(Exception):
    pass


@dataclass
class _Success:
    tmp: str
    etag: str
    size: int
    content_type: str
    embedded: bytes | None


@dataclass
class _Failure:
    reason: str
    download: bool = False
    body: bytes | None = None


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file_chunks(f: _Readable) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(f.read, CHUNK)
        if not chunk:
            return
        yield chunk
