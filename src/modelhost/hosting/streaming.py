"""The InvokeEndpointWithResponseStream path: a variant chosen as for InvokeEndpoint, one replica, its
event-stream frames forwarded whole as they arrive (never the whole response).

Before the first byte, failures are the router's domain errors (ModelFailed with the model's status,
NoCapacity, ...). After it, an instance that goes away ends the stream with an ``InternalStreamFailure``
frame, and one silent for longer than the variant's timeout with ``ModelStreamError``
(``ModelInvocationTimeExceeded``). Closing the stream (the client left) closes the connection to the
instance, which stops the model's generator there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from modelhost.backends.handle import FleetHandle, Replica, ReplicaLost, ReplicaUnreachable, StreamedReply
from modelhost.hosting.errors import ModelFailed, ModelLost, ModelTimedOut, NoCapacity
from modelhost.hosting.router import Router, VariantRoute
from modelhost.serving import eventstream
from modelhost.serving.streaming import CONTENT_TYPE_HEADER, STREAM_HEADER

ERROR_BODY_LIMIT = 64 * 1024


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


@dataclass
class ResponseStream:
    """An open stream: iterate ``frames()`` once; ``close()`` always (it releases the replica)."""

    variant: VariantRoute
    content_type: str
    custom_attributes: str | None
    _fleet: FleetHandle
    _replica: Replica
    _reply: StreamedReply
    _started: float
    _closed: bool = False

    async def frames(self) -> AsyncIterator[bytes]:
        splitter = eventstream.FrameSplitter()
        chunks = self._reply.chunks().__aiter__()
        timeout = self.variant.timeout
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    self._fleet.log.write(self._replica.name, f"response stream silent for {timeout:g}s; ended")
                    yield eventstream.model_stream_error(
                        f"The model sent nothing for {timeout:g} seconds.", "ModelInvocationTimeExceeded"
                    )
                    return
                for frame in splitter.feed(chunk):
                    yield frame
        except ReplicaLost as exc:
            yield eventstream.internal_stream_failure(f"The container primary failed: {exc}.")
            return
        except eventstream.FrameError as exc:
            yield eventstream.internal_stream_failure(f"The container primary sent a broken stream: {exc}.")
            return
        if splitter.pending:
            yield eventstream.internal_stream_failure("The container primary ended the stream mid-frame.")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reply.close()
        self._fleet.release(self._replica)
        latency_us = (time.perf_counter() - self._started) * 1e6
        self.variant.metrics.model_latency.observe(latency_us)


async def open_stream(
    router: Router, endpoint: str, body: bytes, headers: list[tuple[bytes, bytes]], target_variant: str | None
) -> ResponseStream:
    """Send the request and wait for the instance's first answer (its status, or the stream's start)."""
    _, variant = router.select(endpoint, target_variant)
    variant.metrics.invocations.inc()
    fleet = variant.fleet
    fleet.stats.requests += 1
    forwarded = [*headers, (STREAM_HEADER, b"1")]
    tried = 0
    while True:
        replica = fleet.acquire_now() or await fleet.acquire(router.instance_wait)
        if replica is None:
            variant.metrics.errors_5xx.inc()
            fleet.stats.errors_5xx += 1
            raise NoCapacity(endpoint, variant.name)
        started = time.perf_counter()
        try:
            reply = await asyncio.wait_for(
                fleet.invoke_stream(replica, forwarded, len(body), _once(body)), variant.timeout
            )
        except ReplicaUnreachable:
            fleet.release(replica)
            fleet.mark_unreachable(replica)
            tried += 1
            if tried > fleet.size:
                raise NoCapacity(endpoint, variant.name) from None
            continue
        except TimeoutError:
            fleet.release(replica)
            fleet.recycle(replica)
            _count_error(variant, 500)
            raise ModelTimedOut(endpoint, variant.name, variant.timeout, variant.log_stream_arn) from None
        except ReplicaLost as exc:
            fleet.release(replica)
            _count_error(variant, 500)
            raise ModelLost(endpoint, variant.name, str(exc), variant.log_stream_arn) from None
        except BaseException:
            fleet.release(replica)
            raise
        break
    if reply.status >= 300:
        try:
            message = (await reply.read_all(ERROR_BODY_LIMIT)).decode("utf-8", "replace")
        except ReplicaLost as exc:
            message = str(exc)
        finally:
            reply.close()
            fleet.release(replica)
        _count_error(variant, reply.status)
        raise ModelFailed(endpoint, variant.name, reply.status, message, variant.log_stream_arn)
    content_type = reply.headers.get(CONTENT_TYPE_HEADER, b"application/octet-stream").decode("latin-1")
    custom = reply.headers.get(b"x-amzn-sagemaker-custom-attributes")
    return ResponseStream(
        variant,
        content_type,
        custom.decode("latin-1") if custom is not None else None,
        fleet,
        replica,
        reply,
        started,
    )


def _count_error(variant: VariantRoute, status: int) -> None:
    if 400 <= status < 500:
        variant.metrics.errors_4xx.inc()
        variant.fleet.stats.errors_4xx += 1
    else:
        variant.metrics.errors_5xx.inc()
        variant.fleet.stats.errors_5xx += 1
