"""The wire protocols a route speaks, and an error answered in each one's shape.

Used by code that refuses a request before its handler runs (the middleware): the front door
records the chosen route's protocol in the scope (``scope[ROUTE].protocol``).
"""

from __future__ import annotations

from modelhost.errors import ApiError
from modelhost.server import sts
from modelhost.server.asgi import Receive, Scope, Send, request_id
from modelhost.server.awsjson import error_response, runtime_error_response

JSON = "json"  # JSON 1.1: SageMaker, Application Auto Scaling, Logs (and our own small routes)
REST_JSON = "rest-json"  # sagemaker-runtime
REST_XML = "rest-xml"  # S3
QUERY = "query"  # STS


async def send_error(scope: Scope, receive: Receive, send: Send, err: ApiError, protocol: str) -> None:
    rid = request_id(scope)
    if protocol == REST_JSON:
        await runtime_error_response(err, rid)(scope, receive, send)
    elif protocol == REST_XML:
        from modelhost.server.s3 import send_error as s3_error

        await s3_error(scope, receive, send, err.code, err.message, err.status)
    elif protocol == QUERY:
        await sts.send_xml(send, err.status, sts.error_xml(err.code, err.message, rid))
    else:
        await error_response(err, rid)(scope, receive, send)
