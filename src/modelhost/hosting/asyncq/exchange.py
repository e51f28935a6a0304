"""One request sent to one replica, the answer streamed back into a temp file.

The input is read in ``CHUNK`` pieces from its file (an inline body) or its object (BlobStore),
and the response body is kept in memory while it is at most ``EMBED_LIMIT`` bytes (it goes into
the outcome row; IncludeInferenceResponseIn needs it there anyway), else written to
``<async>/tmp`` as it arrives, with its MD5: nothing large is held whole. The caller bounds the
time; ReplicaUnreachable and ReplicaLost pass through to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from modelhost.backends.handle import FleetHandle, Replica, ReplicaTimeout, StreamedReply
from modelhost.hosting.asyncq.items import CHUNK, EMBED_LIMIT, ERROR_KEEP, Item
from modelhost.hosting.metrics import AsyncVariantMetrics
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore


@dataclass
class Success:
    tmp: str | None  # the response body in a temp file for the committer to install (None: in ``embedded``)
    etag: str
    size: int
    content_type: str
    embedded: bytes | None  # the whole body when it is at most EMBED_LIMIT bytes


@dataclass
class Failure:
    reason: str
    download: bool = False  # the input could not be read (RequestDownloadFailures)
    body: bytes | None = None  # the model's error answer (at most ERROR_KEEP bytes)


class Readable(Protocol):
    """A request payload being streamed: a local file or an object's body."""

    def read(self, n: int, /) -> bytes: ...

    def close(self) -> None: ...


class DownloadFailed(Exception):
    pass


FORWARDED = (
    (b"content-type", "content_type"),
    (b"accept", "accept"),
    (b"x-amzn-sagemaker-custom-attributes", "custom_attributes"),
)


class Exchange:
    def __init__(self, blobs: BlobStore, tmp_dir: Path) -> None:
        self.blobs = blobs
        self.tmp_dir = tmp_dir

    async def run(self, item: Item, fleet: FleetHandle, replica: Replica, m: AsyncVariantMetrics) -> Success | Failure:
        spec = item.spec
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = []
        for name, key in FORWARDED:
            if spec.get(key) is not None:
                headers.append((name, spec[key].encode("latin-1")))
        headers.append((b"x-amzn-sagemaker-inference-id", item.inference_id.encode("latin-1")))
        if item.body is not None:  # small, already in memory: the replica's keep-alive connections
            return await self.run_inline(item, item.body, fleet, replica, headers, m, started)
        f: Readable | None = None
        try:
            opened, size = await asyncio.to_thread(self.open_input, spec)
        except DownloadFailed as exc:
            return Failure(str(exc), download=True)
        f, chunks = opened, file_chunks(opened)
        resp: StreamedReply | None = None
        try:
            resp = await fleet.invoke_stream(replica, headers, size, chunks)
            m.request_download_latency.observe((time.perf_counter() - started) * 1e6)
            if resp.status >= 300:
                return model_error(item, resp.status, await resp.read_all(ERROR_KEEP))
            content_type = resp.headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            return await self.receive(resp, content_type)
        finally:
            if resp is not None:
                resp.close()
            if f is not None:
                await asyncio.to_thread(f.close)

    async def run_inline(
        self,
        item: Item,
        body: bytes,
        fleet: FleetHandle,
        replica: Replica,
        headers: list[tuple[bytes, bytes]],
        m: AsyncVariantMetrics,
        started: float,
    ) -> Success | Failure:
        """A small body in one request on a pooled connection (a fresh connection per request
        costs both processes more than the rest of the hop); the answer arrives whole, as for
        InvokeEndpoint, and only an answer over EMBED_LIMIT goes to a temp file."""
        try:
            resp = await fleet.invoke(replica, headers, body, item.spec["timeout"])
        except ReplicaTimeout:
            raise TimeoutError from None  # (the dispatcher's InvocationTimeoutSeconds handling)
        m.request_download_latency.observe((time.perf_counter() - started) * 1e6)
        if resp.status >= 300:
            return model_error(item, resp.status, resp.body[:ERROR_KEEP])
        content_type = resp.headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
        data = resp.body
        etag = hashlib.md5(data).hexdigest()
        if len(data) <= EMBED_LIMIT:
            return Success(None, etag, len(data), content_type, data)

        def spill() -> str:
            fd, path = tempfile.mkstemp(dir=self.tmp_dir, prefix="out-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return path

        return Success(await asyncio.to_thread(spill), etag, len(data), content_type, None)

    def open_input(self, spec: dict) -> tuple[Readable, int]:
        """(Blocking) the request payload and its size; DownloadFailed with the failure reason."""
        if spec.get("inline"):
            where = "the inline request body"
            try:
                f = open(spec["inline"], "rb")  # noqa: SIM115 - closed by the caller
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise DownloadFailed(
                    f"RequestDownloadFailure: Could not download {where}: the object does not exist."
                ) from None
            return f, os.fstat(f.fileno()).st_size
        where = spec["input"]
        try:
            stream = self.blobs.open(where)
        except BlobNotFound:
            raise DownloadFailed(
                f"RequestDownloadFailure: Could not download {where}: the object does not exist."
            ) from None
        except (BlobError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise DownloadFailed(f"RequestDownloadFailure: Could not download {where}: {message}") from None
        return stream, stream.size

    async def receive(self, resp: StreamedReply, content_type: str) -> Success:
        """The response body: in memory while it is at most EMBED_LIMIT bytes (the outcome row
        carries it, committer.py), else streamed into a temp file."""
        md5 = hashlib.md5()
        size = 0
        pending: list[bytes] = []
        buffered = 0
        f: BinaryIO | None = None
        name: str | None = None

        def flush(parts: list[bytes], hashed: int, last: bool = False) -> None:
            """(In a thread) write ``parts``, hashing those past the first ``hashed``."""
            assert f is not None
            for i, p in enumerate(parts):
                f.write(p)
                if i >= hashed:
                    md5.update(p)
            if last:
                f.close()

        def spill() -> tuple[BinaryIO, str]:
            fd, path = tempfile.mkstemp(dir=self.tmp_dir, prefix="out-")
            return os.fdopen(fd, "wb"), path

        try:
            hashed = 0  # chunks of ``pending`` already in the MD5 (those from before the spill)
            async for chunk in resp.chunks():
                size += len(chunk)
                pending.append(chunk)
                buffered += len(chunk)
                if f is None:
                    md5.update(chunk)  # small: here; large: in the writing thread
                    hashed += 1
                    if size > EMBED_LIMIT:
                        f, name = await asyncio.to_thread(spill)
                if f is not None and buffered >= CHUNK:
                    parts, pending, buffered = pending, [], 0
                    await asyncio.to_thread(flush, parts, hashed)
                    hashed = 0
            if f is None:
                return Success(None, md5.hexdigest(), size, content_type, b"".join(pending))
            await asyncio.to_thread(flush, pending, hashed, True)
        except BaseException:
            if f is not None:
                f.close()
            if name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(name)
            raise
        return Success(name, md5.hexdigest(), size, content_type, None)


def model_error(item: Item, status: int, body: bytes) -> Failure:
    message = body.decode("utf-8", "replace")
    kind = "client" if 400 <= status < 500 else "server"
    return Failure(
        f'ClientError: Received {kind} error ({status}) from primary with message "{message}". '
        f"See the endpoint's logs (modelhost logs {item.endpoint}) for more information.",
        body=body,
    )


async def file_chunks(f: Readable) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(f.read, CHUNK)
        if not chunk:
            return
        yield chunk
