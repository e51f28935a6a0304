"""InvokeEndpointWithResponseStream: POST /endpoints/{name}/invocations-response-stream (raw ASGI).

The same checks as InvokeEndpoint (server/runtime.py), with the desired type in
``X-Amzn-SageMaker-Accept``; the answer is ``application/vnd.amazon.eventstream`` with the model's type
in ``X-Amzn-SageMaker-Content-Type``, its frames forwarded as the instance produces them. A client that
hangs up cancels the forwarding, which closes the instance connection and stops the model.
"""

from __future__ import annotations

import asyncio
import contextlib

from modelhost.errors import RuntimeApiError, ValidationError
from modelhost.hosting.errors import HostingError
from modelhost.hosting.router import Router
from modelhost.hosting.streaming import ResponseStream, open_stream
from modelhost.server.asgi import ENDPOINT, Disconnected, Receive, Scope, Send, request_id
from modelhost.server.awsjson import runtime_error_response
from modelhost.server.runtime import (
    NAME,
    NAME_PATTERN,
    check_custom_attributes,
    check_inference_id,
    checked_request,
    constraint_error,
    runtime_error,
)
from modelhost.serving import eventstream

UNSUPPORTED = {b"x-amzn-sagemaker-inference-component": "InferenceComponentName"}


def _forwarded_headers(scope: Scope) -> tuple[list[tuple[bytes, bytes]], str | None, int | None]:
    forwarded: list[tuple[bytes, bytes]] = []
    target_variant = None
    length = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            forwarded.append((name, value))
        elif name == b"x-amzn-sagemaker-accept":
            forwarded.append((b"accept", value))
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
        elif name in UNSUPPORTED:
            raise ValidationError(
                f"{UNSUPPORTED[name]} is not supported by this endpoint: it has no inference components."
            )
    return forwarded, target_variant, length


class StreamInvocations:
    def __init__(self, router: Router, account_id: str) -> None:
        self.router = router
        self.account_id = account_id
        self.async_endpoints: set[str] | frozenset[str] = frozenset()  # the same set InvokeEndpoint refuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name: str = scope[ENDPOINT]
        try:
            headers, target_variant, body = await checked_request(
                scope,
                receive,
                self.account_id,
                self.async_endpoints,
                "InvokeEndpointWithResponseStream",
                _forwarded_headers,
            )
            try:
                stream = await open_stream(self.router, name, body, headers, target_variant)
            except HostingError as exc:
                raise runtime_error(exc, self.account_id) from None
        except RuntimeApiError as err:
            await runtime_error_response(err, request_id(scope))(scope, receive, send)
            return
        except Disconnected:
            return
        try:
            await self._forward(stream, scope, receive, send)
        finally:
            stream.close()

    async def _forward(self, stream: ResponseStream, scope: Scope, receive: Receive, send: Send) -> None:
        out = [
            (b"content-type", eventstream.CONTENT_TYPE.encode()),
            (b"x-amzn-sagemaker-content-type", stream.content_type.encode("latin-1")),
            (b"x-amzn-invoked-production-variant", stream.variant.name.encode()),
            (b"x-amzn-requestid", request_id(scope).encode()),
        ]
        if stream.custom_attributes is not None:
            out.append((b"x-amzn-sagemaker-custom-attributes", stream.custom_attributes.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": out})

        async def forward() -> None:
            async for frame in stream.frames():
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        forwarding = asyncio.ensure_future(forward())
        hangup = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({forwarding, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
            if not forwarding.done():  # the client left: stop reading the model (closing stops it)
                forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await forwarding


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
