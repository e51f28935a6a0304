"""InvokeEndpointAsync: POST /endpoints/{name}/async-invocations (rest-json, raw ASGI).

Checks the modelled headers (botocore only enforces minimums), takes an ``InputLocation`` or an
inline body of at most 128000 bytes (exactly one of the two), and hands the request to the queue
(hosting/asyncq.py), which persists it before the 202 ``{"InferenceId": ...}`` goes out with the
``X-Amzn-SageMaker-OutputLocation`` / ``-FailureLocation`` headers.
"""

from __future__ import annotations

import json
from typing import Any

import regex

from modelhost.errors import RuntimeApiError, RuntimeInternalFailure, ValidationError
from modelhost.hosting.asyncq import INLINE_MAX, AsyncInference
from modelhost.hosting.errors import HostingError
from modelhost.server.asgi import ENDPOINT, BodyTooLarge, Disconnected, Receive, Scope, Send, read_body, request_id
from modelhost.server.awsjson import runtime_error_response
from modelhost.server.runtime import (
    NAME,
    NAME_PATTERN,
    check_custom_attributes,
    check_inference_id,
    constraint_error,
    runtime_error,
)

ASCII = regex.compile(r"[\x00-\x7f]*")
INPUT_LOCATION = regex.compile(r"^(https|s3)://([^/]+)/?(.*)$")
EXTENSION = regex.compile(r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$")
EXTENSION_PATTERN = "^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$"
FILENAME = regex.compile(r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$")
FILENAME_PATTERN = r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$"


def _integer(text: str, member: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValidationError(f"Value '{text}' at '{member}' is not a valid integer.") from None
    if value < low:
        raise constraint_error(text, member, f"have value greater than or equal to {low}")
    if value > high:
        raise constraint_error(text, member, f"have value less than or equal to {high}")
    return value


def parse_headers(scope: Scope) -> tuple[dict[str, Any], int | None]:
    """The request members carried in headers (checked), and Content-Length."""
    params: dict[str, Any] = {}
    length = None
    for name, raw in scope["headers"]:
        if not name.startswith(b"x-amzn-sagemaker-"):
            if name == b"content-length":
                length = int(raw)
            continue
        value = raw.decode("latin-1")
        if name in (b"x-amzn-sagemaker-content-type", b"x-amzn-sagemaker-accept"):
            member = "contentType" if name.endswith(b"content-type") else "accept"
            if len(value) > 1024 or not ASCII.fullmatch(value):
                raise constraint_error(
                    value[:64],
                    member,
                    r"have length less than or equal to 1024 and satisfy "
                    r"regular expression pattern: \p{ASCII}*",
                )
            params["ContentType" if member == "contentType" else "Accept"] = value
        elif name == b"x-amzn-sagemaker-custom-attributes":
            check_custom_attributes(value)
            params["CustomAttributes"] = value
        elif name == b"x-amzn-sagemaker-inference-id":
            check_inference_id(value)
            params["InferenceId"] = value
        elif name == b"x-amzn-sagemaker-inputlocation":
            if len(value) > 1024 or not INPUT_LOCATION.fullmatch(value):
                raise constraint_error(
                    value[:200],
                    "inputLocation",
                    "have length less than or equal to 1024 and "
                    "satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
                )
            if not value.startswith("s3://") or not value[5:].partition("/")[2]:
                raise ValidationError(
                    f"InputLocation {value} is not supported: modelhost reads request payloads from "
                    "s3://bucket/key objects."
                )
            params["InputLocation"] = value
        elif name == b"x-amzn-sagemaker-requestttlseconds":
            params["RequestTTLSeconds"] = _integer(value, "requestTTLSeconds", 60, 21600)
        elif name == b"x-amzn-sagemaker-invocationtimeoutseconds":
            params["InvocationTimeoutSeconds"] = _integer(value, "invocationTimeoutSeconds", 1, 3600)
        elif name == b"x-amzn-sagemaker-s3outputpathextension":
            if len(value) > 512 or not EXTENSION.fullmatch(value):
                raise constraint_error(
                    value[:200],
                    "s3OutputPathExtension",
                    "have length less than or equal to 512 "
                    f"and satisfy regular expression pattern: {EXTENSION_PATTERN}",
                )
            params["S3OutputPathExtension"] = value
        elif name == b"x-amzn-sagemaker-filename":
            if len(value) > 32 or not FILENAME.fullmatch(value):
                raise constraint_error(
                    value[:64],
                    "filename",
                    f"have length less than or equal to 32 and satisfy regular expression pattern: {FILENAME_PATTERN}",
                )
            params["Filename"] = value
        elif name in (
            b"x-amzn-sagemaker-target-model",
            b"x-amzn-sagemaker-target-variant",
            b"x-amzn-sagemaker-target-container-hostname",
        ):
            raise ValidationError(f"{name.decode()} is not supported by InvokeEndpointAsync.")
    return params, length


def _too_large(size: int) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value at 'body' failed to satisfy constraint: Member must have length "
        f"less than or equal to {INLINE_MAX} (got {size} bytes). Put larger payloads in S3 and pass InputLocation."
    )


class AsyncInvocations:
    """POST /endpoints/{name}/async-invocations as a raw ASGI app; the front door puts the name in
    ``scope[ENDPOINT]``."""

    def __init__(self, service: AsyncInference, account_id: str) -> None:
        self.service = service
        self.account_id = account_id  # only for the service's error messages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name: str = scope[ENDPOINT]
        try:
            if len(name) > 63 or not NAME.fullmatch(name):
                raise constraint_error(name, "endpointName", f"satisfy regular expression pattern: {NAME_PATTERN}")
            params, length = parse_headers(scope)
            if length is not None and length > INLINE_MAX:
                raise _too_large(length)
            try:
                body = await read_body(receive, INLINE_MAX)
            except BodyTooLarge as exc:
                raise _too_large(exc.size) from None
            if body and "InputLocation" in params:
                raise ValidationError("Specify either InputLocation or an inline Body, not both.")
            if not body and "InputLocation" not in params:
                raise ValidationError("InputLocation or an inline Body (up to 128000 bytes) is required.")
            try:
                accepted = await self.service.submit(name, params, body or None)
            except HostingError as exc:
                raise runtime_error(exc, self.account_id) from None
            except RuntimeApiError:
                raise
            except Exception as exc:  # the request was not persisted: say so, never a bare 500
                raise RuntimeInternalFailure(f"The request could not be queued: {type(exc).__name__}: {exc}") from exc
        except RuntimeApiError as err:
            await runtime_error_response(err, request_id(scope))(scope, receive, send)
            return
        except Disconnected:  # the client left mid-body (or was already answered): nothing to send
            return
        payload = json.dumps({"InferenceId": accepted["InferenceId"]}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-amzn-requestid", request_id(scope).encode()),
            (b"x-amzn-sagemaker-outputlocation", accepted["OutputLocation"].encode("latin-1")),
        ]
        if "FailureLocation" in accepted:
            headers.append((b"x-amzn-sagemaker-failurelocation", accepted["FailureLocation"].encode("latin-1")))
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
