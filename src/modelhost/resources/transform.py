"""Request policy of transform jobs: the media types DataProcessing handles and SageMaker's JSONPath
dialect (``InputFilter`` / ``OutputFilter``), checked when a job is created and applied per record by
``jobs/filters.py``.

JSONPath expressions are parsed by jsonpath-ng; they are evaluated here, because SageMaker's rules
differ from jsonpath-ng's evaluation: slices include their end index (``$[1:4]`` is the 2nd to 5th
element), a single name or index selects the value itself, several names select an object with
those keys, several indexes, a slice or ``*`` select an array, and an index or slice out of range is
an error rather than an empty match. Supported: ``$``, ``.name``, ``['a','b']``, ``[i]``,
``[i,j]`` (negative allowed), ``[start:end]``, ``*``.
"""

from __future__ import annotations

from typing import Any

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
PROCESSABLE_TYPES = (CSV, JSON, JSONLINES)
MAX_PATH = 63


class FilterError(Exception):
    """A JSONPath that cannot be applied to a record, or output that does not match its input."""


def media_type(value: str | None) -> str | None:
    return value.split(";", 1)[0].strip().lower() if value else None


class JsonPath:
    """A compiled SageMaker JSONPath (see the module doc)."""

    def __init__(self, expr: str) -> None:
        from jsonpath_ng import jsonpath
        from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
        from jsonpath_ng.parser import parse

        self.expr = expr
        try:
            tree = parse(expr)
        except (JsonPathLexerError, JsonPathParserError, Exception) as exc:  # the lexer raises plain Exception
            raise FilterError(f"Invalid JSONPath {expr!r}: {exc}") from None
        steps: list[tuple[str, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, jsonpath.Root):
                return
            if isinstance(node, jsonpath.Child):
                walk(node.left)
                walk(node.right)
            elif isinstance(node, jsonpath.Fields):
                names = tuple(node.fields)
                steps.append(("wildcard", None) if names == ("*",) else ("fields", names))
            elif isinstance(node, jsonpath.Index):
                steps.append(("index", tuple(getattr(node, "indices", None) or (getattr(node, "index"),))))  # noqa: B009
            elif isinstance(node, jsonpath.Slice):
                if node.step not in (None, 1):
                    raise FilterError(f"Invalid JSONPath {expr!r}: slice steps are not supported")
                if node.start is None and node.end is None:
                    steps.append(("wildcard", None))
                else:
                    steps.append(("slice", (node.start, node.end)))
            elif isinstance(node, jsonpath.Wildcard) if hasattr(jsonpath, "Wildcard") else False:
                steps.append(("wildcard", None))
            else:
                raise FilterError(f"Invalid JSONPath {expr!r}: {type(node).__name__} is not supported by SageMaker")

        if not expr.startswith("$"):
            raise FilterError(f"Invalid JSONPath {expr!r}: it must start with $")
        walk(tree)
        self.steps = steps

    @property
    def is_root(self) -> bool:
        return not self.steps

    def apply(self, value: Any) -> Any:
        return self._apply(value, 0)

    def _apply(self, value: Any, i: int) -> Any:
        if i == len(self.steps):
            return value
        kind, arg = self.steps[i]
        if kind == "fields":
            if not isinstance(value, dict):
                raise FilterError(f"{self.expr}: {_kind(value)} has no member {arg[0]!r}")
            missing = [n for n in arg if n not in value]
            if missing:
                raise FilterError(f"{self.expr}: the record has no member {missing[0]!r}")
            if len(arg) == 1:
                return self._apply(value[arg[0]], i + 1)
            return {n: self._apply(value[n], i + 1) for n in arg}
        if kind == "wildcard":
            items = list(value.values()) if isinstance(value, dict) else value
            if not isinstance(items, list):
                raise FilterError(f"{self.expr}: * needs an array or an object, not {_kind(value)}")
            return [self._apply(v, i + 1) for v in items]
        if not isinstance(value, list):
            raise FilterError(f"{self.expr}: {_kind(value)} cannot be indexed")
        n = len(value)
        if kind == "index":
            for idx in arg:
                if not -n <= idx < n:
                    raise FilterError(f"{self.expr}: index {idx} is out of range for a record of {n} elements")
            if len(arg) == 1:
                return self._apply(value[arg[0]], i + 1)
            return [self._apply(value[idx], i + 1) for idx in arg]
        start, end = arg
        first = 0 if start is None else (start + n if start < 0 else start)
        last = n - 1 if end is None else (end + n if end < 0 else end)  # inclusive, as SageMaker documents
        if not (0 <= first < n) or not (0 <= last < n) or last < first:
            raise FilterError(f"{self.expr}: slice [{start}:{end}] is out of range for a record of {n} elements")
        return [self._apply(v, i + 1) for v in value[first : last + 1]]


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def check_path(expr: str) -> str | None:
    """Why a JSONPath is invalid (None if it is fine)."""
    try:
        JsonPath(expr)
    except FilterError as exc:
        return str(exc)
    return None
