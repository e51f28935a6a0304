"""An inference pipeline's request flow, backend-neutral: Serial (container 1 -> 2 -> ... -> N) or Direct
(the one container the caller names). A backend supplies ``send`` (one hop to one container of the
replica); real-time endpoints, async inference and batch transform all go through :func:`run_chain`.

Serial: each response body becomes the next request body and its Content-Type the next Content-Type.
The client's Accept applies to the last container only; an intermediate container gets none, so it
answers in its ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (or its runtime's default). The first error
status stops the chain and is the replica's answer, naming the container that failed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from modelhost.resources.containers import ExecutionMode

TARGET_CONTAINER = b"x-amzn-sagemaker-target-container-hostname"
# Headers the pipeline adds to its answer for the router (never sent to a client).
FAILED_CONTAINER = b"x-modelhost-failed-container"
CONTAINER_LATENCIES = b"x-modelhost-container-latencies"  # "host=us,host=us" (time inside each container)


@dataclass
class HopResponse:
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


# (container index, headers, body, timeout seconds) -> its response
Send = Callable[[int, list[tuple[bytes, bytes]], bytes, float], Awaitable[HopResponse]]


@dataclass
class ChainResult:
    response: HopResponse
    failed: str | None = None  # hostname of the container whose error status ended the chain
    latencies: list[tuple[str, float]] = field(default_factory=list)  # (hostname, µs) per container called

    def annotated(self) -> HopResponse:
        """The response with the chain's facts as internal headers (for the router)."""
        headers = dict(self.response.headers)
        if self.failed is not None:
            headers[FAILED_CONTAINER] = self.failed.encode("latin-1")
        headers[CONTAINER_LATENCIES] = ",".join(f"{h}={us:.0f}" for h, us in self.latencies).encode("latin-1")
        return HopResponse(self.response.status, headers, self.response.body)


def parse_latencies(value: bytes) -> list[tuple[str, float]]:
    out = []
    for item in value.decode("latin-1").split(","):
        host, _, us = item.rpartition("=")
        if host:
            out.append((host, float(us)))
    return out


def hop_headers(
    headers: list[tuple[bytes, bytes]], content_type: bytes | None, last: bool
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == b"content-type" or name == TARGET_CONTAINER or (name == b"accept" and not last):
            continue
        out.append((name, value))
    if content_type is not None:
        out.append((b"content-type", content_type))
    return out


def direct_target(headers: Sequence[tuple[bytes, bytes]], hostnames: Sequence[str]) -> int | None:
    """Index of the container the request names, or None (the router refuses such requests before)."""
    for name, value in headers:
        if name == TARGET_CONTAINER:
            host = value.decode("latin-1")
            return hostnames.index(host) if host in hostnames else None
    return None


async def run_chain(
    mode: ExecutionMode,
    hostnames: Sequence[str],
    send: Send,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    timeout: float,
) -> ChainResult:
    """Run one request through the pipeline; ``timeout`` bounds the whole chain."""
    deadline = time.monotonic() + timeout
    if mode is ExecutionMode.DIRECT:
        index = direct_target(headers, hostnames)
        if index is None:
            return ChainResult(HopResponse(400, {}, b"TargetContainerHostname names no container of the model"))
        order: Sequence[int] = (index,)
    else:
        order = range(len(hostnames))
    content_type = next((v for n, v in headers if n == b"content-type"), None)
    result = ChainResult(HopResponse(500, {}, b""))
    for position, index in enumerate(order):
        last = position == len(order) - 1
        hop = hop_headers(headers, content_type, last)
        started = time.perf_counter()
        resp = await send(index, hop, body, max(deadline - time.monotonic(), 0.001))
        result.latencies.append((hostnames[index], (time.perf_counter() - started) * 1e6))
        result.response = resp
        if resp.status >= 300:
            result.failed = hostnames[index]
            return result
        body = resp.body
        content_type = resp.headers.get(b"content-type", content_type)
    return result
