"""Requests answered, by front-door route and HTTP status: ``modelhost_http_requests_total``."""

from __future__ import annotations

from typing import Any

from modelhost.hosting.metrics import LoopFamily
from modelhost.server.asgi import ROUTE, ASGIApp, Message, Receive, Scope, Send

REQUESTS = LoopFamily(
    "modelhost_http_requests", "HTTP requests answered, by front-door route and status code.", None, ("route", "code")
)
_children: dict[tuple[str, int], Any] = {}  # labelled counters, looked up once


def count(route: str, status: int) -> None:
    """One request of ``route`` answered with ``status`` (the middleware and the fast path count here)."""
    child = _children.get((route, status))
    if child is None:
        child = _children[(route, status)] = REQUESTS.labels(route, str(status))
    child.inc()


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope[ROUTE].name

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                count(route, message["status"])
            await send(message)

        await self.app(scope, receive, send_counted)
