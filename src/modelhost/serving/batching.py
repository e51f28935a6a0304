"""Dynamic batching inside the instance: SageMaker's TorchServe variables, per model (its ``Environment``).

``SAGEMAKER_TS_BATCH_SIZE`` (most requests per batch; unset or 1: off, as in SageMaker) and
``SAGEMAKER_TS_MAX_BATCH_DELAY`` (ms, default 100 as TorchServe's ``max_batch_delay``). Requests queue;
a batch closes when it is full or when the delay since its *first* request has passed, and a request
that arrives while the model is idle runs at once. Each request keeps its own decoding, error and
``Accept``: only the prediction is shared (``invoke_batch``), through the runtime's ``predict_batch``
or a user ``predict_fn`` whose first parameter is annotated as a list.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from modelhost.serving.errors import ModelLoadError
from modelhost.serving.handler import Handler

BATCH_SIZE_ENV = "SAGEMAKER_TS_BATCH_SIZE"
BATCH_DELAY_ENV = "SAGEMAKER_TS_MAX_BATCH_DELAY"
DEFAULT_DELAY_MS = 100.0
MAX_BATCH_SIZE = 1024

Answer = tuple[bytes, str, str | None]


@dataclass(frozen=True, slots=True)
class Invocation:
    body: bytes
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    inference_id: str | None = None


@dataclass(frozen=True)
class BatchSettings:
    max_size: int
    max_delay: float  # seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BatchSettings | None:
        """The model's settings; None when batching is off. Bad values are a load failure naming the variable."""
        size_text = env.get(BATCH_SIZE_ENV, "").strip()
        if not size_text:
            return None
        try:
            size = int(size_text)
        except ValueError:
            raise ModelLoadError(f"{BATCH_SIZE_ENV}={size_text!r} is not an integer") from None
        if not 1 <= size <= MAX_BATCH_SIZE:
            raise ModelLoadError(f"{BATCH_SIZE_ENV}={size} must be between 1 and {MAX_BATCH_SIZE}")
        delay_text = env.get(BATCH_DELAY_ENV, "").strip()
        try:
            delay = float(delay_text) if delay_text else DEFAULT_DELAY_MS
        except ValueError:
            raise ModelLoadError(f"{BATCH_DELAY_ENV}={delay_text!r} is not a number of milliseconds") from None
        if not 0 <= delay <= 60_000:
            raise ModelLoadError(f"{BATCH_DELAY_ENV}={delay_text} must be between 0 and 60000 (ms)")
        if size == 1:
            return None
        return cls(size, delay / 1000.0)


def invoke_one(handler: Handler, inv: Invocation) -> Answer | Exception:
    try:
        return handler.invoke(inv.body, inv.content_type, inv.accept, inv.custom_attributes, inv.inference_id)
    except Exception as e:
        return e


def invoke_batch(handler: Handler, invocations: list[Invocation]) -> list[Answer | Exception]:
    """Each request's answer or error, in order; the predictions of those that decode run together."""
    if len(invocations) == 1 or handler.predict_fn is None or handler.input_fn is None or handler.output_fn is None:
        return [invoke_one(handler, inv) for inv in invocations]  # a user transform_fn: one by one
    input_fn, predict_fn, output_fn = handler.input_fn, handler.predict_fn, handler.output_fn
    results: list[Answer | Exception | None] = [None] * len(invocations)
    live: list[int] = []
    datas: list[Any] = []
    contexts = []
    for i, inv in enumerate(invocations):
        try:
            data, ctx = handler.begin(inv.body, inv.content_type, inv.accept, inv.custom_attributes, inv.inference_id)
        except Exception as e:
            results[i] = e
            continue
        try:
            datas.append(input_fn(data, ctx.request_content_type, ctx))
        except Exception as e:
            results[i] = handler.map_error(e)
            continue
        live.append(i)
        contexts.append(ctx)
    model = handler.model
    if handler.predict_batch is not None and len(datas) > 1:
        try:
            predictions = handler.predict_batch(datas, model, contexts)
        except Exception as e:
            predictions = [e] * len(datas)
    else:
        predictions = []
        for data, ctx in zip(datas, contexts, strict=True):
            try:
                predictions.append(predict_fn(data, model, ctx))
            except Exception as e:
                predictions.append(e)
    for i, prediction, ctx in zip(live, predictions, contexts, strict=True):
        if isinstance(prediction, Exception):
            results[i] = handler.map_error(prediction)
            continue
        try:
            out = output_fn(prediction, ctx.accept_header, ctx)
        except Exception as e:
            results[i] = handler.map_error(e)
            continue
        try:
            results[i] = handler.finish(out, ctx)
        except Exception as e:
            results[i] = e
    return [r if r is not None else RuntimeError("no answer") for r in results]


class _Entry:
    __slots__ = ("invocation", "future", "arrived", "idle")

    def __init__(self, invocation: Invocation, future: asyncio.Future[Answer], arrived: float, idle: bool) -> None:
        self.invocation = invocation
        self.future = future
        self.arrived = arrived
        self.idle = idle  # the model was idle when it arrived: no reason to wait


class Batcher:
    """The queue in front of the model: one batch runs at a time (in ``executor``, or on the loop)."""

    def __init__(
        self,
        run: Callable[[list[Invocation]], list[Answer | Exception]],
        settings: BatchSettings,
        executor: Executor | None = None,
    ) -> None:
        self.run = run
        self.settings = settings
        self.executor = executor
        self.busy = False
        self.batches = 0
        self.batched_requests = 0
        self._queue: collections.deque[_Entry] = collections.deque()
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, invocation: Invocation) -> Answer:
        """The request's answer; raises its own error."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._loop())
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.append(_Entry(invocation, future, loop.time(), not self.busy))
        if len(self._queue) >= self.settings.max_size:
            self._full.set()
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue, max_size = self._queue, self.settings.max_size
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = queue[0]
            if not first.idle and len(queue) < max_size:
                remaining = first.arrived + self.settings.max_delay - loop.time()
                if remaining > 0:
                    self._full.clear()
                    try:
                        await asyncio.wait_for(self._full.wait(), remaining)
                    except TimeoutError:
                        pass
            batch: list[_Entry] = []
            while queue and len(batch) < max_size:
                entry = queue.popleft()
                if not entry.future.done():  # its client went away
                    batch.append(entry)
            if not batch:
                continue
            self.busy = True
            invocations = [e.invocation for e in batch]
            try:
                if self.executor is None:
                    outcomes = self.run(invocations)
                else:
                    outcomes = await loop.run_in_executor(self.executor, self.run, invocations)
            except Exception as e:
                outcomes = [e] * len(batch)
            finally:
                self.busy = False
            self.batches += 1
            self.batched_requests += len(batch)
            for entry, outcome in zip(batch, outcomes, strict=True):
                if entry.future.done():
                    continue
                if isinstance(outcome, Exception):
                    entry.future.set_exception(outcome)
                else:
                    entry.future.set_result(outcome)
