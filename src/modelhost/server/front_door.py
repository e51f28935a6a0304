"""The ASGI entry: an ordered list of routes, each a (predicate, ASGI app) pair, and one middleware
stack that every request passes through on its way to the chosen app.

The first route whose predicate holds gets the request (S3 first: a bucket may be called
"endpoints"; the last route takes everything, lifespan included). The choice is recorded in
``scope[ROUTE]`` before the stack runs, so middleware knows the route's name and protocol (to
answer a refusal in the right shape). The hot path, InvokeEndpoint, is a raw ASGI app: no
Starlette routing or Request objects on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from modelhost.server.asgi import ENDPOINT, ROUTE, ASGIApp, Receive, Scope, Send
from modelhost.server.iam import is_iam_request
from modelhost.server.middleware.connections import FastRoute
from modelhost.server.s3 import is_s3_request
from modelhost.server.sts import is_sts_request

Middleware = Callable[[ASGIApp], ASGIApp]

PREFIX = "/endpoints/"
INVOKE_SUFFIX = "/invocations"
ASYNC_SUFFIX = "/async-invocations"
STREAM_SUFFIX = "/invocations-response-stream"


@dataclass(frozen=True)
class Route:
    name: str  # label for metrics and logs
    matches: Callable[[Scope], bool]  # may note what it parsed in the scope (ENDPOINT)
    app: ASGIApp
    protocol: str  # protocols.*: the shape of errors the middleware sends for this route


def _endpoint_post(scope: Scope, suffix: str) -> bool:
    """Matched on the raw (still percent-encoded) path, as AWS routes it: ``/endpoints/a%2Finvocations``
    is not an invoke of "a". Any name between the prefix and the suffix matches, so a bad one
    (``..%2f..%2fetc``, ``a/b``) reaches the handler's endpointName ValidationError, not a plain 404."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    raw: bytes | None = scope.get("raw_path")
    path: str = scope["path"] if raw is None else raw.decode("latin-1")
    if path.startswith(PREFIX) and path.endswith(suffix):
        name = path[len(PREFIX) : -len(suffix)]
        if raw is not None and "%" in name:
            name = unquote(name)
        scope[ENDPOINT] = name
        return True
    return False


def is_invoke(scope: Scope) -> bool:
    """POST /endpoints/{name}/invocations (the name goes into scope[ENDPOINT])."""
    return _endpoint_post(scope, INVOKE_SUFFIX)


def is_invoke_async(scope: Scope) -> bool:
    """POST /endpoints/{name}/async-invocations (the name goes into scope[ENDPOINT])."""
    return _endpoint_post(scope, ASYNC_SUFFIX)


def is_invoke_stream(scope: Scope) -> bool:
    """POST /endpoints/{name}/invocations-response-stream (the name goes into scope[ENDPOINT])."""
    return _endpoint_post(scope, STREAM_SUFFIX)


def is_sts(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/" and is_sts_request(scope)


def is_iam(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/" and is_iam_request(scope)


def is_s3(scope: Scope) -> bool:
    return is_s3_request(scope)


def anything(_scope: Scope) -> bool:
    return True


class FrontDoor:
    def __init__(self, routes: Iterable[Route], middleware: Sequence[Middleware] = ()) -> None:
        self.routes = tuple(routes)
        if not self.routes or self.routes[-1].matches is not anything:
            raise ValueError("the last route must take every request (matches=anything)")
        app: ASGIApp = self._dispatch
        for wrap in reversed(middleware):  # the first is the outermost
            app = wrap(app)
        self.stack = app

        # InvokeEndpoint's way around the stack (fast_path.py; build.py sets it, connections.py uses it).
        self.fast_path: FastRoute | None = None

    def route(self, scope: Scope) -> Route:
        """The first route whose predicate holds (the last one always does)."""
        for route in self.routes:
            if route.matches(scope):
                return route
        raise AssertionError("the last route takes every request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE] = self.route(scope)
        await self.stack(scope, receive, send)

    @staticmethod
    async def _dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        await scope[ROUTE].app(scope, receive, send)
