"""sagemaker-runtime routes (rest-json): POST /endpoints/{name}/invocations.

Thin, and a raw ASGI app because it is the hot path: check headers and limits, hand off to the
router, write the result. Only the headers SageMaker forwards reach the container. The router's
domain errors (hosting/errors.py) become the service's errors and messages here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import regex

from modelhost.errors import (
    ApiError,
    ModelError,
    RuntimeApiError,
    ServiceUnavailable,
    ThrottlingException,
    ValidationError,
)
from modelhost.hosting.errors import (
    ColdStartFailed,
    EndpointNotFound,
    EndpointNotInService,
    HostingError,
    InvalidOutputLocation,
    ModelFailed,
    ModelLost,
    ModelTimedOut,
    NoCapacity,
    NotAsyncEndpoint,
    PayloadTooLarge,
    Throttled,
    VariantNotFound,
)
from modelhost.hosting.router import Router
from modelhost.server.asgi import ENDPOINT, BodyTooLarge, Disconnected, Receive, Scope, Send, read_body, request_id
from modelhost.server.json_wire import runtime_error_body, runtime_error_headers
from modelhost.server.runtime_targets import check_target_header, target_error

MAX_BODY = 6 * 1024 * 1024  # 6291456 bytes, InvokeEndpoint's request limit
NAME = regex.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
VISIBLE_ASCII = regex.compile(r"[\x20-\x7e]*")
PRINTABLE_ID = regex.compile(r"\S[\x20-\x7e]*")


def constraint_error(value: str, member: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def check_custom_attributes(text: str) -> None:
    if len(text) > 1024 or not VISIBLE_ASCII.fullmatch(text):
        raise constraint_error(
            text[:64],
            "customAttributes",
            "have length less than or equal to 1024 and contain only visible ASCII characters",
        )


def check_inference_id(text: str) -> None:
    if len(text) > 64 or not PRINTABLE_ID.fullmatch(text):
        raise constraint_error(
            text[:80],
            "inferenceId",
            "have length less than or equal to 64 and "
            r"satisfy regular expression pattern: \A\S[\p{Print}]*\z",
        )


def _forwarded_headers(scope: Scope) -> tuple[list[tuple[bytes, bytes]], str | None, int | None]:
    """(headers for the container, TargetVariant, Content-Length) with each modelled header checked."""
    forwarded: list[tuple[bytes, bytes]] = []
    target_variant = None
    length = None
    for name, value in scope["headers"]:
        if name == b"content-type" or name == b"accept":
            forwarded.append((name, value))
        elif name == b"content-length":
            length = int(value)
        elif name == b"x-amzn-sagemaker-custom-attributes":
            check_custom_attributes(value.decode("latin-1"))
            forwarded.append((name, value))
        elif name == b"x-amzn-sagemaker-inference-id":
            check_inference_id(value.decode("latin-1"))
            forwarded.append((name, value))
        elif name == b"x-amzn-sagemaker-target-variant":
            target_variant = value.decode("latin-1")
            if not NAME.fullmatch(target_variant):
                raise constraint_error(
                    target_variant, "targetVariant", f"satisfy regular expression pattern: {NAME_PATTERN}"
                )
        elif name == b"x-amzn-sagemaker-target-model" or name == b"x-amzn-sagemaker-target-container-hostname":
            check_target_header(name, value.decode("latin-1"))  # the router checks it fits the endpoint
            forwarded.append((name, value))
    return forwarded, target_variant, length


def runtime_error(err: HostingError, account_id: str) -> RuntimeApiError:
    """The sagemaker-runtime error (code, status and message as the service words them) for a domain error."""
    targeted = target_error(err, account_id)
    if targeted is not None:
        return targeted
    if isinstance(err, EndpointNotFound):
        return ValidationError(f"Endpoint {err.endpoint} of account {account_id} not found.")
    if isinstance(err, VariantNotFound):
        return ValidationError(
            f"Variant {err.variant} not found for Request to endpoint {err.endpoint}. "
            f"Valid variants: {', '.join(err.valid)}."
        )
    if isinstance(err, NotAsyncEndpoint):
        return ValidationError(
            f"Endpoint {err.endpoint} of account {account_id} is not an asynchronous inference endpoint: its "
            "endpoint configuration has no AsyncInferenceConfig. Use InvokeEndpoint."
        )
    if isinstance(err, EndpointNotInService):
        return ValidationError(
            f"Endpoint {err.endpoint} of account {account_id} is not in service (status {err.status})."
        )
    if isinstance(err, InvalidOutputLocation):
        return ValidationError(f"The output location {err.uri} is not a valid object key: {err.reason}")
    if isinstance(err, Throttled):
        return ThrottlingException(
            f"Rate exceeded: endpoint {err.endpoint} variant {err.variant} already has MaxConcurrency "
            f"({err.limit}) requests in flight."
        )
    if isinstance(err, PayloadTooLarge):
        return ValidationError(
            f"Request body is {err.size} bytes; the maximum for a serverless endpoint is {err.limit} bytes (4 MB)."
        )
    if isinstance(err, NoCapacity):
        return ServiceUnavailable(
            f"No healthy instance of variant {err.variant} of endpoint {err.endpoint} is available."
        )
    if isinstance(err, ModelFailed):
        message = original_message(err)
        kind = "client" if 400 <= err.status < 500 else "server"
        return ModelError(
            f'Received {kind} error ({err.status}) from {err.container} with message "{message}". '
            f"See the endpoint's logs (modelhost logs {err.endpoint}) for more information.",
            original_status_code=err.status,
            original_message=message,
            log_stream_arn=err.log_stream_arn,
        )
    return RuntimeApiError(str(err))


def original_message(err: ModelFailed) -> str:
    """OriginalMessage: the model's own body, or the service's words for no answer / a lost connection."""
    if isinstance(err, ModelTimedOut):
        return (
            f"Your invocation timed out while waiting for a response from container {err.container}. "
            "Review the latency metrics for each container in Amazon CloudWatch, resolve the issue, "
            f"and try again. (timeout: {err.timeout:g}s)"
        )
    if isinstance(err, ModelLost):
        return f"The container {err.container} failed: {err.message}."
    if isinstance(err, ColdStartFailed):
        return err.message
    return err.message


Forwarded = Callable[[Scope], tuple[list[tuple[bytes, bytes]], str | None, int | None]]


def checked_head(
    scope: Scope,
    account_id: str,
    async_endpoints: set[str] | frozenset[str],
    operation: str,
    forwarded: Forwarded,
) -> tuple[list[tuple[bytes, bytes]], str | None]:
    """(forwarded headers, TargetVariant) of an invocation on ``scope[ENDPOINT]``, its head checked as both
    InvokeEndpoint and InvokeEndpointWithResponseStream check it (ValidationError)."""
    name: str = scope[ENDPOINT]
    if not NAME.fullmatch(name):
        raise constraint_error(name, "endpointName", f"satisfy regular expression pattern: {NAME_PATTERN}")
    if name in async_endpoints:
        raise ValidationError(
            f"Endpoint {name} of account {account_id} is an asynchronous inference endpoint: "
            f"{operation} is not supported for it. Use InvokeEndpointAsync."
        )
    headers, target_variant, length = forwarded(scope)
    if length is not None:
        check_length(length)
    return headers, target_variant


def check_length(length: int) -> None:
    if length > MAX_BODY:
        raise ValidationError(f"Request body is {length} bytes; the maximum is {MAX_BODY} bytes (6 MB).")


async def checked_request(
    scope: Scope,
    receive: Receive,
    account_id: str,
    async_endpoints: set[str] | frozenset[str],
    operation: str,
    forwarded: Forwarded,
) -> tuple[list[tuple[bytes, bytes]], str | None, bytes]:
    """``checked_head``'s (headers, TargetVariant) and the body, read under InvokeEndpoint's limit."""
    headers, target_variant = checked_head(scope, account_id, async_endpoints, operation, forwarded)
    try:
        body = await read_body(receive, MAX_BODY)
    except BodyTooLarge:
        raise ValidationError(f"Request body exceeds the maximum of {MAX_BODY} bytes (6 MB).") from None
    return headers, target_variant, body


@dataclass(frozen=True, slots=True)
class Answer:
    """An InvokeEndpoint response, whole: the ASGI app and the front door's fast path (fast_path.py) send it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def error_answer(err: ApiError, rid: str) -> Answer:
    body = runtime_error_body(err)
    return Answer(err.status, runtime_error_headers(err, rid, len(body)), body)


class Invocations:
    """POST /endpoints/{name}/invocations as a raw ASGI app; the front door puts the name in
    ``scope[ENDPOINT]``. ``answer`` is the same call for a request whose body is already read."""

    def __init__(self, router: Router, account_id: str) -> None:
        self.router = router
        self.account_id = account_id  # only for the service's error messages
        # Names of asynchronous inference endpoints (kept current by hosting/asyncq.py).
        self.async_endpoints: set[str] | frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            headers, target_variant, body = await checked_request(
                scope, receive, self.account_id, self.async_endpoints, "InvokeEndpoint", _forwarded_headers
            )
        except RuntimeApiError as err:
            answer = error_answer(err, request_id(scope))
        except Disconnected:  # the client left mid-body (or was already answered): nothing to send
            return
        else:
            answer = await self._invoke(scope[ENDPOINT], headers, target_variant, body, request_id(scope), started)
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def answer(self, scope: Scope, body: bytes) -> Answer:
        """The response to an invocation whose whole body has arrived (the same checks as ``__call__``)."""
        started = time.perf_counter()
        try:
            headers, target_variant = checked_head(
                scope, self.account_id, self.async_endpoints, "InvokeEndpoint", _forwarded_headers
            )
            check_length(len(body))
        except RuntimeApiError as err:
            return error_answer(err, request_id(scope))
        return await self._invoke(scope[ENDPOINT], headers, target_variant, body, request_id(scope), started)

    async def _invoke(
        self,
        name: str,
        headers: list[tuple[bytes, bytes]],
        target_variant: str | None,
        body: bytes,
        rid: str,
        started: float,
    ) -> Answer:
        try:
            result = await self.router.invoke(name, body, headers, target_variant)
        except HostingError as exc:
            return error_answer(runtime_error(exc, self.account_id), rid)
        out = [
            (b"content-type", result.content_type.encode("latin-1")),
            (b"content-length", str(len(result.body)).encode()),
            (b"x-amzn-invoked-production-variant", result.variant.name.encode()),
            (b"x-amzn-requestid", rid.encode()),
        ]
        if result.custom_attributes is not None:
            out.append((b"x-amzn-sagemaker-custom-attributes", result.custom_attributes.encode("latin-1")))
        total_us = (time.perf_counter() - started) * 1e6
        result.variant.metrics.overhead_latency.observe(max(total_us - result.model_latency_us, 0.0))
        return Answer(200, out, result.body)
