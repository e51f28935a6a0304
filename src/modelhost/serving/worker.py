"""One instance process: load the model, then serve /ping and /invocations over HTTP/1.1 on a unix socket.

    python -m modelhost.serving.worker --uds /path/to/sock --model-dir /path/to/model

Env: MODELHOST_RUNTIME (a name of runtimes.RUNTIME_MODULES; guessed from the model files if unset),
MODELHOST_ERROR_FILE (gets a one-line reason when loading fails; exit code 3), MODELHOST_WORKER_THREADS (model
threads; unset: one, or the event loop itself once the model shows to be quick, see InlinePolicy),
MODELHOST_REQUIREMENTS_DIR (where code/requirements.txt installs are cached, one directory
per content hash; see serving/requirements.py), plus the SageMaker container variables (SAGEMAKER_PROGRAM,
SAGEMAKER_SUBMIT_DIRECTORY, SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, SAGEMAKER_CONTAINER_LOG_LEVEL,
SAGEMAKER_TS_BATCH_SIZE / SAGEMAKER_TS_MAX_BATCH_DELAY for dynamic batching, see serving/batching.py) and the
runtimes' own (SPACY_MODEL, MODELHOST_ONNX_THREADS, SAGEMAKER_TFS_DEFAULT_MODEL_NAME, PIP_* for pip).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.serving import allocator
from modelhost.serving.batching import Batcher, BatchSettings, Invocation, invoke_batch
from modelhost.serving.errors import ModelLoadError, ModelServerError
from modelhost.serving.handler import Handler
from modelhost.serving.images import detect_runtime
from modelhost.serving.streaming import STREAM_HEADER, serve_stream

if TYPE_CHECKING:  # imported when serving starts, after the model loaded (as uvicorn was)
    from modelhost.serving.wire import Exchange

LOAD_FAILED_EXIT_CODE = 3
KEEP_ALIVE_SECONDS = 24 * 3600  # multi-model instances (uvicorn): idle connections stay open

log = logging.getLogger("modelhost.serving.worker")

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

_TEXT = b"text/plain; charset=utf-8"


async def _send_text(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", _TEXT), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class InlinePolicy:
    """Whether the next request runs on the event loop instead of the model thread.

    With the default ``MODELHOST_WORKER_THREADS`` (unset), a model that has answered
    ``QUICK_STREAK`` requests in a row within ``QUICK_CPU`` of CPU time and ``QUICK_WALL`` of wall
    time (small bodies only) runs on the loop: the thread hop costs more than such a model. CPU time,
    so a busy machine preempting the call does not make a quick model look slow; wall time, so a
    call that waits (I/O, sleep) never does. Any slower call sends the next requests back to the
    thread, so /ping never waits behind more than a quick call (or that one slow call).

    On the loop the CPU clock (a system call, unlike the wall clock) is read only when it can tell:
    a call within ``QUICK_CPU`` of wall time took no more CPU than that. A call between the two
    bounds (a quick one preempted, or a slow one) makes the next ``VERIFY_CALLS`` calls read it
    (``verify``); one of those over ``QUICK_CPU`` of CPU sends the requests back to the thread."""

    QUICK_CPU = 0.001
    QUICK_WALL = 0.010
    QUICK_STREAK = 64
    QUICK_BODY = 64 * 1024
    VERIFY_CALLS = 8

    __slots__ = ("streak", "verify")

    def __init__(self) -> None:
        self.streak = 0
        self.verify = 0

    def inline(self, body: bytes) -> bool:
        return self.streak >= self.QUICK_STREAK and len(body) <= self.QUICK_BODY

    def observe(self, cpu: float | None, wall: float, body: bytes) -> None:
        """One call's CPU time (None: not read) and wall time."""
        if wall > self.QUICK_WALL or len(body) > self.QUICK_BODY:
            self.streak = 0
        elif wall <= self.QUICK_CPU:
            self.streak += 1
            if self.verify:
                self.verify -= 1
        elif cpu is None:
            self.verify = self.VERIFY_CALLS  # quick, or slow: the next calls read the CPU clock
        elif cpu <= self.QUICK_CPU:
            self.streak += 1
            if self.verify:
                self.verify -= 1
        else:
            self.streak = 0


class App:
    """The container contract on the instance's socket (serving/wire.py hands each request whole)."""

    def __init__(self, handler: Handler, threads: int | None = 1, batching: BatchSettings | None = None) -> None:
        self.handler = handler
        # Model code runs off the event loop so /ping answers while a slow prediction runs;
        # threads=0 runs it on the loop itself (no thread hop: faster for quick models);
        # None (the default) runs it on the loop once it has shown to be quick (InlinePolicy).
        self.inline = threads == 0
        self.policy = InlinePolicy() if threads is None else None
        self.threads = max(threads or 1, 1)
        self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="model")
        # Dynamic batching (SAGEMAKER_TS_BATCH_SIZE): requests go through one queue in front of the model.
        self.batcher = (
            Batcher(partial(invoke_batch, handler), batching, None if self.inline else self.executor)
            if batching is not None
            else None
        )
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak refs)

    def handle(self, exchange: Exchange) -> None:
        path, method = exchange.path, exchange.method
        if path == b"/invocations" and method == b"POST":
            self._invocations(exchange)
        elif path == b"/ping" and (method == b"GET" or method == b"HEAD"):
            exchange.respond(200, [], b"")
        elif path == b"/execution-parameters" and method == b"GET":
            self._execution_parameters(exchange)
        else:
            _respond_text(exchange, 404, f"{method.decode('latin-1')} {path.decode('latin-1')} not found")

    def _execution_parameters(self, exchange: Exchange) -> None:
        """Batch transform asks this when the job leaves values unset (as MMS answers it): two
        requests in flight per model thread keep the model busy while the next body arrives."""
        concurrent = 2 * self.threads
        if self.batcher is not None:  # enough requests in flight to fill a batch (x 6 MB within the 100 MB cap)
            concurrent = min(max(concurrent, self.batcher.settings.max_size), 16)
        body = json.dumps(
            {"MaxConcurrentTransforms": concurrent, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
        ).encode()
        exchange.respond(200, [(b"content-type", b"application/json")], body)

    def _invocations(self, exchange: Exchange) -> None:
        content_type = accept = custom_attributes = inference_id = None
        stream = False
        for name, value in exchange.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"x-amzn-sagemaker-custom-attributes":
                custom_attributes = value.decode("latin-1")
            elif name == b"x-amzn-sagemaker-inference-id":
                inference_id = value.decode("latin-1")
            elif name == STREAM_HEADER:
                stream = True
        body = exchange.body
        if self.batcher is not None and not stream:  # answered by the batcher's loop (no task per request)
            self.batcher.put(
                Invocation(body, content_type, accept, custom_attributes, inference_id), _deliver, exchange
            )
            return
        if stream:  # waits on the loop: a task of its own
            invocation = Invocation(body, content_type, accept, custom_attributes, inference_id)
            task = asyncio.get_running_loop().create_task(self._stream(exchange, invocation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        policy = self.policy
        if self.inline or (policy is not None and policy.inline(body)):
            cpu = time.thread_time() if policy is not None and policy.verify else None
            started = time.perf_counter()
            try:
                answer = self.handler.invoke(body, content_type, accept, custom_attributes, inference_id)
            except Exception as e:
                _respond_error(exchange, e)
            else:
                _respond_answer(exchange, answer)
            if policy is not None:
                wall = time.perf_counter() - started
                policy.observe(None if cpu is None else time.thread_time() - cpu, wall, body)
            return
        # On the model thread; the answer is written back on the loop (no task, no asyncio future).
        loop = asyncio.get_running_loop()
        future = self.executor.submit(self._timed, body, content_type, accept, custom_attributes, inference_id)

        def done(f: Future[tuple[Answer, float, float]]) -> None:
            exc = f.exception()
            if exc is not None:
                if policy is not None:
                    policy.streak = 0
                _respond_error(exchange, exc)
                return
            answer, cpu, wall = f.result()
            if policy is not None:
                policy.observe(cpu, wall, body)
            _respond_answer(exchange, answer)

        future.add_done_callback(lambda f: loop.call_soon_threadsafe(done, f))

    def _timed(self, *args: Any) -> tuple[Answer, float, float]:
        """The answer, and the CPU and wall time of the call itself on the model thread: not the wait
        in the executor's queue, which under load would make every quick model look slow."""
        started, cpu = time.perf_counter(), time.thread_time()
        answer = self.handler.invoke(*args)
        return answer, time.thread_time() - cpu, time.perf_counter() - started

    async def _stream(self, exchange: Exchange, invocation: Invocation) -> None:
        """InvokeEndpointWithResponseStream (serving/streaming.py), over the exchange's ASGI pair."""
        receive, send = exchange.asgi(body_taken=True)  # the invocation holds the body
        try:
            await serve_stream(self.handler, invocation, self.executor, receive, send, _send_text)
        except Exception as e:
            if not exchange.done:
                _respond_error(exchange, e)
            else:
                log.exception("streamed invocation failed")


Answer = tuple[bytes, str, str | None]


def _respond_answer(exchange: Exchange, answer: Answer) -> None:
    out, out_type, attrs = answer
    headers = [(b"content-type", out_type.encode("latin-1"))]
    if attrs is not None:
        headers.append((b"x-amzn-sagemaker-custom-attributes", attrs.encode("latin-1")))
    exchange.respond(200, headers, out)


def _deliver(exchange: Exchange, outcome: Answer | Exception) -> None:
    if isinstance(outcome, Exception):
        _respond_error(exchange, outcome)
    else:
        _respond_answer(exchange, outcome)


def _respond_error(exchange: Exchange, e: BaseException) -> None:
    if isinstance(e, ModelServerError):
        _respond_text(exchange, e.status, e.message)
        return
    tb = "".join(traceback.format_exception(e))
    log.error("invocation failed:\n%s", tb)
    _respond_text(exchange, 500, f"{type(e).__name__}: {e}\n{tb}")


def _respond_text(exchange: Exchange, status: int, text: str) -> None:
    exchange.respond(status, [(b"content-type", _TEXT)], text.encode("utf-8"))


def _log_level() -> int:
    value = os.environ.get("SAGEMAKER_CONTAINER_LOG_LEVEL", "").strip()
    if value.isdigit():
        return int(value)
    level = logging.getLevelName(value.upper()) if value else logging.INFO
    return level if isinstance(level, int) else logging.INFO


def load_handler(model_dir: Path) -> Handler:
    if not model_dir.is_dir():
        raise ModelLoadError(f"Failed to load model: model dir {model_dir} does not exist")
    runtime = os.environ.get("MODELHOST_RUNTIME") or detect_runtime(model_dir)
    if runtime is None:
        raise ModelLoadError(f"MODELHOST_RUNTIME is not set and no known model files are in {model_dir}")
    return Handler(model_dir, runtime)


def _fail(reason: str) -> None:
    traceback.print_exc(file=sys.stderr)
    print(f"modelhost worker: {reason}", file=sys.stderr, flush=True)
    error_file = os.environ.get("MODELHOST_ERROR_FILE")
    if error_file:
        Path(error_file).write_text(reason.replace("\n", " ") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelhost.serving.worker")
    parser.add_argument("--uds", required=True, help="unix socket path to listen on")
    parser.add_argument("--model-dir", required=True, type=Path, help="extracted model artifact (/opt/ml/model)")
    args = parser.parse_args(argv)
    _exit_with_parent()
    if os.environ.get("MODELHOST_RUNTIME") == "lambda":  # a Lambda function: serving/lambda_runtime.py
        from modelhost.serving import lambda_runtime

        return lambda_runtime.main(argv)
    logging.basicConfig(stream=sys.stderr, level=_log_level(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() == "true":  # the multi-model container contract
        from modelhost.serving import multimodel

        signal.signal(signal.SIGTERM, _exit_cleanly)
        return multimodel.serve(args.uds, KEEP_ALIVE_SECONDS)

    # Before the model allocates anything (serving/allocator.py). Not for multi-model instances: their
    # cache budgets each model by the resident memory its load adds, and kept free memory hides it.
    allocator.keep_freed_memory()

    # Load first: the socket only exists once the model is ready, so /ping == loaded.
    try:
        batching = BatchSettings.from_env()
        handler = load_handler(args.model_dir)
    except ModelLoadError as e:
        _fail(e.reason)
        return LOAD_FAILED_EXIT_CODE
    except BaseException as e:  # anything else (SystemExit from user code, ...) is still a load failure
        _fail(f"Failed to load model: {type(e).__name__}: {e}")
        return LOAD_FAILED_EXIT_CODE

    if os.path.exists(args.uds):
        os.unlink(args.uds)  # stale socket from a previous run of this instance
    threads = os.environ.get("MODELHOST_WORKER_THREADS", "").strip()
    app = App(handler, threads=int(threads) if threads else None, batching=batching)
    print(
        f"modelhost worker pid {os.getpid()} serving {handler.runtime.name} model from {args.model_dir} on {args.uds}",
        flush=True,
    )
    try:
        serve(app, args.uds)
    finally:
        app.executor.shutdown(wait=False, cancel_futures=True)
    return 0


def serve(app: App, uds: str) -> None:
    """Serve ``app`` on ``uds`` until SIGTERM/SIGINT, then finish the requests in flight and exit
    (return) cleanly, so the platform can tell a stop from a crash. Connections stay open while
    idle: the only client is the server's pool, which closes them when it stops the instance."""
    import uvloop

    from modelhost.serving.wire import InstanceServer

    async def run() -> None:
        server = InstanceServer(app)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(server.stop()))
        await server.serve(uds)

    uvloop.run(run())


def _exit_with_parent() -> None:
    """Exit when the server that started us is gone (kill -9 of the server must not leave
    orphaned instances holding memory; the restarted server starts fresh ones)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
