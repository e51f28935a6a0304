"""sagemaker-runtime routes (rest-json): POST /endpoints/{name}/invocations.

Thin: check headers and limits, hand off to the router, map the result to the wire.
"""

from __future__ import annotations

import time
import uuid

import regex
from starlette.requests import Request
from starlette.responses import Response

from modelhost.errors import RuntimeApiError, ValidationError
from modelhost.hosting.router import Router
from modelhost.server.awsjson import runtime_error_response

MAX_BODY = 6 * 1024 * 1024  # 6291456 bytes, InvokeEndpoint's request limit
NAME = regex.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
VISIBLE_ASCII = regex.compile(r"\p{ASCII}*")
PRINTABLE_ID = regex.compile(r"\S\p{Print}*")


def _constraint(value: str, member: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    )


def _check_headers(name: str, request: Request) -> None:
    if not NAME.fullmatch(name):
        raise _constraint(
            name,
            "endpointName",
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*",
        )
    headers = request.headers
    custom = headers.get("x-amzn-sagemaker-custom-attributes")
    if custom is not None and (len(custom) > 1024 or not VISIBLE_ASCII.fullmatch(custom)):
        raise _constraint(
            custom[:64],
            "customAttributes",
            "Member must have length less than or equal to 1024 and be visible ASCII",
        )
    inference_id = headers.get("x-amzn-sagemaker-inference-id")
    if inference_id is not None and not (len(inference_id) <= 64 and PRINTABLE_ID.fullmatch(inference_id)):
        raise _constraint(
            inference_id[:80],
            "inferenceId",
            "Member must have length less than or equal to 64 and be printable",
        )
    variant = headers.get("x-amzn-sagemaker-target-variant")
    if variant is not None and not NAME.fullmatch(variant):
        raise _constraint(
            variant,
            "targetVariant",
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*",
        )
    for header in ("x-amzn-sagemaker-target-model", "x-amzn-sagemaker-target-container-hostname"):
        if header in headers:
            raise ValidationError(
                f"{header} is not supported by this endpoint: it does not host multiple models or containers."
            )


def make_invocations(router: Router):  # type: ignore[no-untyped-def]
    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        name = request.path_params["name"]
        try:
            _check_headers(name, request)
            length = request.headers.get("content-length")
            if length is not None and int(length) > MAX_BODY:
                raise ValidationError(
                    f"Request body is {length} bytes; the maximum is {MAX_BODY} bytes (6 MB)."
                )
            body = await request.body()
            if len(body) > MAX_BODY:
                raise ValidationError(
                    f"Request body is {len(body)} bytes; the maximum is {MAX_BODY} bytes (6 MB)."
                )
            headers = request.headers
            extra = {}
            if (custom := headers.get("x-amzn-sagemaker-custom-attributes")) is not None:
                extra["X-Amzn-SageMaker-Custom-Attributes"] = custom
            if (inference_id := headers.get("x-amzn-sagemaker-inference-id")) is not None:
                extra["X-Amzn-SageMaker-Inference-Id"] = inference_id
            result = await router.invoke(
                name,
                body,
                headers.get("content-type", "application/octet-stream"),
                headers.get("accept"),
                extra,
                headers.get("x-amzn-sagemaker-target-variant"),
            )
        except RuntimeApiError as err:
            return runtime_error_response(err, request_id)
        response_headers = {
            "Content-Type": result.content_type,
            "x-Amzn-Invoked-Production-Variant": result.variant,
            "x-amzn-RequestId": request_id,
        }
        if result.custom_attributes is not None:
            response_headers["X-Amzn-SageMaker-Custom-Attributes"] = result.custom_attributes
        route = router.routes.get(name)
        if route is not None and (variant := route.by_name.get(result.variant)) is not None:
            total_us = (time.perf_counter() - started) * 1e6
            variant.metrics.overhead_latency.observe(max(total_us - result.model_latency_us, 0.0))
        return Response(result.body, headers=response_headers)

    return invocations
