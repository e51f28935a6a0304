"""Dynamic batching inside the instance: SageMaker's TorchServe variables, per model (its ``Environment``).

``SAGEMAKER_TS_BATCH_SIZE`` (most requests per batch; unset or 1: off, as in SageMaker) and
``SAGEMAKER_TS_MAX_BATCH_DELAY`` (ms, default 100 as TorchServe's ``max_batch_delay``). Requests queue;
a batch closes when it is full or when the delay has passed, and a request that arrives while the
model is idle runs at once (``Batcher`` says when it waits). Each request keeps its own decoding, error and
``Accept``: only the prediction is shared (``invoke_batch``), through the runtime's ``predict_batch``
or a user ``predict_fn`` whose first parameter is annotated as a list.
"""

from __future__ import annotations

import asyncio
import collections
import logging
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
# Called on the event loop with a request's outcome and the token it was queued with (Batcher.put).
Deliver = Callable[[Any, "Answer | Exception"], None]

log = logging.getLogger(__name__)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a setattr call per field, per request
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


class Batcher:
    """The queue in front of the model: one batch runs at a time (in ``executor``, or on the loop).

    When a batch is due: a request that reaches an idle model runs at once. Right after a batch the
    model is not idle in that sense: the requests it just answered are likely to come back (clients
    waiting on their answer before sending the next), so the next batch waits until as many requests
    are queued as were waiting plus just answered, or the batch is full, or ``max_delay`` has passed
    since the model became free, whichever comes first. Without that wait, closed-loop clients split
    into two groups that alternate (a batch of 1, then of n-1, forever), and a batch of one costs
    nearly as much as a batch of eight. No request waits longer than ``max_delay`` for company, and
    after a batch of one with nothing queued the next request runs at once (concurrency 1 pays nothing).
    """

    def __init__(
        self,
        run: Callable[[list[Invocation]], list[Answer | Exception]],
        settings: BatchSettings,
        executor: Executor | None = None,
    ) -> None:
        self.run = run
        self.settings = settings
        self.executor = executor
        self.batches = 0
        self.batched_requests = 0
        self._queue: collections.deque[tuple[Invocation, Deliver, Any]] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._expect = 1  # requests the next batch waits for (answered + waiting when the last one ended)
        self._free_at = float("-inf")  # when the model last finished a batch

    def put(self, invocation: Invocation, deliver: Deliver, token: Any) -> None:
        """Queue ``invocation``; ``deliver(token, outcome)`` gets its answer or its own error, on the loop.
        No task, coroutine or future per request (the worker's path: ``token`` is the exchange)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._queue.append((invocation, deliver, token))
        self._arrived.set()

    async def submit(self, invocation: Invocation) -> Answer:
        """The request's answer; raises its own error."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.put(invocation, _settle, future)
        return await future

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (see the class) until the next batch is due."""
        queue, arrived = self._queue, self._arrived
        want = min(self._expect, self.settings.max_size)
        deadline = self._free_at + self.settings.max_delay
        while len(queue) < want:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            arrived.clear()
            timer = loop.call_later(remaining, arrived.set)
            try:
                await arrived.wait()
            finally:
                timer.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue, max_size = self._queue, self.settings.max_size
        while True:
            if not queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather(loop)
            batch: list[tuple[Invocation, Deliver, Any]] = []
            while queue and len(batch) < max_size:
                entry = queue.popleft()
                if entry[1] is not _settle or not entry[2].done():  # a submit() whose caller went away
                    batch.append(entry)
            if not batch:
                continue
            invocations = [entry[0] for entry in batch]
            try:
                if self.executor is None:
                    outcomes = self.run(invocations)
                else:
                    outcomes = await loop.run_in_executor(self.executor, self.run, invocations)
            except Exception as e:
                outcomes = [e] * len(batch)
            self._free_at = loop.time()
            self._expect = len(batch) + len(queue)
            self.batches += 1
            self.batched_requests += len(batch)
            for (_, deliver, token), outcome in zip(batch, outcomes, strict=True):
                try:
                    deliver(token, outcome)
                except Exception:  # one request's delivery must not stop the queue
                    log.exception("delivering a batched answer failed")


def _settle(future: asyncio.Future[Answer], outcome: Answer | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
