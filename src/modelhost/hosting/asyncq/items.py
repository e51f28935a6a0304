"""The in-memory side of the queue: a request (``Item``), an async endpoint's heap and in-flight set,
the limits every part shares, and a small task set for the fire-and-forget work (runs, deliveries)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

MAX_ATTEMPTS = 3  # interrupted runs (server or instance crash) before a request fails
DEFAULT_CONCURRENCY = 4  # MaxConcurrentInvocationsPerInstance when the config leaves it to us
DEFAULT_TTL = 21600
DEFAULT_TIMEOUT = 900
INLINE_MAX = 128000
CHUNK = 1024 * 1024
EMBED_LIMIT = 128 * 1024  # IncludeInferenceResponseIn: responses up to 128 KB
ERROR_KEEP = 64 * 1024  # bytes of a model's error answer kept for the failure reason
LIVE = ("InService", "Updating", "SystemUpdating", "RollingBack")

DELETED_REASON = "InternalFailure: The endpoint was deleted before the request was processed."


def join_uri(base: str, *parts: str | None) -> str:
    out = base.rstrip("/")
    for p in parts:
        if p:
            out += "/" + p.strip("/")
    return out


@dataclass
class Item:
    """A queued or running request (the row, in memory)."""

    seq: int
    inference_id: str
    endpoint: str
    received: float
    attempts: int
    spec: dict[str, Any]
    body: bytes | None = None  # the inline body (the row holds it too); None: read from the input

    def __lt__(self, other: Item) -> bool:
        return self.seq < other.seq


@dataclass
class AsyncEndpoint:
    name: str
    status: str
    config: dict[str, Any]  # the endpoint config's AsyncInferenceConfig
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

    @property
    def first_variant(self) -> str:
        """The variant failures are counted on when no instance was involved."""
        return self.variants[0] if self.variants else ""


class Tasks:
    """Background tasks of the queue, kept referenced until done and cancelled together at stop."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def cancel_all(self) -> None:
        running = list(self.running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
