"""Response streaming inside the instance (InvokeEndpointWithResponseStream).

The router asks for a stream with the ``x-modelhost-response-stream`` request header. What streams: a
``predict_fn`` / ``transform_fn`` that returns an iterator or generator (each item one chunk: ``str`` or
``bytes`` as they are, anything else through ``output_fn``; an item ``(chunk, content_type)`` sets the
response type when it is the first); anything else is one chunk. The iterator runs in the model's
executor; chunks cross to the event loop as they come, each sent as one ``PayloadPart`` frame. An error
before the first chunk is a plain HTTP error; after it, a ``ModelStreamError`` frame. A client that goes
away stops the iterator (``close()``: the generator's ``finally`` runs).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from modelhost.serving import eventstream
from modelhost.serving.batching import Invocation
from modelhost.serving.errors import ModelServerError
from modelhost.serving.handler import Context, Handler, as_bytes, is_stream

STREAM_HEADER = b"x-modelhost-response-stream"
CONTENT_TYPE_HEADER = b"x-amzn-sagemaker-content-type"
STREAM_SWITCH_INTERVAL = 0.0005

log = logging.getLogger(__name__)


def _chunks(items: Iterator[Any], handler: Handler, ctx: Context, encode: bool) -> Iterator[tuple[bytes, str | None]]:
    accept = ctx.accept_header or handler.default_accept
    for item in items:
        content_type = None
        if type(item) is tuple and len(item) == 2:
            item, content_type = item
        if encode and not isinstance(item, str | bytes | bytearray | memoryview):
            assert handler.output_fn is not None
            body, content_type, _ = handler.finish(handler.output_fn(item, accept, ctx), ctx)
            yield body, content_type
        else:
            yield as_bytes(item), content_type


def open_stream(handler: Handler, inv: Invocation) -> tuple[Iterator[tuple[bytes, str | None]], Context]:
    """The response as ``(chunk, content type or None)`` items; raises what fails before the iterator exists
    (in the runtime's error convention)."""
    data, ctx = handler.begin(inv.body, inv.content_type, inv.accept, inv.custom_attributes, inv.inference_id)
    content_type, accept = ctx.request_content_type or "application/json", ctx.accept_header or ""
    if handler.input_fn is None or handler.predict_fn is None or handler.output_fn is None:
        result = handler.transform(handler.model, data, content_type, accept, ctx)  # errors mapped already
        if is_stream(result):
            return _mapped(_chunks(result, handler, ctx, encode=False), handler), ctx
    else:
        try:
            prediction = handler.predict_fn(handler.input_fn(data, content_type, ctx), handler.model, ctx)
            if is_stream(prediction):
                return _mapped(_chunks(prediction, handler, ctx, encode=True), handler), ctx
            result = handler.output_fn(prediction, accept, ctx)
        except Exception as e:
            raise handler.map_error(e) from e
    body, out_type, _ = handler.finish(result, ctx)
    return iter([(body, out_type)]), ctx


def _mapped(chunks: Iterator[tuple[bytes, str | None]], handler: Handler) -> Iterator[tuple[bytes, str | None]]:
    try:
        yield from chunks
    except GeneratorExit:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        raise
    except Exception as e:
        raise handler.map_error(e) from e


def error_text(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, ModelServerError):
        return exc.status, exc.message
    tb = "".join(traceback.format_exception(exc))
    log.error("streamed invocation failed:\n%s", tb)
    return 500, f"{type(exc).__name__}: {exc}"


class _FastSwitching:
    """While a stream runs, a 0.5 ms GIL switch interval: its chunks cross threads (generation -> pump
    -> event loop) and the default 5 ms would be added per hop. Restored when the last stream ends
    (for plain requests it only costs CPU)."""

    active = 0
    saved = 0.005

    def __enter__(self) -> None:
        if _FastSwitching.active == 0:
            _FastSwitching.saved = sys.getswitchinterval()
            sys.setswitchinterval(STREAM_SWITCH_INTERVAL)
        _FastSwitching.active += 1

    def __exit__(self, *exc: object) -> None:
        _FastSwitching.active -= 1
        if _FastSwitching.active == 0:
            sys.setswitchinterval(_FastSwitching.saved)


class ChunkPump:
    """Runs the stream's iterator on a worker thread and queues what it produces for the event loop:
    ``("start", content_type, custom_attributes, first_chunk)``, ``("chunk", bytes)``, ``("error", exc)``,
    ``("end",)``. ``stop()`` makes the thread close the iterator at the next chunk."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _put(self, item: tuple[Any, ...]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def run(self, opener: Callable[[], tuple[Iterator[tuple[bytes, str | None]], Context]]) -> None:
        chunks: Iterator[tuple[bytes, str | None]] | None = None
        try:
            chunks, ctx = opener()
            first, first_type = next(chunks, (None, None))
            content_type = first_type or ctx.accept_header or "application/octet-stream"
            self._put(("start", content_type, ctx.response_custom_attributes, first))
            if first is None:
                self._put(("end",))
                return
            for chunk, _ in chunks:
                if self._stop.is_set():
                    break
                if chunk:
                    self._put(("chunk", chunk))
            self._put(("end",))
        except Exception as e:
            self._put(("error", e))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a stopped generator runs its finally (HF generation stops there)


async def serve_stream(
    handler: Handler, inv: Invocation, executor: Executor, receive: Any, send: Any, send_text: Any
) -> None:
    """One streamed /invocations: the status once the first chunk (or the error) is known, then frames."""
    with _FastSwitching():
        await _serve_stream(handler, inv, executor, receive, send, send_text)


async def _serve_stream(
    handler: Handler, inv: Invocation, executor: Executor, receive: Any, send: Any, send_text: Any
) -> None:
    loop = asyncio.get_running_loop()
    pump = ChunkPump(loop)
    work = loop.run_in_executor(executor, pump.run, lambda: open_stream(handler, inv))
    item = await pump.queue.get()
    if item[0] == "error":
        status, text = error_text(item[1])
        await send_text(send, status, text)
        await work
        return
    _, content_type, attrs, first = item
    headers = [
        (b"content-type", eventstream.CONTENT_TYPE.encode()),
        (CONTENT_TYPE_HEADER, content_type.encode("latin-1")),
    ]
    if attrs is not None:
        headers.append((b"x-amzn-sagemaker-custom-attributes", attrs.encode("latin-1")))
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    def gone(task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            pump.stop()
            pump.queue.put_nowait(("gone",))

    watch = asyncio.ensure_future(receive())  # completes with http.disconnect when the router hangs up
    watch.add_done_callback(gone)
    try:
        if first:
            await send({"type": "http.response.body", "body": eventstream.payload_part(first), "more_body": True})
        while True:
            item = await pump.queue.get()
            kind = item[0]
            if kind == "chunk":
                await send({"type": "http.response.body", "body": eventstream.payload_part(item[1]), "more_body": True})
            elif kind == "error":
                _, text = error_text(item[1])
                frame = eventstream.model_stream_error(text)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                break
            else:
                break
        await send({"type": "http.response.body", "body": b""})
    finally:
        watch.remove_done_callback(gone)
        watch.cancel()
        pump.stop()
        await work
