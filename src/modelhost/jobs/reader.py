"""Reading ahead: one object read, split and packed into batches in a thread, a bounded number of
chunks ahead of the requests (memory is bounded by the batches in flight, not the object size)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from modelhost.jobs.batching import Batch

CHUNK_ITEMS = 64  # batches handed from the reader thread at once (small records: fewer thread hops)
CHUNK_BYTES = 1024 * 1024


class _End:
    pass


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Reader:
    """Reads, splits and packs one object in a thread, a bounded number of chunks ahead."""

    def __init__(self, make: Callable[[], Iterator[Batch]], ahead: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue(max(ahead, 2))
        self.make = make
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="transform-reader", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                fut.result(timeout=0.2)
                return True
            except concurrent.futures.TimeoutError:
                if self._stop.is_set():
                    fut.cancel()
                    return False
            except (concurrent.futures.CancelledError, RuntimeError):
                return False

    def _run(self) -> None:
        it = self.make()
        try:
            chunk: list[Batch] = []
            size = 0
            for batch in it:
                chunk.append(batch)
                size += len(batch.body)
                if len(chunk) >= CHUNK_ITEMS or size >= CHUNK_BYTES:
                    if not self._put(chunk):
                        return
                    chunk, size = [], 0
            if (chunk and not self._put(chunk)) or not self._put(_End()):
                return
        except BaseException as exc:  # reported to the consumer: the object fails with it
            self._put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    async def chunks(self) -> AsyncIterator[list[Batch]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def stop(self) -> None:
        self._stop.set()
