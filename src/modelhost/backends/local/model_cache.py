"""The platform's side of one multi-model instance: which TargetModels its container holds, loading them
on first use (once, however many requests race for it), evicting least-recently-used ones when the
memory budget would be exceeded, and unloading after each invocation with ModelCacheSetting Disabled.

A model's memory is what the instance process's RSS grew by while the container loaded it (read from
/proc, so a bring-your-own container is measured the same way). The container's 507 ("out of
memory") evicts the least-recently-used model and retries; its 404 for a model the cache thought
loaded (the container restarted) loads it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from modelhost.backends.local.http import HttpResponse, UnixHttpPool
from modelhost.backends.local.model_disk import DiskTier, ModelDataInvalid
from modelhost.backends.multimodel import MultiModelEvents, TargetModelMissing, TargetModelNotReady

TARGET_MODEL = b"x-amzn-sagemaker-target-model"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RETRIES_507 = 8
TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True)
class CachePolicy:
    memory_budget: int  # bytes of RSS growth the loaded models may take
    cache_enabled: bool = True  # ModelCacheSetting
    load_wait: float = 60.0  # a request waits this long for its model, then ModelNotReadyException
    load_timeout: float = 360.0  # a load may take this long in all


@dataclass
class Loaded:
    model_id: str
    size: int


class LoadFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def model_id(target: str) -> str:
    """The opaque model_name the container sees for a TargetModel."""
    return hashlib.sha256(target.encode()).hexdigest()[:24]


def rss_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class ModelCache:
    def __init__(self, name: str, disk: DiskTier, policy: CachePolicy, events: MultiModelEvents) -> None:
        self.name = f"{name}@{id(self):x}"  # unique: a blue/green update's two fleets both have "<variant>/0"
        self.disk = disk
        self.policy = policy
        self.events = events
        self.pool: UnixHttpPool | None = None
        self.pid: int | None = None
        self.loaded: OrderedDict[str, Loaded] = OrderedDict()
        self.sizes: dict[str, int] = {}  # last measured size per TargetModel (an estimate for its reload)
        self.busy: Counter[str] = Counter()
        self._loads: dict[str, asyncio.Task[None]] = {}
        self.loads = self.evictions = self.hits = self.misses = 0
        self.peak_rss = 0
        self.baseline = 0

    def attach(self, pool: UnixHttpPool, pid: int | None) -> None:
        """A (re)started container holds no models."""
        for task in self._loads.values():
            task.cancel()
        self._loads.clear()
        self.loaded.clear()
        self.busy.clear()
        self.pool, self.pid = pool, pid
        self.baseline = 0  # taken at the first load, once the container is up and warmed
        self.events.loaded_count(self.name, 0)

    @property
    def used(self) -> int:
        return sum(m.size for m in self.loaded.values())

    # --- the request path

    async def invoke(self, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float) -> HttpResponse:
        target = next((v.decode("latin-1") for n, v in headers if n == TARGET_MODEL), "")
        if not target:  # batch transform or async requests: SageMaker has no multi-model form of them
            return HttpResponse(
                400, {b"content-type": TEXT}, b"A multi-model endpoint needs a TargetModel per request."
            )
        for _attempt in range(2):
            entry = self.loaded.get(target)
            if entry is not None:
                self.loaded.move_to_end(target)
                self.hits += 1
                self.events.cache_hit(True)
            else:
                self.misses += 1
                self.events.cache_hit(False)
                try:
                    await self._wait_loaded(target)
                except LoadFailed as exc:
                    return HttpResponse(exc.status, {b"content-type": TEXT}, exc.message.encode())
                entry = self.loaded.get(target)
                if entry is None:  # evicted again before we got to it: load once more
                    continue
            resp = await self._call_model(target, entry, headers, body, timeout)
            if resp.status == 404 and self.loaded.get(target) is entry:
                self.loaded.pop(target, None)  # the container lost it (restarted): load it again
                continue
            if not self.policy.cache_enabled and not self.busy[target]:
                await self.unload(target)
                self.disk.drop(target)
            return resp
        return HttpResponse(503, {}, f"model {target} could not be kept loaded".encode())

    async def _call_model(
        self, target: str, entry: Loaded, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> HttpResponse:
        assert self.pool is not None
        path = f"/models/{entry.model_id}/invoke".encode()
        self.busy[target] += 1
        try:
            for _ in range(RETRIES_507):
                resp = await self.pool.request(b"POST", path, headers, body, timeout)
                if resp.status != 507 or not await self._evict_one(keep=target):
                    return resp
            return resp
        finally:
            self.busy[target] -= 1

    async def _wait_loaded(self, target: str) -> None:
        started = time.monotonic()
        task = self._loads.get(target)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(target))
            self._loads[target] = task
            task.add_done_callback(lambda t: self._load_done(target, t))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.policy.load_wait)
        except TimeoutError:
            raise TargetModelNotReady(target, self.policy.load_wait) from None
        finally:
            self.events.loading_wait(time.monotonic() - started)

    def _load_done(self, target: str, task: asyncio.Task[None]) -> None:
        if self._loads.get(target) is task:
            del self._loads[target]  # a failed load is tried again by the next request
        if not task.cancelled():
            task.exception()  # retrieved: the waiters (if any are left) got it

    # --- loading and eviction

    async def _load(self, target: str) -> None:
        try:
            path, downloaded = await self.disk.fetch(target)
        except ModelDataInvalid as exc:
            raise LoadFailed(400, str(exc)) from None
        if downloaded is not None:
            self.events.downloaded(downloaded)
        self.disk.pin(target)
        if not self.baseline:
            self.baseline = rss_bytes(self.pid)
        try:
            await self._make_room(self.sizes.get(target, self._typical_size()))
            mid = model_id(target)
            doc = json.dumps({"model_name": mid, "url": str(path)}).encode()
            started = time.monotonic()
            for _ in range(RETRIES_507):
                before = rss_bytes(self.pid)
                assert self.pool is not None
                resp = await self.pool.request(
                    b"POST", b"/models", [(b"content-type", b"application/json")], doc, self.policy.load_timeout
                )
                if resp.status != 507 or not await self._evict_one(keep=target):
                    break
            if resp.status not in (200, 409):  # 409: the container already has it
                raise LoadFailed(resp.status, resp.body.decode("utf-8", "replace"))
            after = rss_bytes(self.pid)
            self.peak_rss = max(self.peak_rss, after)
            size = max(after - before, 0)
            self.events.loaded(time.monotonic() - started)
            self.loads += 1
            self.sizes[target] = size
            self.loaded[target] = Loaded(mid, size)
            self.events.loaded_count(self.name, len(self.loaded))
            await self._make_room(0, keep=target)
        finally:
            self.disk.unpin(target)

    def _typical_size(self) -> int:
        known = [m.size for m in self.loaded.values()]
        return sum(known) // len(known) if known else 0

    async def _make_room(self, needed: int, keep: str | None = None) -> None:
        while self.loaded and self.used + needed > self.policy.memory_budget:
            if not await self._evict_one(keep):
                return  # everything else is busy: go over budget rather than fail the request

    async def _evict_one(self, keep: str | None) -> bool:
        for target in self.loaded:
            if target != keep and not self.busy[target]:
                await self.unload(target)
                self.evictions += 1
                return True
        return False

    async def unload(self, target: str) -> None:
        entry = self.loaded.pop(target, None)
        if entry is None or self.pool is None:
            return
        started = time.monotonic()
        await self.pool.request(b"DELETE", f"/models/{entry.model_id}".encode(), [], b"", self.policy.load_timeout)
        self.events.unloaded(time.monotonic() - started)
        self.events.loaded_count(self.name, len(self.loaded))


__all__ = ["CachePolicy", "LoadFailed", "ModelCache", "TargetModelMissing", "model_id", "rss_bytes"]
