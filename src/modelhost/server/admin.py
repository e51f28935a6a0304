"""modelhost's own small routes: ``GET /metrics`` (Prometheus), ``GET /ping`` (liveness) and
``GET /modelhost/endpoints/{name}/logs?offset=N`` (an endpoint's log stream, for ``modelhost logs``).

The logs route checks its parameters (``log_request``: the name as an endpoint name, ``offset`` a
non-negative integer) and answers a bad one with a JSON 1.1 ``ValidationException``; who may read
the logs is decided before it runs (the front door's middleware)."""

from __future__ import annotations

import asyncio
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
from modelhost.store.logs import endpoint_log_path

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


def log_request(request: Request) -> tuple[str, int]:
    """(endpoint name, offset) of a logs request, checked (ValidationException)."""
    name: str = request.path_params["name"]
    if not NAME.fullmatch(name):
        raise _invalid(name, "endpointName", f"satisfy regular expression pattern: {NAME_PATTERN}")
    text = request.query_params.get("offset", "0")
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_OFFSET:
        raise _invalid(text, "offset", f"be an integer between 0 and {MAX_OFFSET}")
    return name, int(text)


def endpoint_logs(logs_dir: Path) -> Route:
    async def read_logs(request: Request) -> Response:
        """The endpoint's log stream from a byte offset (the CLI polls this for --follow)."""
        try:
            name, offset = log_request(request)
        except ValidationException as err:
            return error_response(err, request_id(request.scope))
        path = endpoint_log_path(logs_dir, name)

        def read() -> bytes | None:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(MAX_LOG_READ)
            except FileNotFoundError:
                return None

        data = await asyncio.to_thread(read)
        if data is None:
            return PlainTextResponse(f"No logs for endpoint {name}.\n", status_code=404)
        return Response(data, media_type="text/plain", headers={"X-Modelhost-Next-Offset": str(offset + len(data))})

    # {name:path}: a name with (encoded) slashes reaches the check instead of a plain 404.
    return Route("/modelhost/endpoints/{name:path}/logs", read_logs, methods=["GET"])


def routes(logs_dir: Path) -> list[Route]:
    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        endpoint_logs(logs_dir),
    ]
