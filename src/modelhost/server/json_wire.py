"""JSON on the wire for the AWS protocols: encoding with AWS's conversions (timestamps as epoch
seconds, blobs as base64), request bodies and ``X-Amz-Target``, and the success and error
responses of JSON 1.1 (control plane) and rest-json (sagemaker-runtime)."""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import re
from datetime import UTC, date, datetime
from typing import Any

from starlette.responses import Response

from modelhost.errors import ApiError, RuntimeApiError, SerializationException, UnknownOperationException

# orjson is optional: faster, but the stdlib fallback produces the same wire format.
orjson: Any
try:
    orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
REST_JSON_CONTENT_TYPE = "application/json"


def _default(obj: object) -> object:
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=UTC)  # naive datetimes are UTC throughout the project
        return obj.timestamp()
    if isinstance(obj, date):
        return datetime(obj.year, obj.month, obj.day, tzinfo=UTC).timestamp()
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _prepare(obj: object) -> object:
    # orjson serializes datetimes itself (as ISO strings) and never calls `default` for them,
    # so timestamps and bytes are converted up front for it.
    if isinstance(obj, dict):
        return {k: _prepare(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_prepare(v) for v in obj]
    if isinstance(obj, datetime | date | bytes | bytearray | memoryview):
        return _default(obj)
    return obj


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON with the AWS conversions for datetimes and bytes."""
    if orjson is not None:
        return orjson.dumps(_prepare(obj), option=orjson.OPT_NON_STR_KEYS)
    text = json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (echoed from a request): escaped, still valid JSON
        return json.dumps(obj, default=_default, separators=(",", ":")).encode("ascii")


def parse_target(header: str | None) -> tuple[str, str]:
    """Split ``X-Amz-Target: SageMaker.CreateModel`` into ("SageMaker", "CreateModel")."""
    if not header:
        raise UnknownOperationException("Missing X-Amz-Target header.")
    prefix, dot, operation = header.strip().rpartition(".")
    if not dot or not prefix or not operation:
        raise UnknownOperationException(f"Malformed X-Amz-Target header: {header!r}.")
    return prefix, operation


def _no_constant(name: str) -> object:
    # json accepts NaN/Infinity by default; they are not JSON and the service rejects them.
    raise ValueError(f"invalid literal {name}")


MAX_DEPTH = 100  # nesting of arrays and objects in a request body (no SageMaker input nests a tenth of it)


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
# Opening brackets to +1, closing ones to -1 (as signed bytes), everything else deleted.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(raw: bytes) -> bool:
    """Whether arrays/objects nest deeper than MAX_DEPTH: a bracket count first (a body with at most
    MAX_DEPTH brackets cannot), else the running sum of +1/-1 steps outside strings, all at C speed."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    steps = _STRINGS.sub(b"", raw).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0) > MAX_DEPTH


def decode_body(raw: bytes) -> dict[str, Any]:
    """Parse a JSON 1.1 request body; an empty body means no arguments."""
    if not raw or not raw.strip():
        return {}
    if _too_deep(raw):
        raise SerializationException(
            f"Request body is not valid JSON: arrays and objects nest deeper than {MAX_DEPTH} levels."
        )
    try:
        data = orjson.loads(raw) if orjson is not None else json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SerializationException(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SerializationException("Start of structure or map found where not expected.")
    if (b"\\ud" in raw or b"\\uD" in raw) and _has_lone_surrogate(data):
        raise SerializationException("Request body is not valid JSON: a string holds an unpaired UTF-16 surrogate.")
    return data


def _has_lone_surrogate(data: Any) -> bool:
    """A \\uD800-\\uDFFF escape without its pair decodes to a str that is not Unicode text."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_response(payload: bytes, request_id: str) -> Response:
    """A JSON 1.1 success response."""
    return Response(
        content=payload,
        status_code=200,
        media_type=JSON_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )


def error_response(err: ApiError, request_id: str) -> Response:
    """A JSON 1.1 error: ``__type`` in the body plus ``x-amzn-ErrorType``, status from the error."""
    return Response(
        content=dumps(err.body()),
        status_code=err.status,
        media_type=JSON_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": err.code},
    )


def runtime_error_body(err: ApiError) -> bytes:
    """The body of a rest-json (sagemaker-runtime) error."""
    body = err.body()
    if not isinstance(err, RuntimeApiError):
        # A control-plane error escaping on the runtime path: keep the rest-json `Message` shape.
        body = {"Message": err.message, **err.fields}
    return dumps(body)


def runtime_error_headers(err: ApiError, request_id: str, length: int) -> list[tuple[bytes, bytes]]:
    """The headers of a rest-json error whose body is ``length`` bytes; botocore reads the code from
    ``x-amzn-ErrorType``."""
    return [
        (b"content-type", REST_JSON_CONTENT_TYPE.encode()),
        (b"content-length", str(length).encode()),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", err.code.encode("latin-1")),
    ]


def runtime_error_response(err: ApiError, request_id: str) -> Response:
    """A rest-json (sagemaker-runtime) error as an ASGI response."""
    body = runtime_error_body(err)
    response = Response(content=body, status_code=err.status)
    response.raw_headers = runtime_error_headers(err, request_id, len(body))
    return response
