"""ASGI middleware every route passes through (the front door wraps its dispatch in them), outermost first:

request_id.RequestId   one x-amzn-requestid per request: scope[REQUEST_ID], added to the response if absent
metrics.RequestMetrics modelhost_http_requests_total{route, code}
auth.Authenticate      the caller from the Authorization header (or presigned query) into scope[CALLER];
                       a malformed one is refused in the route's protocol (signature checks slot in here)
"""

from __future__ import annotations

from modelhost.server.middleware.auth import Authenticate, Caller, IncompleteSignature, authenticate
from modelhost.server.middleware.metrics import RequestMetrics
from modelhost.server.middleware.request_id import RequestId

STACK = (RequestId, RequestMetrics, Authenticate)

__all__ = ["STACK", "Authenticate", "Caller", "IncompleteSignature", "RequestId", "RequestMetrics", "authenticate"]
