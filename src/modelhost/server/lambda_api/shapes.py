"""The Lambda rest-json wire from botocore's ``lambda`` service model: which operation a method and
path are (the model's ``requestUri`` templates), the request members from the path, query, headers
and JSON body (blobs base64-decoded), validated with botocore's own validator, and the response
members put back where the model says (status code, headers, payload or JSON body)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.validate import ParamValidator

from modelhost.errors import LambdaError

SERVED = (
    "CreateFunction",
    "GetFunction",
    "GetFunctionConfiguration",
    "ListFunctions",
    "UpdateFunctionCode",
    "UpdateFunctionConfiguration",
    "DeleteFunction",
    "PutFunctionConcurrency",
    "GetFunctionConcurrency",
    "DeleteFunctionConcurrency",
    "TagResource",
    "UntagResource",
    "ListTags",
    "Invoke",
)
PREFIX = re.compile(r"^/20\d\d-\d\d-\d\d/(functions|tags)(/|$)")


@cache
def service() -> ServiceModel:
    return botocore.session.get_session().get_service_model("lambda")


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    query: dict[str, str]  # fixed query parts of the template (none here, kept for completeness)


@cache
def routes() -> tuple[Route, ...]:
    out = []
    for name in service().operation_names:
        op = service().operation_model(name)
        uri = op.http["requestUri"]
        path, _, fixed = uri.partition("?")
        regex = re.sub(r"\{(\w+)\+?\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", path)
        out.append(Route(op, op.http["method"], re.compile(f"^{regex}/?$"), dict(parse_qs(fixed)) if fixed else {}))
    return tuple(out)


def is_lambda_path(path: str) -> bool:
    return bool(PREFIX.match(path))


def match(method: str, raw_path: str) -> tuple[OperationModel, dict[str, str]] | None:
    for route in routes():
        if route.method == method and (m := route.pattern.match(raw_path)):
            return route.operation, {k: unquote(v) for k, v in m.groupdict().items()}
    return None


def _scalar(shape: Shape, value: str) -> Any:
    if shape.type_name in ("integer", "long"):
        try:
            return int(value)
        except ValueError:
            raise LambdaError.invalid(f"Invalid value {value!r} for {shape.name}: expected an integer.") from None
    if shape.type_name == "boolean":
        return value.lower() == "true"
    return value


def _decode_blobs(shape: Shape, value: Any, where: str) -> Any:
    """JSON carries blobs as base64 (Code.ZipFile)."""
    if shape.type_name == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise LambdaError.invalid(f"{where} is not valid base64.") from None
    if shape.type_name == "structure" and isinstance(value, dict):
        members = shape.members
        return {k: _decode_blobs(members[k], v, f"{where}.{k}") if k in members else v for k, v in value.items()}
    return value


def parse_request(
    op: OperationModel, path_params: dict[str, str], query: bytes, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    shape = op.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    members = shape.members
    payload_member = shape.serialization.get("payload")
    if payload_member:
        params[payload_member] = body
    elif body.strip():
        try:
            doc = json.loads(body)
        except ValueError:
            raise LambdaError(
                "InvalidRequestContentException", 400, "Could not parse request body into json."
            ) from None
        if not isinstance(doc, dict):
            raise LambdaError("InvalidRequestContentException", 400, "The request body must be a JSON object.")
        for key, value in doc.items():
            if key in members and not members[key].serialization.get("location"):
                params[key] = _decode_blobs(members[key], value, key)
    qs = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    for name, member in members.items():
        loc = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if loc == "uri" and wire in path_params:
            params[name] = path_params[wire]
        elif loc == "querystring" and wire in qs:
            values = qs[wire]
            params[name] = values if member.type_name == "list" else _scalar(member, values[0])
        elif loc == "header" and wire.lower() in headers:
            params[name] = _scalar(member, headers[wire.lower()])
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise LambdaError.validation(report.generate_report())
    return params


def encode_response(op: OperationModel, result: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = int(op.http.get("responseCode", 200))
    shape = op.output_shape
    headers: list[tuple[bytes, bytes]] = []
    if shape is None:
        return status, headers, b""
    members = shape.members
    payload_member = shape.serialization.get("payload")
    doc: dict[str, Any] = {}
    body = b""
    for name, value in result.items():
        member = members.get(name)
        if member is None or value is None:
            continue
        loc = member.serialization.get("location")
        if loc == "statusCode":
            status = int(value)
        elif loc == "header":
            headers.append((member.serialization["name"].lower().encode(), str(value).encode("latin-1")))
        elif name == payload_member:
            body = value if isinstance(value, bytes) else json.dumps(value).encode()
        else:
            doc[name] = value
    if not payload_member:
        body = json.dumps(doc).encode() if (doc or status != 204) else b""
    return status, headers, body
