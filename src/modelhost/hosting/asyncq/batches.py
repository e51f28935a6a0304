"""Blocking calls run in batches: the calls queued while one batch runs share the next thread hop.

With many small requests finishing at once, a thread hop per object write costs more than the
write (the hand-off and the GIL round trip); one hop per batch costs the same for one or fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any


class ThreadBatches:
    """``around``: entered around each batch in its thread (the blob store's ``batch``)."""

    def __init__(self, around: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
        self.around = around
        self._calls: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, fut in self._calls:
            fut.cancel()

    async def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in the batch thread; its result, or its exception raised here."""
        if self._task is None:  # (not started: a caller outside the service's lifecycle)
            return await asyncio.to_thread(fn)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.append((fn, fut))
        self._event.set()
        return await fut

    async def _loop(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            calls, self._calls = self._calls, []
            if not calls:
                continue
            try:
                results = await asyncio.to_thread(_run_all, [fn for fn, _ in calls], self.around)
            except Exception as exc:  # (never expected) fail the callers rather than leave them waiting
                results = [(False, exc)] * len(calls)
            for (_, fut), (ok, value) in zip(calls, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)


def _run_all(
    fns: list[Callable[[], Any]], around: Callable[[], AbstractContextManager[None]]
) -> list[tuple[bool, Any]]:
    out: list[tuple[bool, Any]] = []
    try:
        with around():
            for fn in fns:
                try:
                    out.append((True, fn()))
                except Exception as exc:
                    out.append((False, exc))
    except Exception as exc:  # the batch's own end failed: none of it is known to have happened
        return [(False, exc)] * len(fns)
    return out


_LATER = object()  # (a call the loop's batch could not take: it goes to the thread)


class LoopBatches:
    """Short calls (small objects into the local bucket index: no file, no network) run in
    batches on the event loop itself: the calls made during one pass of the loop share a batch
    and its transaction, with no thread hop. ``now()``: the batch if it can start without
    waiting (True), else False, and the calls go to ``later`` (the thread's batches) instead.
    A batch begins no sooner than ``WAIT`` after the last one (at once when there was none
    lately), so under load one transaction carries many calls (the queue's lazy ops, queue.py)."""

    WAIT = 0.002  # seconds

    def __init__(self, now: Callable[[], AbstractContextManager[bool]], later: ThreadBatches) -> None:
        self.now = now
        self.later = later
        self._calls: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._flushed = 0.0  # (loop time) when the last batch began
        self.batches = 0  # batches run on the loop, and the calls in them (bench/async_tx.py reads them)
        self.batched_calls = 0

    async def run(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._calls:
            at = self._flushed + self.WAIT
            if at > loop.time():
                loop.call_at(at, self._flush, loop)
            else:
                loop.call_soon(self._flush, loop)
        self._calls.append((fn, fut))
        ok, value = await fut
        if value is _LATER:
            return await self.later.run(fn)
        if not ok:
            raise value
        return value

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flushed = loop.time()
        calls, self._calls = self._calls, []
        results: list[tuple[bool, Any]] = [(True, _LATER)] * len(calls)
        try:
            with self.now() as began:
                if began:
                    self.batches += 1
                    self.batched_calls += len(calls)
                    results = []
                    for fn, _ in calls:
                        try:
                            results.append((True, fn()))
                        except Exception as exc:
                            results.append((False, exc))
        except Exception as exc:  # the batch's own end failed: none of it is known to have happened
            results = [(False, exc)] * len(calls)
        for (_, fut), result in zip(calls, results, strict=True):
            if not fut.done():
                fut.set_result(result)
