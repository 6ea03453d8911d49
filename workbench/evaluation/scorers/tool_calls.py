"""Parse LFM2 tool calls and score them against gold calls by AST match (BFCL-style; nothing is eval'd).

A call block is `<|tool_call_start|>...<|tool_call_end|>` holding either a Pythonic call list,
`[get_weather(city="Paris"), get_time(tz="UTC")]`, or a JSON one,
`[{"name": "get_weather", "arguments": {"city": "Paris"}}]`. Text outside the blocks is ignored.

Gold calls are `{"name": str, "arguments": dict}`. A gold argument value is the one expected
literal, or `{"__any_of__": [v1, v2, ...]}` to accept any of several values (at any depth).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from textwrap import shorten
from typing import Any

TOOL_CALL_START = "<|tool_call_start|>"
TOOL_CALL_END = "<|tool_call_end|>"
ANY_OF = "__any_of__"

_BLOCK = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)
_TYPE_ALIASES = {"float": "number", "dict": "object", "tuple": "array"}
"""Python-flavoured type names BFCL tool schemas use, mapped to JSON Schema names."""
_MAX_REASON_CHARS = 120


@dataclass(frozen=True)
class ToolCall:
    """One function call: its (possibly dotted) name and keyword arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseResult:
    """The calls found in an output, in order; empty when it has no call block or on error."""

    calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None
    """Why the call blocks could not be parsed; None on success."""


@dataclass(frozen=True)
class ToolCallScore:
    """Whether an output's calls match the gold calls, and a short reason ("ok" when they do)."""

    correct: bool
    reason: str


class Category(StrEnum):
    """BFCL test category; each fixes how many gold calls it takes (`allows_gold_calls`)."""

    SIMPLE = "simple"
    """One tool offered, one call expected."""
    MULTIPLE = "multiple"
    """Several tools offered, one call to the right one expected."""
    PARALLEL = "parallel"
    """Several calls expected, matched as a multiset (order-insensitive)."""
    IRRELEVANCE = "irrelevance"
    """No tool fits: correct iff the model makes no call."""

    def allows_gold_calls(self, count: int) -> bool:
        """Whether a gold answer of `count` calls fits this category."""
        if self is Category.PARALLEL:
            return count >= 1
        return count == (0 if self is Category.IRRELEVANCE else 1)


class _ParseError(ValueError):
    """A call block that is not a list of keyword-argument calls with literal values."""


def parse_tool_calls(text: str) -> ParseResult:
    """Parse every call block in `text` (Pythonic or JSON call list); no markers means no calls."""
    calls: list[ToolCall] = []
    try:
        for block in _BLOCK.findall(text):
            calls += _parse_block(block.strip())
    except _ParseError as exc:
        return ParseResult(error=str(exc))
    if TOOL_CALL_START in _BLOCK.sub("", text):
        return ParseResult(error=f"missing {TOOL_CALL_END}")
    return ParseResult(calls=calls)


def _parse_block(content: str) -> list[ToolCall]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return _python_calls(content)
    if not isinstance(data, list):
        raise _ParseError("expected a list of calls")
    return [_json_call(item) for item in data]


def _json_call(item: Any) -> ToolCall:
    if not (
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("arguments", {}), dict)
    ):
        raise _ParseError('a JSON call must be {"name": string, "arguments": object}')
    return ToolCall(item["name"], item.get("arguments", {}))


def _python_calls(content: str) -> list[ToolCall]:
    try:
        tree = ast.parse(content, mode="eval")
    except SyntaxError as exc:
        raise _ParseError(f"invalid call syntax: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise _ParseError("invalid call syntax") from None
    if not isinstance(tree.body, ast.List):
        raise _ParseError("expected a list of calls")
    return [_python_call(node) for node in tree.body.elts]


def _python_call(node: ast.expr) -> ToolCall:
    if not isinstance(node, ast.Call):
        raise _ParseError("list item is not a call")
    name = _dotted_name(node.func)
    if node.args:
        raise _ParseError(f"positional arguments in call to {name!r}")
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise _ParseError(f"**kwargs in call to {name!r}")
        if keyword.arg in arguments:
            raise _ParseError(f"repeated argument {keyword.arg!r} in call to {name!r}")
        arguments[keyword.arg] = _literal(keyword.value, keyword.arg)
    return ToolCall(name, arguments)


def _dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted_name(node.value)}.{node.attr}"
    raise _ParseError("call target is not a function name")


def _literal(node: ast.expr, argument: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise _ParseError(f"argument {argument!r} is not a literal") from None
    if not _json_like(value):
        raise _ParseError(f"argument {argument!r}: only str, int, float, bool, None, list, dict allowed")
    return value


def _json_like(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float):
        return True
    if isinstance(value, list):
        return all(map(_json_like, value))
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_like(item) for key, item in value.items())
    return False


def score_tool_calls(output: str, gold: list[dict], tools: list[dict] | None = None, *, category: str) -> ToolCallScore:
    """Score `output`'s calls against `gold` for a BFCL `category` (see `Category`).

    `tools` (`{"name", "parameters"}` or OpenAI `{"type": "function", "function": {...}}`) enables
    the schema checks: required arguments present, no unknown ones, top-level types; and lets
    optional parameters with a `default` be omitted (or passed at their default) when gold names them.
    Raises `ValueError` for an unknown category or a gold call count it does not allow, and
    `TypeError` for a gold call not shaped `{"name": str, "arguments": dict}`.
    """
    kind = Category(category)
    if not kind.allows_gold_calls(len(gold)):
        raise ValueError(f"category {kind.value!r} does not allow {len(gold)} gold calls")
    expected = [_gold_call(entry) for entry in gold]
    parsed = parse_tool_calls(output)
    if parsed.error is not None:
        return ToolCallScore(False, f"parse error: {parsed.error}")
    if len(parsed.calls) > len(expected):
        return ToolCallScore(False, "extra call")
    if len(parsed.calls) < len(expected):
        return ToolCallScore(False, "no call" if not parsed.calls else "missing call")
    specs = [tool.get("function", tool) for tool in tools or []]
    return _match_all(expected, parsed.calls, {spec["name"]: spec.get("parameters", {}) for spec in specs})


def _gold_call(entry: Any) -> ToolCall:
    if not (
        isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("arguments"), dict)
    ):
        raise TypeError(f"gold call must be {{'name': str, 'arguments': dict}}, got {entry!r}")
    return ToolCall(entry["name"], entry["arguments"])


def _match_all(gold: list[ToolCall], calls: list[ToolCall], parameters: dict[str, dict]) -> ToolCallScore:
    """Find a one-to-one assignment of calls to gold calls; else explain the first gold call left over."""
    reasons = [[_mismatch(want, call, parameters.get(want.name)) for call in calls] for want in gold]
    unmatched = _first_unmatched([[reason is None for reason in row] for row in reasons])
    if unmatched is None:
        return ToolCallScore(True, "ok")
    want = gold[unmatched]
    same_name = (
        reason for reason, call in zip(reasons[unmatched], calls, strict=True) if call.name == want.name and reason
    )
    return ToolCallScore(False, next(same_name, "wrong function name"))


def _first_unmatched(fits: list[list[bool]]) -> int | None:
    """Bipartite matching (Kuhn): the first gold row no assignment can cover, or None if all are covered."""
    owner: dict[int, int] = {}

    def assign(row: int, seen: set[int]) -> bool:
        for column, fit in enumerate(fits[row]):
            if fit and column not in seen:
                seen.add(column)
                if column not in owner or assign(owner[column], seen):
                    owner[column] = row
                    return True
        return False

    return next((row for row in range(len(fits)) if not assign(row, set())), None)


def _mismatch(want: ToolCall, call: ToolCall, parameters: dict | None) -> str | None:
    """Why `call` does not match `want` (None if it does), checking `parameters` schema when known."""
    if call.name != want.name:
        return "wrong function name"
    problem = None if parameters is None else _schema_problem(call.arguments, parameters)
    return problem or _argument_mismatch(want.arguments, call.arguments, parameters or {})


def _schema_problem(arguments: dict[str, Any], parameters: dict) -> str | None:
    properties = parameters.get("properties", {})
    for name in parameters.get("required", []):
        if name not in arguments:
            return f"missing argument {name!r}"
    for name, value in arguments.items():
        if name not in properties:
            return f"unexpected argument {name!r}"
        declared = properties[name].get("type")
        if declared and not _has_type(value, declared):
            return f"argument {name!r}: expected {_type_label(declared)}, got {_json_type(value)}"
    return None


def _argument_mismatch(expected: dict[str, Any], actual: dict[str, Any], parameters: dict) -> str | None:
    properties = parameters.get("properties", {})
    required = set(parameters.get("required", []))
    defaults = {
        name: spec["default"] for name, spec in properties.items() if name not in required and "default" in spec
    }
    for name, want in expected.items():
        schema = properties.get(name, {})
        if name in actual:
            if not _value_matches(want, actual[name], schema):
                return _short(f"argument {name!r}: expected {_describe(want)}, got {actual[name]!r}")
        elif name not in defaults or not _value_matches(want, defaults[name], schema):
            return f"missing argument {name!r}"
    for name, got in actual.items():
        at_default = name in defaults and _value_matches(defaults[name], got, properties[name])
        if name not in expected and not at_default:
            return f"unexpected argument {name!r}"
    return None


def _value_matches(want: Any, got: Any, schema: dict) -> bool:
    """Type-aware equality: bool is not int; int and float mix only where `schema` says number."""
    if _is_any_of(want):
        return any(_value_matches(option, got, schema) for option in want[ANY_OF])
    if isinstance(want, dict) and isinstance(got, dict):
        properties = schema.get("properties", {})
        return want.keys() == got.keys() and all(
            _value_matches(want[key], got[key], properties.get(key, {})) for key in want
        )
    if isinstance(want, list) and isinstance(got, list):
        items = schema.get("items", {})
        return len(want) == len(got) and all(_value_matches(w, g, items) for w, g in zip(want, got, strict=True))
    if type(want) is type(got):
        return want == got
    numbers = {_json_type(want), _json_type(got)} <= {"integer", "number"}
    return numbers and "number" in _type_names(schema.get("type")) and want == got


def _is_any_of(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {ANY_OF} and isinstance(value[ANY_OF], list)


def _describe(want: Any) -> str:
    return f"one of {want[ANY_OF]!r}" if _is_any_of(want) else repr(want)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _type_names(declared: str | list[str] | None) -> set[str]:
    if declared is None:
        return set()
    listed = [declared] if isinstance(declared, str) else declared
    return {_TYPE_ALIASES.get(name, name) for name in listed}


def _type_label(declared: str | list[str]) -> str:
    return declared if isinstance(declared, str) else " or ".join(declared)


def _has_type(value: Any, declared: str | list[str]) -> bool:
    names = _type_names(declared)
    actual = _json_type(value)
    return bool(names & {actual, "any"}) or (actual == "integer" and "number" in names)


def _short(message: str) -> str:
    return shorten(message, width=_MAX_REASON_CHARS, placeholder="...")
