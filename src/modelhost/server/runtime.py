"""sagemaker-runtime routes (rest-json): POST /endpoints/{name}/invocations.

Thin, and a raw ASGI handler because it is the hot path: check headers and limits, hand off to
the router, write the result. Only the headers SageMaker forwards reach the container.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import regex

from modelhost.errors import RuntimeApiError, ValidationError
from modelhost.hosting.router import Router
from modelhost.server.awsjson import runtime_error_response

MAX_BODY = 6 * 1024 * 1024  # 6291456 bytes, InvokeEndpoint's request limit
NAME = regex.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
VISIBLE_ASCII = regex.compile(r"[\x20-\x7e]*")
PRINTABLE_ID = regex.compile(r"\S[\x20-\x7e]*")
UNSUPPORTED = {
    b"x-amzn-sagemaker-target-model": "TargetModel",
    b"x-amzn-sagemaker-target-container-hostname": "TargetContainerHostname",
}

Scope = dict[str, Any]


def _constraint(value: str, member: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def check_custom_attributes(text: str) -> None:
    if len(text) > 1024 or not VISIBLE_ASCII.fullmatch(text):
        raise _constraint(
            text[:64],
            "customAttributes",
            "have length less than or equal to 1024 and contain only visible ASCII characters",
        )


def check_inference_id(text: str) -> None:
    if len(text) > 64 or not PRINTABLE_ID.fullmatch(text):
        raise _constraint(
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
                raise _constraint(
                    target_variant, "targetVariant", f"satisfy regular expression pattern: {NAME_PATTERN}"
                )
        elif name in UNSUPPORTED:
            raise ValidationError(
                f"{UNSUPPORTED[name]} is not supported by this endpoint: it does not host multiple models "
                "or containers."
            )
    return forwarded, target_variant, length


class Invocations:
    """POST /endpoints/{name}/invocations as a raw ASGI handler."""

    def __init__(self, router: Router) -> None:
        self.router = router
        # Names of asynchronous inference endpoints (kept current by hosting/asyncq.py).
        self.async_endpoints: set[str] | frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Any, send: Any, name: str) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        try:
            if not NAME.fullmatch(name):
                raise _constraint(name, "endpointName", f"satisfy regular expression pattern: {NAME_PATTERN}")
            if name in self.async_endpoints:
                raise ValidationError(
                    f"Endpoint {name} of account {self.router.account_id} is an asynchronous inference endpoint: "
                    "InvokeEndpoint is not supported for it. Use InvokeEndpointAsync."
                )
            headers, target_variant, length = _forwarded_headers(scope)
            if length is not None and length > MAX_BODY:
                raise ValidationError(f"Request body is {length} bytes; the maximum is {MAX_BODY} bytes (6 MB).")
            body = await _read_body(receive)
            result = await self.router.invoke(name, body, headers, target_variant)
        except RuntimeApiError as err:
            await runtime_error_response(err, request_id)(scope, receive, send)
            return
        out = [
            (b"content-type", result.content_type.encode("latin-1")),
            (b"content-length", str(len(result.body)).encode()),
            (b"x-amzn-invoked-production-variant", result.variant.name.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if result.custom_attributes is not None:
            out.append((b"x-amzn-sagemaker-custom-attributes", result.custom_attributes.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": result.body})
        total_us = (time.perf_counter() - started) * 1e6
        result.variant.metrics.overhead_latency.observe(max(total_us - result.model_latency_us, 0.0))


async def _read_body(receive: Any) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY:
                raise ValidationError(f"Request body exceeds the maximum of {MAX_BODY} bytes (6 MB).")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
