"""Requests answered, by front-door route and HTTP status: ``modelhost_http_requests_total``."""

from __future__ import annotations

from typing import Any

from modelhost.hosting.metrics import LoopFamily
from modelhost.server.asgi import ROUTE, ASGIApp, Message, Receive, Scope, Send

REQUESTS = LoopFamily(
    "modelhost_http_requests", "HTTP requests answered, by front-door route and status code.", None, ("route", "code")
)


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, int], Any] = {}  # labelled counters, looked up once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope[ROUTE].name
        children = self._children

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                key = (route, message["status"])
                child = children.get(key)
                if child is None:
                    child = children[key] = REQUESTS.labels(route, str(key[1]))
                child.inc()
            await send(message)

        await self.app(scope, receive, send_counted)
