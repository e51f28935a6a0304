"""The Lambda API route (``/2015-03-31/functions/...``, concurrency, tags): decode the rest-json
request against the service model, authorize ``lambda:<Operation>``, run the control operation
(or Invoke through the FunctionInvoker), encode the answer; errors in Lambda's shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from modelhost.control import functions
from modelhost.control.context import ControlContext
from modelhost.errors import ApiError, LambdaError
from modelhost.hosting.errors import HostingError, Throttled
from modelhost.hosting.functions import FunctionInvoker, FunctionNotReady
from modelhost.resources import functions as rules
from modelhost.resources.functions import State
from modelhost.security import AccessDenied
from modelhost.server.access import authorize
from modelhost.server.asgi import BodyTooLarge, Disconnected, Receive, Scope, Send, read_body, request_id
from modelhost.server.lambda_api import shapes
from modelhost.server.s3.routing import signed_for_s3

MAX_CODE_BODY = 70 * 1024 * 1024  # a base64 zip of Lambda's 50 MB direct-upload limit
CODE_OPERATIONS = ("CreateFunction", "UpdateFunctionCode")


def is_lambda(scope: Scope) -> bool:
    """Lambda's ``/2015-03-31/functions...`` paths, unless signed for S3 (a bucket may be named like a date):
    an unsigned request there is Lambda's, so it is refused or answered in Lambda's shape."""
    return scope["type"] == "http" and shapes.is_lambda_path(scope["path"]) and signed_for_s3(scope) is not True


class LambdaApi:
    def __init__(self, control: ControlContext, invoker: FunctionInvoker) -> None:
        self.control = control
        self.invoker = invoker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        try:
            raw: bytes | None = scope.get("raw_path")
            path = raw.decode("latin-1") if raw is not None else scope["path"]
            found = shapes.match(scope["method"], path)
            if found is None:
                raise LambdaError(
                    "UnknownOperationException", 404, f"{scope['method']} {path} is not a Lambda operation."
                )
            op, path_params = found
            if op.name not in shapes.SERVED:
                raise LambdaError("UnknownOperationException", 501, f"modelhost does not implement Lambda {op.name}.")
            limit = MAX_CODE_BODY if op.name in CODE_OPERATIONS else rules.MAX_SYNC_PAYLOAD
            try:
                body = await read_body(receive, limit)
            except BodyTooLarge:
                raise LambdaError.too_large(
                    f"Request must be smaller than {limit} bytes for the {op.name} operation"
                ) from None
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            params = shapes.parse_request(op, path_params, scope.get("query_string", b""), headers, body)
            target = params.get("FunctionName") or params.get("Resource") or ""
            resource = (
                target
                if target.startswith("arn:")
                else (functions.function_arn(self.control, target) if target else "*")
            )
            authorize(scope, f"lambda:{'InvokeFunction' if op.name == 'Invoke' else op.name}", resource)
            if op.name == "Invoke":
                result = await self._invoke(params, rid)
            else:
                result = await asyncio.to_thread(functions.OPERATIONS[op.name], self.control, params)
                if op.name == "DeleteFunction":  # not invoked from now on, though routed until the next pass
                    self.invoker.retire(functions.function_name(params["FunctionName"]))
            status, out_headers, out = shapes.encode_response(op, result)
        except Disconnected:
            return
        except (ApiError, AccessDenied) as err:
            status = 403 if isinstance(err, AccessDenied) else err.status  # Lambda's denial is a 403 (SageMaker's 400)
            await _send(send, status, [(b"x-amzn-errortype", err.code.encode())], json.dumps(err.body()).encode(), rid)
            return
        await _send(send, status, out_headers, out, rid)

    async def _invoke(self, params: dict[str, Any], rid: str) -> dict[str, Any]:
        name = functions.function_name(params["FunctionName"])
        qualifier = params.get("Qualifier")
        if qualifier not in (None, rules.VERSION):
            raise LambdaError.not_found(f"Function not found: {functions.function_arn(self.control, name)}:{qualifier}")
        kind = params.get("InvocationType", "RequestResponse")
        payload: bytes = params.get("Payload") or b""
        if kind == "Event" and len(payload) > rules.MAX_EVENT_PAYLOAD:
            raise LambdaError.too_large(
                f"Request must be smaller than {rules.MAX_EVENT_PAYLOAD} bytes for the InvokeAsync operation"
            )
        if payload.strip():
            try:
                json.loads(payload)
            except ValueError as exc:
                raise LambdaError(
                    "InvalidRequestContentException", 400, f"Could not parse request body into json: {exc}"
                ) from None
        else:
            payload = b"{}"
        if not self.invoker.live(name):
            row = await asyncio.to_thread(functions.get_row, self.control, name)  # ResourceNotFoundException
            if kind == "RequestResponse" or row["spec"]["State"] != State.ACTIVE:
                raise LambdaError.conflict(
                    "The operation cannot be performed at this time. The function is currently in the following "
                    f"state: {row['spec']['State']}"
                )
        if kind == "DryRun":
            return {"StatusCode": 204}
        if kind == "Event":
            await asyncio.to_thread(functions.queue_event, self.control, name, payload, rid)
            return {"StatusCode": 202}
        try:
            result = await self.invoker.invoke(
                name, payload, rid, tail=params.get("LogType") == "Tail", client_context=params.get("ClientContext")
            )
        except Throttled as exc:
            reason = (
                "ReservedFunctionConcurrentInvocationLimitExceeded"
                if exc.reserved
                else "ConcurrentInvocationLimitExceeded"
            )
            raise LambdaError.too_many("Rate Exceeded.", reason) from None
        except FunctionNotReady:
            raise LambdaError.conflict(
                "The operation cannot be performed at this time. The function is currently in the following state: "
                "Pending"
            ) from None
        except HostingError as exc:
            raise LambdaError("ServiceException", 500, str(exc)) from None
        return {
            "StatusCode": 200,
            "FunctionError": result.function_error,
            "LogResult": result.log_result,
            "ExecutedVersion": rules.VERSION,
            "Payload": result.payload,
        }


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, rid: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-amzn-requestid", rid.encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
