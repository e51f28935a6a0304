"""modelhost's own small routes: ``GET /metrics`` (Prometheus), ``GET /ping`` (liveness) and
``GET /modelhost/endpoints/{name}/logs?offset=N`` and ``GET /modelhost/functions/{name}/logs?offset=N`` (an
endpoint's or a Lambda function's log stream, for ``modelhost logs``).

The logs route checks its parameters (``log_request``: the name as an endpoint name, ``offset`` a
non-negative integer) and answers a bad one with a JSON 1.1 ``ValidationException``; who may read
the logs is decided before it runs (the front door's middleware)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from modelhost.errors import ValidationException
from modelhost.hosting.metrics import REGISTRY
from modelhost.server.asgi import request_id
from modelhost.server.json_wire import error_response
from modelhost.server.runtime import NAME, NAME_PATTERN
from modelhost.store.logs import endpoint_log_path, function_log_path

MAX_LOG_READ = 4 * 1024 * 1024
MAX_OFFSET = 2**63 - 1  # what a file offset can be


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def ping(_request: Request) -> Response:
    return PlainTextResponse("")


def _invalid(value: str, member: str, constraint: str) -> ValidationException:
    shown = value if len(value) <= 100 else value[:100] + "..."
    return ValidationException(
        f"1 validation error detected: Value '{shown}' at '{member}' failed to satisfy constraint: Member must "
        f"{constraint}"
    )


FUNCTION_NAME_PATTERN = "[a-zA-Z0-9-_]{1,64}"  # Lambda's FunctionName (a plain name; no ARN here)
FUNCTION_NAME = re.compile(FUNCTION_NAME_PATTERN)


def log_request(request: Request, function: bool = False) -> tuple[str, int]:
    """(endpoint or function name, offset) of a logs request, checked (ValidationException)."""
    name: str = request.path_params["name"]
    if function and not FUNCTION_NAME.fullmatch(name):
        raise _invalid(name, "functionName", f"satisfy regular expression pattern: {FUNCTION_NAME_PATTERN}")
    if not function and not NAME.fullmatch(name):
        raise _invalid(name, "endpointName", f"satisfy regular expression pattern: {NAME_PATTERN}")
    text = request.query_params.get("offset", "0")
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_OFFSET:
        raise _invalid(text, "offset", f"be an integer between 0 and {MAX_OFFSET}")
    return name, int(text)


def _logs_route(logs_dir: Path, kind: str, path_of: Callable[[Path, str], Path]) -> Route:
    function = kind == "functions"
    what = "function" if function else "endpoint"

    async def read_logs(request: Request) -> Response:
        """The log stream from a byte offset (the CLI polls this for --follow)."""
        try:
            name, offset = log_request(request, function)
        except ValidationException as err:
            return error_response(err, request_id(request.scope))
        path = path_of(logs_dir, name)

        def read() -> bytes | None:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(MAX_LOG_READ)
            except FileNotFoundError:
                return None

        data = await asyncio.to_thread(read)
        if data is None:
            return PlainTextResponse(f"No logs for {what} {name}.\n", status_code=404)
        return Response(data, media_type="text/plain", headers={"X-Modelhost-Next-Offset": str(offset + len(data))})

    # {name:path}: a name with (encoded) slashes reaches the check instead of a plain 404.
    return Route(f"/modelhost/{kind}/{{name:path}}/logs", read_logs, methods=["GET"])


def endpoint_logs(logs_dir: Path) -> Route:
    return _logs_route(logs_dir, "endpoints", endpoint_log_path)


def function_logs(logs_dir: Path) -> Route:
    return _logs_route(logs_dir, "functions", function_log_path)


def routes(logs_dir: Path) -> list[Route]:
    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        endpoint_logs(logs_dir),
        function_logs(logs_dir),
    ]
