"""One instance process: load the model, then serve /ping and /invocations over HTTP/1.1 on a unix socket.

    python -m modelhost.serving.worker --uds /path/to/sock --model-dir /path/to/model

Env: MODELHOST_RUNTIME (a name of runtimes.RUNTIME_MODULES; guessed from the model files if unset),
MODELHOST_ERROR_FILE (gets a one-line reason when loading fails; exit code 3), MODELHOST_WORKER_THREADS (model
threads, default 1), MODELHOST_REQUIREMENTS_DIR (where code/requirements.txt installs are cached, one directory
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
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from modelhost.serving.batching import Batcher, BatchSettings, Invocation, invoke_batch
from modelhost.serving.errors import ModelLoadError, ModelServerError
from modelhost.serving.handler import Handler
from modelhost.serving.images import detect_runtime
from modelhost.serving.streaming import STREAM_HEADER, serve_stream

LOAD_FAILED_EXIT_CODE = 3
KEEP_ALIVE_SECONDS = 24 * 3600  # idle connections stay open; the server closes them when it stops the instance

log = logging.getLogger("modelhost.serving.worker")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Prebuilt messages: the hot path only fills in what differs per response.
_PING_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_EMPTY_BODY = {"type": "http.response.body", "body": b""}
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


class App:
    """Raw ASGI app: no routing framework on the per-request path."""

    def __init__(self, handler: Handler, threads: int = 1, batching: BatchSettings | None = None) -> None:
        self.handler = handler
        # Model code runs off the event loop so /ping answers while a slow prediction runs;
        # threads=0 runs it on the loop itself (no thread hop: faster for quick models).
        self.inline = threads == 0
        self.threads = max(threads, 1)
        self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="model")
        # Dynamic batching (SAGEMAKER_TS_BATCH_SIZE): requests go through one queue in front of the model.
        self.batcher = (
            Batcher(partial(invoke_batch, handler), batching, None if self.inline else self.executor)
            if batching is not None
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        if path == "/invocations" and method == "POST":
            await self._invocations(scope, receive, send)
        elif path == "/ping" and (method == "GET" or method == "HEAD"):
            await send(_PING_START)
            await send(_EMPTY_BODY)
        elif path == "/execution-parameters" and method == "GET":
            await self._execution_parameters(send)
        else:
            await _send_text(send, 404, f"{method} {path} not found")

    async def _execution_parameters(self, send: Send) -> None:
        """Batch transform asks this when the job leaves values unset (as MMS answers it): two
        requests in flight per model thread keep the model busy while the next body arrives."""
        concurrent = 2 * self.threads
        if self.batcher is not None:  # enough requests in flight to fill a batch (x 6 MB within the 100 MB cap)
            concurrent = min(max(concurrent, self.batcher.settings.max_size), 16)
        body = json.dumps(
            {"MaxConcurrentTransforms": concurrent, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = accept = custom_attributes = inference_id = None
        stream = False
        for name, value in scope["headers"]:
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

        message = await receive()
        body: bytes = message.get("body", b"")
        if message.get("more_body"):
            chunks = [body]
            while message.get("more_body"):
                message = await receive()
                chunks.append(message.get("body", b""))
            body = b"".join(chunks)
        if stream:  # InvokeEndpointWithResponseStream (serving/streaming.py)
            invocation = Invocation(body, content_type, accept, custom_attributes, inference_id)
            await serve_stream(self.handler, invocation, self.executor, receive, send, _send_text)
            return

        try:
            if self.batcher is not None:
                invocation = Invocation(body, content_type, accept, custom_attributes, inference_id)
                out, out_type, attrs = await self.batcher.submit(invocation)
            elif self.inline:
                out, out_type, attrs = self.handler.invoke(body, content_type, accept, custom_attributes, inference_id)
            else:
                out, out_type, attrs = await asyncio.get_running_loop().run_in_executor(
                    self.executor,
                    self.handler.invoke,
                    body,
                    content_type,
                    accept,
                    custom_attributes,
                    inference_id,
                )
        except ModelServerError as e:
            await _send_text(send, e.status, e.message)
            return
        except Exception as e:
            tb = "".join(traceback.format_exception(e))
            log.error("invocation failed:\n%s", tb)
            await _send_text(send, 500, f"{type(e).__name__}: {e}\n{tb}")
            return
        headers = [(b"content-type", out_type.encode("latin-1")), (b"content-length", str(len(out)).encode())]
        if attrs is not None:
            headers.append((b"x-amzn-sagemaker-custom-attributes", attrs.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})


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

    import uvicorn  # after loading: a failing model never pays for it

    if os.path.exists(args.uds):
        os.unlink(args.uds)  # stale socket from a previous run of this instance
    app = App(handler, threads=int(os.environ.get("MODELHOST_WORKER_THREADS", "1")), batching=batching)
    config = uvicorn.Config(
        app,
        uds=args.uds,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        # The only client is the router: no forwarded headers to trust, no Date/Server headers to build.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        # The only client is the server's connection pool. uvicorn's default (5 s) closes idle
        # connections under it, and one closed just as the pool reuses it loses that request.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    print(
        f"modelhost worker pid {os.getpid()} serving {handler.runtime.name} model from {args.model_dir} on {args.uds}",
        flush=True,
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the previous handler;
    # make that a clean exit 0 so the platform can tell a stop from a crash.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.Server(config).run()
    finally:
        app.executor.shutdown(wait=False, cancel_futures=True)
    return 0


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
