"""The two stages of a batch transform on Ray Data, run in Ray worker processes on any node:

- ``read_object`` (a task per input object): the object read through a blob store on the configured
  S3, split and packed exactly as on the local backend (jobs/records.py), in chunks of requests;
- ``TransformActor`` (the actor pool of ``map_batches``): modelhost's serving runtime, the same
  ``ModelReplica`` (handler chain, codecs, runtimes, user code, error texts) as a Ray Serve replica,
  answering each request of a chunk with the job's retries and timeout.

Rows carry one pickled ``Chunk`` / ``Answered`` each (opaque to Ray Data). A task or actor call is
atomic in Ray Data: when an actor dies its calls are retried elsewhere and only whole results are
ever passed on, so no record is lost or repeated.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.backends.ray.replica import ArtifactSource, ModelReplica
from modelhost.jobs.batching import Batch
from modelhost.jobs.errors import OBJECT_ERRORS
from modelhost.jobs.filters import DataProcessing
from modelhost.jobs.inputs import InputObject
from modelhost.jobs.invoke import ObjectFailed, records_of
from modelhost.jobs.params import ExecutionParameters
from modelhost.jobs.reader import CHUNK_BYTES, CHUNK_ITEMS
from modelhost.jobs.records import object_batches
from modelhost.store.blobs import BlobStore

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class RemoteStore:
    """How a Ray process reaches the job's data: the configured S3 service (never the head's disk)."""

    endpoint_url: str
    region: str
    cache_dir: str


@dataclass
class Chunk:
    obj: int  # index of the input object in the job's pending list
    seq: int  # position of this chunk in the object
    last: bool
    requests: list[Batch] = field(default_factory=list)
    error: str | None = None  # the object cannot be read or split: it fails with this


@dataclass(frozen=True)
class Answer:
    count: int
    first: int
    originals: list[Any]
    body: bytes
    content_type: str | None


@dataclass
class Answered:
    obj: int
    seq: int
    last: bool
    answers: list[Answer] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # retries, for the job's log


@functools.lru_cache(maxsize=4)
def _blobs(store: RemoteStore) -> BlobStore:
    from modelhost.store.blobs_remote import RemoteBlobStore
    from modelhost.store.remote_s3 import RemoteS3

    root = Path(store.cache_dir)
    return RemoteBlobStore(RemoteS3(store.endpoint_url, root / "s3-mirror", store.region), root / "s3-staging")


def _row(item: Chunk | Answered) -> dict[str, Any]:
    return {"chunk": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)}


def read_object(
    row: dict[str, Any],
    *,
    store: RemoteStore,
    spec: dict[str, Any],
    params: ExecutionParameters,
    processing: DataProcessing | None,
) -> Iterator[dict[str, Any]]:
    """flat_map: one input object -> its chunks of requests (the last one marked), streamed."""
    index = int(row["obj"])
    obj = InputObject(str(row["uri"]), str(row["rel"]), int(row["size"]))
    chunk = Chunk(index, 0, False)
    size = 0
    try:
        for batch in object_batches(_blobs(store), spec, obj, params, processing):
            chunk.requests.append(batch)
            size += len(batch.body)
            if len(chunk.requests) >= CHUNK_ITEMS or size >= CHUNK_BYTES:
                yield _row(chunk)
                chunk, size = Chunk(index, chunk.seq + 1, False), 0
    except OBJECT_ERRORS as exc:
        chunk.requests.clear()
        chunk.error = str(exc) or type(exc).__name__
    chunk.last = True
    yield _row(chunk)


class TransformActor:
    """One instance of the model (``InstanceCount`` of them; ``MaxConcurrentTransforms`` calls each)."""

    def __init__(
        self, model_dir: str, artifact: ArtifactSource | None, headers: Headers, timeout: float, retries: int
    ) -> None:
        self.replica = ModelReplica(model_dir, artifact, hung_after=max(timeout, 1.0) * (retries + 1))
        self.headers = headers
        self.timeout = timeout
        self.retries = retries
        self.loop = asyncio.new_event_loop()  # the replica's coroutines run here, calls wait from Ray's threads
        threading.Thread(target=self.loop.run_forever, name="transform-actor-loop", daemon=True).start()
        self._lock = threading.Lock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        return {
            "chunk": [pickle.dumps(self._answer(pickle.loads(raw)), pickle.HIGHEST_PROTOCOL) for raw in batch["chunk"]]
        }

    def _answer(self, chunk: Chunk) -> Answered:
        done = Answered(chunk.obj, chunk.seq, chunk.last, error=chunk.error)
        if chunk.error is not None:
            return done
        try:
            for request in chunk.requests:
                done.answers.append(self._invoke(request, done.notes))
        except ObjectFailed as exc:
            done.answers.clear()
            done.error = str(exc)
        return done

    def _invoke(self, batch: Batch, notes: list[str]) -> Answer:
        """One request with the job's retries, as jobs/invoke.py sends it to a local instance."""
        what = records_of(batch)
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                notes.append(f"{what}: retrying ({attempt}/{self.retries}) after: {error[:300]}")
            call = asyncio.run_coroutine_threadsafe(self.replica.invoke(self.headers, batch.body), self.loop)
            try:
                status, headers, body = call.result(self.timeout)
            except TimeoutError:
                call.cancel()
                error = f"the model did not answer within InvocationsTimeoutInSeconds ({self.timeout:g})"
                self._recycle()
                continue
            if 200 <= status < 300:
                ctype = next((v.decode("latin-1") for k, v in headers if k == b"content-type"), None)
                return Answer(batch.count, batch.first, batch.originals, body, ctype or None)
            text = body.decode("utf-8", "replace").strip()
            error = f"the model returned HTTP {status}: {text[:500]}"
        raise ObjectFailed(f"{what}: {error}")

    def _recycle(self) -> None:
        """A hung model thread is left behind; later requests get fresh model threads (the local
        backend restarts a timed-out instance)."""
        with self._lock:
            self.replica.executor = ThreadPoolExecutor(self.replica.threads, thread_name_prefix="model")
