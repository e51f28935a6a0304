"""The JSON 1.1 control plane: ``POST /`` with ``X-Amz-Target: <Service>.<Operation>``.

Decode, validate against botocore's service model, run the protocol-neutral operation in a worker
thread, encode the output; errors in AWS's shape. The request id and the caller come from the
front door's middleware (``scope[REQUEST_ID]``, ``scope[CALLER]``).
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from modelhost.control import autoscaling, logs_api
from modelhost.control.context import ControlContext
from modelhost.control.operations import SAGEMAKER_OPERATIONS, Operation
from modelhost.errors import ApiError, InternalFailure, UnknownOperationException
from modelhost.server import long_poll
from modelhost.server.access import authorize
from modelhost.server.asgi import request_id
from modelhost.server.awsjson import decode_body, error_response, get_schema, json_response, parse_target

log = logging.getLogger("modelhost.server")

SERVICES: dict[str, tuple[str, dict[str, Operation]]] = {
    "SageMaker": ("sagemaker", SAGEMAKER_OPERATIONS),
    "AnyScaleFrontendService": ("application-autoscaling", autoscaling.OPERATIONS),
    "Logs_20140328": ("logs", logs_api.OPERATIONS),  # transform job logs for the SDK (logs=True)
}


# (noun in the operation name, ARN resource type), longest noun first.
NAMED = (
    ("EndpointConfig", "endpoint-config"),
    ("TransformJob", "transform-job"),
    ("Endpoint", "endpoint"),
    ("Model", "model"),
)


class ControlPlane:
    """A Starlette endpoint over the control context."""

    def __init__(self, control: ControlContext) -> None:
        self.control = control

    def resource_arn(self, service: str, operation: str, params: dict) -> str:
        """The ARN of the resource the request names (for permissions), else ``*``: SageMaker's
        model / endpoint-config / endpoint / transform-job (the one the operation is about, e.g.
        CreateEndpoint's endpoint), ``ResourceArn`` for tags, Logs' ``logGroupName``; Application Auto
        Scaling's scalable targets have no such ARN here."""
        settings = self.control.settings
        if service == "sagemaker":
            present = [(noun, kind) for noun, kind in NAMED if isinstance(params.get(f"{noun}Name"), str)]
            for noun, kind in present:
                if noun in operation:
                    return settings.arn(kind, params[f"{noun}Name"])
            if present:
                noun, kind = present[0]
                return settings.arn(kind, params[f"{noun}Name"])
            arn = params.get("ResourceArn")
            return arn if isinstance(arn, str) else "*"
        if service == "logs" and isinstance(params.get("logGroupName"), str):
            return f"arn:aws:logs:{settings.region}:{settings.account_id}:log-group:{params['logGroupName']}"
        return "*"

    async def handle(self, request: Request) -> Response:
        rid = request_id(request.scope)
        try:
            prefix, operation = parse_target(request.headers.get("x-amz-target"))
            service = SERVICES.get(prefix)
            if service is None:
                raise UnknownOperationException(f"Unknown service target: {prefix}.{operation}")
            schema_name, operations = service
            handler = operations.get(operation)
            if handler is None:
                raise UnknownOperationException(
                    f"Operation {operation} is not supported by modelhost."
                    if get_schema(schema_name).has_operation(operation)
                    else f"Unknown operation {operation}."
                )
            params = decode_body(await request.body())
            schema = get_schema(schema_name)
            schema.validate(operation, params)
            # The caller's permissions (a no-op when requests are not authenticated); after validation,
            # so the resource's name is a well-formed string.
            authorize(request.scope, f"{schema_name}:{operation}", self.resource_arn(schema_name, operation, params))
            result = await run_in_threadpool(handler, self.control, params)
            if long_poll.applies(operation, request.headers.get("user-agent"), result):  # a waiting client
                result = await long_poll.until_changed(
                    lambda: run_in_threadpool(handler, self.control, params),
                    result,
                    self.control.settings.describe_wait,
                )
            return json_response(schema.output_to_json(operation, result), rid)
        except ApiError as err:  # AccessDenied included
            return error_response(err, rid)
        except Exception as exc:  # never leak a stack trace as a non-AWS response
            log.exception("control plane operation failed")
            return error_response(InternalFailure(f"{type(exc).__name__}: {exc}"), rid)
