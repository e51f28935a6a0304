"""AWS JSON 1.1 protocol helpers, using botocore's service model as the request schema.

botocore's client only checks required members, types and minimums (reference §1.5), so the
server re-validates every input completely: maximums, enums and Java-style regex patterns
included, producing AWS's conventional ``N validation error(s) detected: ...`` message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import botocore.session
import regex
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape
from starlette.responses import Response

from modelhost.errors import (
    ApiError,
    RuntimeApiError,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)

# orjson is optional: faster, but the stdlib fallback produces the same wire format.
orjson: Any
try:
    orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
REST_JSON_CONTENT_TYPE = "application/json"

# AWS lists every violation in principle; we cap it so a huge bad request gives a bounded message.
MAX_REPORTED_VIOLATIONS = 10
MAX_VALUE_CHARS = 200
# A pathological pattern/input pair must not stall the event loop; a timeout counts as a mismatch.
PATTERN_TIMEOUT_S = 0.25


# --------------------------------------------------------------------------------------------
# Java regex -> `regex` module translation


# Java's POSIX classes are ASCII-only, while `regex` would read them as Unicode properties.
_JAVA_POSIX = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": r"\x00-\x7F",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": r"!-/:-@\[-`{-~",
    "Graph": r"!-~",
    "Print": r" -~",
    "Blank": r" \t",
    "Cntrl": r"\x00-\x1F\x7F",
    "XDigit": "0-9a-fA-F",
    "Space": r" \t\n\x0B\f\r",
}
# Java's \d \w \s are ASCII-only by default too; `regex`'s ASCII flag cannot be used instead
# because it would also make \p{L} ASCII-only.
_JAVA_SHORTHAND = {
    "d": "0-9",
    "D": "0-9",
    "w": "a-zA-Z0-9_",
    "W": "a-zA-Z0-9_",
    "s": r" \t\n\x0B\f\r",
    "S": r" \t\n\x0B\f\r",
}
# Java writes supplementary characters as UTF-16 surrogate pairs (`\uD800\uDC00`); Python needs
# the code point itself.
_SURROGATE_PAIR = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", re.IGNORECASE)


def _join_surrogates(m: re.Match[str]) -> str:
    hi, lo = int(m.group(1), 16), int(m.group(2), 16)
    return "\\U%08X" % (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))


def translate_java_pattern(pattern: str) -> str:
    """Rewrite the Java-only bits of a botocore ``pattern`` into `regex` syntax."""
    return _translate(pattern)[0]


def _translate(pattern: str) -> tuple[str, bool]:
    """Translate; the flag says whether nested sets were used (needs `regex` V1 syntax)."""
    pattern = _SURROGATE_PAIR.sub(_join_surrogates, pattern)
    nested = "&&" in pattern  # Java class intersection, which only V1 understands
    out: list[str] = []
    depth = 0  # character-class nesting, so POSIX classes expand to ranges or to a class
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            ranges: str | None = None
            neg = False
            step = 2
            if nxt in "pP" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                name = pattern[i + 3 : end] if end != -1 else ""
                name = name[2:] if name.startswith("Is") and name[2:] in _JAVA_POSIX else name
                if end != -1 and name in _JAVA_POSIX:
                    ranges, neg, step = _JAVA_POSIX[name], nxt == "P", end + 1 - i
            elif nxt in _JAVA_SHORTHAND:
                ranges, neg = _JAVA_SHORTHAND[nxt], nxt.isupper()
            if ranges is not None:
                if depth and not neg:
                    out.append(ranges)
                else:
                    # Outside a class (or negated) it has to be a set of its own; a set
                    # inside a set needs `regex` V1 syntax.
                    nested = nested or bool(depth)
                    out.append(f"[{'^' if neg else ''}{ranges}]")
            elif nxt == "z":
                out.append(r"\Z")  # Java \z is the absolute end, which is Python's \Z
            else:
                out.append(c + nxt)
            i += step
            continue
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        out.append(c)
        i += 1
    return "".join(out), nested


@functools.cache
def compile_pattern(pattern: str) -> regex.Pattern[str] | None:
    """Compile a botocore pattern once; None (cached too) when it cannot be translated."""
    translated, nested = _translate(pattern)
    # V1 only when needed: it reads `--` and `||` inside sets as operators, unlike Java.
    flags = regex.V1 if nested else regex.V0
    try:
        return regex.compile(translated, flags)
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None


# --------------------------------------------------------------------------------------------
# Shapes whose pattern we widen on purpose: model artifacts may also be local (`file://` URIs or
# absolute paths), which is what `modelhost deploy DIR` and offline users need.
PATTERN_EXTENSIONS = {
    "Url": r"file://.+|/.+",
    "S3ModelUri": r"file://.+|/.+",
    # Async inference notification topics may also be webhooks (hosting/notify.py).
    "SnsTopicArn": r"https?://.+",
}

# Per-shape validation info, built lazily once per shape name


@dataclass(slots=True)
class _Node:
    name: str
    type_name: str
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    compiled: regex.Pattern[str] | None = None
    enum: frozenset[str] | None = None
    enum_text: str = ""
    document: bool = False
    # structure: (wire name, path name, member shape name); required: (wire name, path name)
    members: tuple[tuple[str, str, str], ...] = ()
    required: tuple[tuple[str, str], ...] = ()
    # list member / map key / map value shape names
    item: str | None = None
    key: str | None = None
    value: str | None = None


def _camel(name: str) -> str:
    # AWS's validation paths use the member name with its first letter lowered.
    return name[:1].lower() + name[1:]


def _render(value: object) -> str:
    """Render a value the way Java's toString would show it in a validation message."""
    text = _java_str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "..."
    return text


def _java_str(value: object, depth: int = 0) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if depth > 4:
        return "..."
    if isinstance(value, list):
        return "[" + ", ".join(_java_str(v, depth + 1) for v in value[:50]) + "]"
    if isinstance(value, dict):
        items = list(value.items())[:50]
        return "{" + ", ".join(f"{k}={_java_str(v, depth + 1)}" for k, v in items) + "}"
    return str(value)


def _fmt_num(v: float) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


# The service is Java: integers outside int/long range do not deserialize, so they are type errors.
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

_TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and _INT32[0] <= v <= _INT32[1],
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1],
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
    "structure": lambda v: isinstance(v, dict),
}


def _is_timestamp(v: object) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return math.isfinite(v)
    if isinstance(v, str):
        try:
            datetime.fromisoformat(v)
        except ValueError:
            return False
        return True
    return False


def _decode_blob(v: object) -> bytes | None:
    if not isinstance(v, str):
        return None
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(slots=True)
class _Violations:
    items: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, value: object, path: str, constraint: str) -> None:
        self.count += 1
        if len(self.items) < MAX_REPORTED_VIOLATIONS:
            shown = "null" if value is None else f"'{_render(value)}'"
            self.items.append(f"Value {shown} at '{path}' failed to satisfy constraint: Member must {constraint}")

    def message(self) -> str:
        noun = "error" if self.count == 1 else "errors"
        return f"{self.count} validation {noun} detected: " + "; ".join(self.items)


class ServiceSchema:
    """One botocore service model, used to validate inputs and to shape outputs."""

    def __init__(self, model: ServiceModel) -> None:
        self.model = model
        self.service_name: str = model.service_name
        self.target_prefix: str | None = model.metadata.get("targetPrefix")
        self._operations = frozenset(model.operation_names)
        self._nodes: dict[str, _Node] = {}
        self._inputs: dict[str, str | None] = {}

    @property
    def operation_names(self) -> frozenset[str]:
        return self._operations

    def has_operation(self, name: str) -> bool:
        return name in self._operations

    # -- schema digestion -------------------------------------------------------------------

    def _input_shape_name(self, operation: str) -> str | None:
        try:
            return self._inputs[operation]
        except KeyError:
            pass
        if operation not in self._operations:
            raise UnknownOperationException(f"Operation {operation} is not supported.")
        shape = self.model.operation_model(operation).input_shape
        name = None
        if shape is not None:
            name = shape.name
            self._nodes.setdefault(name, self._build(shape))
        self._inputs[operation] = name
        return name

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = self._build(self.model.shape_for(name))
        return node

    @staticmethod
    def _build(shape: Shape) -> _Node:
        # Only names of child shapes are recorded, so recursive shapes need no special care and
        # botocore's Shape objects are walked once per shape name.
        md = shape.metadata
        node = _Node(name=shape.name, type_name=shape.type_name, min=md.get("min"), max=md.get("max"))
        pattern = md.get("pattern")
        if pattern and shape.name in PATTERN_EXTENSIONS:
            pattern = f"(?:{pattern})|(?:{PATTERN_EXTENSIONS[shape.name]})"
        if pattern:
            node.pattern = pattern
            node.compiled = compile_pattern(pattern)
        enum = md.get("enum")
        if enum:
            node.enum = frozenset(enum)
            node.enum_text = "[" + ", ".join(enum) + "]"
        if isinstance(shape, StructureShape):
            node.document = bool(md.get("document"))
            required = set(shape.required_members)
            node.members = tuple((m, _camel(m), s.name) for m, s in shape.members.items())
            node.required = tuple((m, _camel(m)) for m in shape.members if m in required)
        elif isinstance(shape, ListShape):
            node.item = shape.member.name
        elif isinstance(shape, MapShape):
            node.key = shape.key.name
            node.value = shape.value.name
        return node

    # -- validation -------------------------------------------------------------------------

    def validate(self, operation: str, params: object) -> None:
        """Raise ValidationException (AWS wording) unless ``params`` fits the operation input."""
        shape_name = self._input_shape_name(operation)
        if not isinstance(params, dict):
            raise SerializationException("Start of structure or map found where not expected.")
        if shape_name is None:
            return
        violations = _Violations()
        self._check_struct(self._node(shape_name), params, "", violations)
        if violations.count:
            raise ValidationException(violations.message())

    def _check_struct(self, node: _Node, value: dict[str, Any], prefix: str, out: _Violations) -> None:
        for name, camel in node.required:
            if value.get(name) is None:
                out.add(None, prefix + camel, "not be null")
        # Unknown members are ignored, as real JSON 1.1 services do.
        for name, camel, child in node.members:
            member_value = value.get(name)
            if member_value is not None:
                self._check(self._node(child), member_value, prefix + camel, out)

    def _check(self, node: _Node, value: object, path: str, out: _Violations) -> None:
        t = node.type_name
        if node.document:
            return  # free-form JSON document
        if t == "timestamp":
            if not _is_timestamp(value):
                out.add(value, path, "be of type timestamp")
            return
        if t == "blob":
            blob = _decode_blob(value)
            if blob is None:
                out.add(value, path, "be of type blob")
            else:
                self._check_length(node, value, len(blob), path, out)
            return
        check = _TYPE_CHECKS.get(t)
        if check is not None and not check(value):
            out.add(value, path, f"be of type {t}")
            return

        if t == "string":
            assert isinstance(value, str)
            if node.enum is not None and value not in node.enum:
                out.add(value, path, f"satisfy enum value set: {node.enum_text}")
            self._check_length(node, value, len(value), path, out)
            if node.pattern is not None and node.compiled is not None:
                try:
                    ok = node.compiled.fullmatch(value, timeout=PATTERN_TIMEOUT_S) is not None
                except TimeoutError:
                    ok = False
                if not ok:
                    out.add(value, path, f"satisfy regular expression pattern: {node.pattern}")
        elif t == "structure":
            assert isinstance(value, dict)
            self._check_struct(node, value, path + ".", out)
        elif t == "list":
            assert isinstance(value, list) and node.item is not None
            self._check_length(node, value, len(value), path, out)
            item = self._node(node.item)
            for i, v in enumerate(value, 1):
                if v is None:
                    out.add(None, f"{path}.{i}.member", "not be null")
                else:
                    self._check(item, v, f"{path}.{i}.member", out)
        elif t == "map":
            assert isinstance(value, dict) and node.key is not None and node.value is not None
            self._check_length(node, value, len(value), path, out)
            key_node, value_node = self._node(node.key), self._node(node.value)
            for k, v in value.items():
                self._check(key_node, k, path, out)
                if v is None:
                    out.add(None, f"{path}.{k}", "not be null")
                else:
                    self._check(value_node, v, f"{path}.{k}", out)
        elif t in ("integer", "long", "float", "double"):
            assert isinstance(value, int | float)
            if node.min is not None and value < node.min:
                out.add(value, path, f"have value greater than or equal to {_fmt_num(node.min)}")
            if node.max is not None and value > node.max:
                out.add(value, path, f"have value less than or equal to {_fmt_num(node.max)}")

    @staticmethod
    def _check_length(node: _Node, value: object, length: int, path: str, out: _Violations) -> None:
        if node.min is not None and length < node.min:
            out.add(value, path, f"have length greater than or equal to {_fmt_num(node.min)}")
        if node.max is not None and length > node.max:
            out.add(value, path, f"have length less than or equal to {_fmt_num(node.max)}")

    # -- output -----------------------------------------------------------------------------

    def output_to_json(self, operation: str, result: dict[str, Any]) -> bytes:
        """Serialize an output dict for the wire (timestamps as epoch seconds, blobs as base64).

        The output is not validated: handlers build it from stored, already valid data.
        """
        return dumps(result)


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
    return json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@functools.cache
def get_schema(service_name: str) -> ServiceSchema:
    """The schema for a botocore service (e.g. "sagemaker"); loading the model is slow, so once."""
    model = botocore.session.get_session().get_service_model(service_name)
    return ServiceSchema(model)


# --------------------------------------------------------------------------------------------
# Wire helpers


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


def decode_body(raw: bytes) -> dict[str, Any]:
    """Parse a JSON 1.1 request body; an empty body means no arguments."""
    if not raw or not raw.strip():
        return {}
    try:
        data = orjson.loads(raw) if orjson is not None else json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationException(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SerializationException("Start of structure or map found where not expected.")
    return data


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


def runtime_error_response(err: ApiError, request_id: str) -> Response:
    """A rest-json (sagemaker-runtime) error; botocore reads the code from ``x-amzn-ErrorType``."""
    body = err.body()
    if not isinstance(err, RuntimeApiError):
        # A control-plane error escaping on the runtime path: keep the rest-json `Message` shape.
        body = {"Message": err.message, **err.fields}
    return Response(
        content=dumps(body),
        status_code=err.status,
        media_type=REST_JSON_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": err.code},
    )


__all__ = [
    "JSON_CONTENT_TYPE",
    "REST_JSON_CONTENT_TYPE",
    "ServiceSchema",
    "compile_pattern",
    "decode_body",
    "dumps",
    "error_response",
    "get_schema",
    "json_response",
    "parse_target",
    "runtime_error_response",
    "translate_java_pattern",
]
