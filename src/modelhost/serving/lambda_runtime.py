"""The Lambda runtime inside an instance: ``handler(event, context)`` functions behind the container
contract (``GET /ping``, ``POST /invocations``).

Started by the worker when ``MODELHOST_RUNTIME=lambda``. The init phase runs once, before the socket
exists: ``code/requirements.txt``-style ``requirements.txt`` in ``LAMBDA_TASK_ROOT`` installed (once
per content), the handler module (``_HANDLER`` = ``module.function``) imported — module-level code
runs here, as in Lambda's init. An init error does not stop the instance: every invocation answers
it as Lambda does (``Runtime.ImportModuleError`` / ``Runtime.HandlerNotFound``). Each invocation
gets a real context object; its output is logged between ``START`` / ``END`` / ``REPORT`` lines and
its last 4 KB returned (``x-amz-log-result``) for ``LogType: Tail``. An error in the function is
still a 200, with ``x-amz-function-error: Unhandled`` and Lambda's ``errorMessage`` / ``errorType`` /
``stackTrace`` body.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

LOG_TAIL = 4096


class LambdaContext:
    """What Lambda passes as ``context``."""

    def __init__(self, request_id: str, deadline: float, client_context: Any = None) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = env.get("MODELHOST_LAMBDA_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = client_context
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


class _Tee(io.TextIOBase):
    """sys.stdout/stderr during an invocation: to the instance log and to the invocation's buffer."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.buffer_of: io.StringIO | None = None

    def write(self, text: str) -> int:
        self.out.write(text)
        if self.buffer_of is not None:
            self.buffer_of.write(text)
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def error_body(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": [line for line in traceback.format_list(frames)],
    }


class Function:
    def __init__(self, task_root: Path, handler: str) -> None:
        self.fn: Callable[[Any, LambdaContext], Any] | None = None
        self.init_error: dict[str, Any] | None = None
        module_name, _, fn_name = handler.rpartition(".")
        try:
            if str(task_root) not in sys.path:
                sys.path.insert(0, str(task_root))
            module = importlib.import_module(module_name)
        except Exception as exc:
            self.init_error = error_body(exc, "Runtime.ImportModuleError")
            self.init_error["errorMessage"] = f"Unable to import module '{module_name}': {exc}"
            self.init_error["stackTrace"] = []
            traceback.print_exc()
            return
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            self.init_error = {
                "errorMessage": f"Handler '{fn_name}' missing on module '{module_name}'",
                "errorType": "Runtime.HandlerNotFound",
                "requestId": "",
                "stackTrace": [],
            }
            return
        self.fn = fn

    def run(self, event: Any, context: LambdaContext) -> tuple[bytes, bool]:
        """(response body, whether it is a function error)."""
        if self.init_error is not None:
            return json.dumps({**self.init_error, "requestId": context.aws_request_id}).encode(), True
        assert self.fn is not None
        try:
            result = self.fn(event, context)
        except Exception as exc:
            traceback.print_exc()
            return json.dumps({**error_body(exc), "requestId": context.aws_request_id}).encode(), True
        try:
            return json.dumps(result).encode(), False
        except (TypeError, ValueError) as exc:
            body = {
                "errorMessage": f"Unable to marshal response: {exc}",
                "errorType": "Runtime.MarshalError",
                "requestId": context.aws_request_id,
                "stackTrace": [],
            }
            return json.dumps(body).encode(), True


class App:
    def __init__(self, function: Function, stdout: _Tee, stderr: _Tee) -> None:
        self.function = function
        self.stdout = stdout
        self.stderr = stderr
        self.timeout = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
        self.memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handler")
        self.lock = threading.Lock()  # one invocation at a time per instance, as a Lambda sandbox

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ping":
            await _reply(send, 200, b"", [])
            return
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            await _reply(send, 404, b"not found", [])
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out, failed, tail = await asyncio.get_running_loop().run_in_executor(self.executor, self._invoke, body, headers)
        extra = [(b"x-amz-log-result", base64.b64encode(tail.encode()[-LOG_TAIL:]))]
        if failed:
            extra.append((b"x-amz-function-error", b"Unhandled"))
        await _reply(send, 200, out, extra)

    def _invoke(self, body: bytes, headers: dict[str, str]) -> tuple[bytes, bool, str]:
        request_id = headers.get("x-amz-request-id", "")
        client_context = None
        if headers.get("x-amz-client-context"):
            try:
                client_context = json.loads(base64.b64decode(headers["x-amz-client-context"]))
            except ValueError:
                client_context = None
        with self.lock:
            buffer = io.StringIO()
            self.stdout.buffer_of = self.stderr.buffer_of = buffer
            started = time.time()
            print(f"START RequestId: {request_id} Version: $LATEST", flush=True)
            try:
                event = json.loads(body) if body else {}
                out, failed = self.function.run(
                    event, LambdaContext(request_id, started + self.timeout, client_context)
                )
                took = (time.time() - started) * 1000
                used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
                print(f"END RequestId: {request_id}", flush=True)
                print(
                    f"REPORT RequestId: {request_id}\tDuration: {took:.2f} ms\tBilled Duration: {int(took) + 1} ms\t"
                    f"Memory Size: {self.memory} MB\tMax Memory Used: {used} MB",
                    flush=True,
                )
            finally:
                self.stdout.buffer_of = self.stderr.buffer_of = None
        return out, failed, buffer.getvalue()


async def _reply(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelhost lambda runtime")
    parser.add_argument("--uds", required=True)
    parser.add_argument("--model-dir", required=True)
    args = parser.parse_args(argv)
    task_root = Path(os.environ.get("LAMBDA_TASK_ROOT", "."))
    os.chdir(task_root)
    stdout, stderr = _Tee(sys.stdout), _Tee(sys.stderr)
    sys.stdout, sys.stderr = stdout, stderr
    from modelhost.serving.errors import ModelLoadError
    from modelhost.serving.requirements import ensure_requirements

    try:
        ensure_requirements(task_root, task_root)
    except ModelLoadError as exc:  # cannot run at all: the instance fails to start with the reason
        error_file = os.environ.get("MODELHOST_ERROR_FILE")
        if error_file:
            Path(error_file).write_text(exc.reason.replace("\n", " ") + "\n", encoding="utf-8")
        print(exc.reason, flush=True)
        return 3
    function = Function(task_root, os.environ.get("_HANDLER", "lambda_function.lambda_handler"))

    import uvicorn

    if os.path.exists(args.uds):
        os.unlink(args.uds)
    config = uvicorn.Config(
        App(function, stdout, stderr),
        uds=args.uds,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=24 * 3600,
    )
    uvicorn.Server(config).run()
    return 0
