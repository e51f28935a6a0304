"""One request sent to one replica, the answer streamed back into a temp file.

The input is read in ``CHUNK`` pieces from its file (an inline body) or its object (BlobStore),
and the response body is written to ``<async>/tmp`` as it arrives, with its MD5 and the first
``EMBED_LIMIT`` bytes kept for IncludeInferenceResponseIn: nothing is held whole, whatever the
size. The caller bounds the time; ReplicaUnreachable and ReplicaLost pass through to it.
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
from typing import Protocol

from modelhost.backends.handle import FleetHandle, Replica, StreamedReply
from modelhost.hosting.asyncq.items import CHUNK, EMBED_LIMIT, ERROR_KEEP, Item
from modelhost.hosting.metrics import AsyncVariantMetrics
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore


@dataclass
class Success:
    tmp: str  # the response body, in a temp file for the committer to install
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
        f: Readable | None = None
        if item.body is not None:  # small, already in memory: no file to read
            size, chunks = len(item.body), one_chunk(item.body)
        else:
            try:
                opened, size = await asyncio.to_thread(self.open_input, spec)
            except DownloadFailed as exc:
                return Failure(str(exc), download=True)
            f, chunks = opened, file_chunks(opened)
        headers: list[tuple[bytes, bytes]] = []
        for name, key in FORWARDED:
            if spec.get(key) is not None:
                headers.append((name, spec[key].encode("latin-1")))
        headers.append((b"x-amzn-sagemaker-inference-id", item.inference_id.encode("latin-1")))
        resp: StreamedReply | None = None
        try:
            resp = await fleet.invoke_stream(replica, headers, size, chunks)
            m.request_download_latency.observe((time.perf_counter() - started) * 1e6)
            if resp.status >= 300:
                body = await resp.read_all(ERROR_KEEP)
                message = body.decode("utf-8", "replace")
                kind = "client" if 400 <= resp.status < 500 else "server"
                return Failure(
                    f'ClientError: Received {kind} error ({resp.status}) from primary with message "{message}". '
                    f"See the endpoint's logs (modelhost logs {item.endpoint}) for more information.",
                    body=body,
                )
            content_type = resp.headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            return await self.receive(resp, content_type)
        finally:
            if resp is not None:
                resp.close()
            if f is not None:
                await asyncio.to_thread(f.close)

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
        return Success(name, md5.hexdigest(), size, content_type, embedded)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def file_chunks(f: Readable) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(f.read, CHUNK)
        if not chunk:
            return
        yield chunk
