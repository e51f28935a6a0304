"""AWS JSON 1.1 protocol helpers, using botocore's service model as the request schema
(the wire encoding is in json_wire.py, Java pattern translation in java_patterns.py; both re-exported).

botocore's client only checks required members, types and minimums (reference §1.5), so the
server re-validates every input completely: maximums, enums and Java-style regex patterns
included, producing AWS's conventional ``N validation error(s) detected: ...`` message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import botocore.session
import regex
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape

from modelhost.errors import (
    SerializationException,
    UnknownOperationException,
    ValidationException,
)
from modelhost.server.java_patterns import compile_pattern, translate_java_pattern
from modelhost.server.json_wire import (
    JSON_CONTENT_TYPE,
    REST_JSON_CONTENT_TYPE,
    decode_body,
    dumps,
    error_response,
    json_response,
    parse_target,
    runtime_error_response,
)

# AWS lists every violation in principle; we cap it so a huge bad request gives a bounded message.
MAX_REPORTED_VIOLATIONS = 10
MAX_VALUE_CHARS = 200
# A pathological pattern/input pair must not stall the event loop; a timeout counts as a mismatch.
PATTERN_TIMEOUT_S = 0.25


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


@functools.cache
def get_schema(service_name: str) -> ServiceSchema:
    """The schema for a botocore service (e.g. "sagemaker"); loading the model is slow, so once."""
    model = botocore.session.get_session().get_service_model(service_name)
    return ServiceSchema(model)


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
