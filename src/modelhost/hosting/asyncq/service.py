"""AsyncInference: the asynchronous inference service the server and the control loop use.

It builds the queue's parts and owns their lifecycle: the endpoint table (endpoints.py), the
durable rows (queue.py), the dispatcher (dispatcher.py) sending requests through each
variant's FleetHandle (exchange.py), the committer (committer.py) writing outcomes through the
BlobStore, notifications (notify.py) and recovery at start (recovery.py). See __init__.py for
the request's life.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from modelhost.config import Settings
from modelhost.hosting.asyncq.committer import Committer
from modelhost.hosting.asyncq.dispatcher import Dispatcher
from modelhost.hosting.asyncq.endpoints import EndpointTable
from modelhost.hosting.asyncq.exchange import Exchange
from modelhost.hosting.asyncq.items import DEFAULT_TIMEOUT, DEFAULT_TTL, DELETED_REASON, Item, Tasks, join_uri
from modelhost.hosting.asyncq.metrics import QueueMetrics
from modelhost.hosting.asyncq.notify import TEST_NOTIFICATION, Notifier
from modelhost.hosting.asyncq.queue import RequestRows
from modelhost.hosting.asyncq.recovery import recover
from modelhost.hosting.errors import InvalidOutputLocation
from modelhost.hosting.router import Router
from modelhost.resources.endpoint import EndpointRecord
from modelhost.store import endpoints as endpoint_rows
from modelhost.store.blobs import BlobError, BlobStore, S3Uri
from modelhost.store.buckets import S3StoreError, check_key
from modelhost.store.db import MetadataStore

log = logging.getLogger("modelhost.async")


class AsyncInference:
    """The queue, the dispatcher, recovery and notifications of every async endpoint."""

    def __init__(self, settings: Settings, store: MetadataStore, blobs: BlobStore, router: Router) -> None:
        self.settings = settings
        self.store = store
        self.run_id = uuid.uuid4().hex
        self.inputs_dir = settings.async_dir / "inputs"
        self.tmp_dir = settings.async_dir / "tmp"
        self.table = EndpointTable()
        self.rows = RequestRows(store, self.run_id)
        self.metrics = QueueMetrics()
        self.tasks = Tasks()
        self.notifier = Notifier(settings.sns_endpoint_url, settings.region, webhook_allow=settings.webhook_allow)
        self.committer = Committer(
            self.rows, blobs, self.tmp_dir, self.metrics, self.notifier, settings.region, self.tasks
        )
        self.dispatcher = Dispatcher(
            self.table,
            router.fleets,
            self.rows,
            Exchange(blobs, self.tmp_dir),
            self.committer,
            self.metrics,
            self.tasks,
            capture=router.capture,
        )
        self._main: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def names(self) -> set[str]:
        """Async endpoint names, one set kept current in place (InvokeEndpoint refuses these)."""
        return self.table.names

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, endpoints: Sequence[EndpointRecord] | None = None) -> None:
        """Recover what the last run left and start dispatching. ``endpoints``: every record of the
        endpoints table now (None: read here), so recovered requests find their queues."""
        self._loop = asyncio.get_running_loop()
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.rows.start()
        self.committer.batches.start()
        if endpoints is None:
            endpoints = await asyncio.to_thread(self._read_endpoints)
        self._apply(endpoints, initial=True)
        for item in await recover(self.rows, self.table, self.committer, self.tasks, self.inputs_dir, self.tmp_dir):
            self.dispatcher.queue(item)
        self._main = [asyncio.create_task(self.dispatcher.loop())]

    async def stop(self) -> None:
        self.dispatcher.stopping = True
        for task in self._main:
            task.cancel()
        await asyncio.gather(*self._main, return_exceptions=True)
        await self.tasks.cancel_all()
        await self.committer.batches.stop()
        await self.rows.stop()  # hands this run's in-flight claims back, uncounted

    def wake(self) -> None:
        """Thread-safe: look at the queues now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.dispatcher.wake)

    # --- the endpoint table ------------------------------------------------------------------

    async def sync_endpoints(self, endpoints: Sequence[EndpointRecord]) -> None:
        """The control loop's push, once per pass: every record of the endpoints table. Async
        endpoints seen ``Creating`` for the first time get a TestNotification; requests of
        deleted (or no longer async) endpoints fail visibly."""
        self._apply(endpoints, initial=False)

    def _apply(self, endpoints: Sequence[EndpointRecord], initial: bool) -> None:
        changes = self.table.apply(endpoints, initial)
        for ep in changes.created:
            self.tasks.spawn(self._test_notifications(ep.name, ep.first_variant, ep.config))
        for item, variant in changes.deleted:
            self.tasks.spawn(self.committer.fail(item, variant, DELETED_REASON, from_status="Pending"))
        self.dispatcher.wake()

    def _read_endpoints(self) -> list[EndpointRecord]:
        with self.store.begin() as conn:
            return endpoint_rows.load_all(self.store, conn)

    async def _reread(self) -> None:
        """Read the endpoints table now: a request came for an endpoint the last push did not show
        live (its status may have changed since that pass)."""
        self._apply(await asyncio.to_thread(self._read_endpoints), initial=False)

    async def _test_notifications(self, endpoint: str, variant: str, config: dict[str, Any]) -> None:
        topics = (config.get("OutputConfig") or {}).get("NotificationConfig") or {}
        for topic in dict.fromkeys(t for t in (topics.get("SuccessTopic"), topics.get("ErrorTopic")) if t):
            if not await self.notifier.send(topic, TEST_NOTIFICATION):
                self.metrics.variant(endpoint, variant).notification_failures.inc()

    def backlog(self, endpoint: str) -> int | None:
        """Queued plus in-flight requests of an async endpoint (None for other endpoints)."""
        ep = self.table.get(endpoint)
        return ep.backlog if ep is not None else None

    def describe(self, endpoint: str) -> dict[str, Any]:
        """The queue of one endpoint (CLI, tests): backlog, queued, in_flight; {} if not async."""
        ep = self.table.get(endpoint)
        if ep is None:
            return {}
        return {"backlog": ep.backlog, "queued": len(ep.heap), "in_flight": len(ep.in_flight)}

    # --- accepting requests ------------------------------------------------------------------

    async def submit(self, name: str, params: dict[str, Any], body: bytes | None) -> dict[str, str]:
        """Persist one request and queue it; returns InferenceId, OutputLocation, FailureLocation."""
        if not self.table.is_live(name):
            await self._reread()
        ep = self.table.accepting(name)
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
                    check_key(S3Uri.parse(uri).key)
                except (BlobError, S3StoreError) as exc:
                    raise InvalidOutputLocation(uri, str(exc)) from None
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
        received = round(time.time(), 3)
        # The inline body goes into the row: the 202 waits for one group commit, no file write.
        seq = await self.rows.insert(inference_id, ep.name, received, spec, body)
        heapq.heappush(ep.heap, Item(seq, inference_id, ep.name, received, 0, spec, body))
        self.dispatcher.wake()
        out = {"InferenceId": inference_id, "OutputLocation": output}
        if failure is not None:
            out["FailureLocation"] = failure
        return out
