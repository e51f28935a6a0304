"""ASGI middleware every route passes through (the front door wraps its dispatch in them), outermost first:

request_id.RequestId   one x-amzn-requestid per request: scope[REQUEST_ID], added to the response if absent
metrics.RequestMetrics modelhost_http_requests_total{route, code}
guard.Guard            cheap refusals before authentication: connections per client, header limits, Host
                       (DNS rebinding), unsigned cross-site requests, body size / slow-body timeout (limits.py)
auth.Authenticate      the caller from the Authorization header (or presigned query) into scope[CALLER];
                       a malformed one is refused in the route's protocol (signature checks slot in here)

connections.py is not ASGI middleware: it is the uvicorn protocol (app.serve) that counts connections
per client address and cuts off header sections too large to parse.
"""

from __future__ import annotations

from collections.abc import Callable

from modelhost.server.asgi import ASGIApp
from modelhost.server.middleware.auth import Authenticate, Caller, IncompleteSignature, authenticate
from modelhost.server.middleware.guard import Guard
from modelhost.server.middleware.hosts import HostPolicy
from modelhost.server.middleware.limits import Limits
from modelhost.server.middleware.metrics import RequestMetrics
from modelhost.server.middleware.request_id import RequestId

STACK: tuple[Callable[[ASGIApp], ASGIApp], ...] = (
    RequestId,
    RequestMetrics,
    Guard,
    Authenticate,
)  # configured in build.py


__all__ = [
    "STACK",
    "Authenticate",
    "Caller",
    "Guard",
    "HostPolicy",
    "IncompleteSignature",
    "Limits",
    "RequestId",
    "RequestMetrics",
    "authenticate",
]
