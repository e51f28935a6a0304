"""modelhost's own small routes: ``GET /metrics`` (Prometheus), ``GET /ping`` (liveness) and
``GET /modelhost/endpoints/{name}/logs?offset=N`` (an endpoint's log stream, for ``modelhost logs``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from modelhost.hosting.metrics import REGISTRY
from modelhost.store.logs import endpoint_log_path

MAX_LOG_READ = 4 * 1024 * 1024


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def ping(_request: Request) -> Response:
    return PlainTextResponse("")


def endpoint_logs(logs_dir: Path) -> Route:
    async def read_logs(request: Request) -> Response:
        """The endpoint's log stream from a byte offset (the CLI polls this for --follow)."""
        path = endpoint_log_path(logs_dir, request.path_params["name"])
        offset = int(request.query_params.get("offset", "0"))

        def read() -> bytes | None:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(MAX_LOG_READ)
            except FileNotFoundError:
                return None

        data = await asyncio.to_thread(read)
        if data is None:
            return PlainTextResponse(f"No logs for endpoint {request.path_params['name']}.\n", status_code=404)
        return Response(data, media_type="text/plain", headers={"X-Modelhost-Next-Offset": str(offset + len(data))})

    return Route("/modelhost/endpoints/{name}/logs", read_logs, methods=["GET"])


def routes(logs_dir: Path) -> list[Route]:
    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        endpoint_logs(logs_dir),
    ]
