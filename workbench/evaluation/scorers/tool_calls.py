"""Parse LFM2 tool calls and score them against gold calls by AST match (BFCL's rules; nothing is eval'd).

A call block is `<|tool_call_start|>...<|tool_call_end|>` holding either a Pythonic call list,
`[get_weather(city="Paris"), get_time(tz="UTC")]`, or a JSON one,
`[{"name": "get_weather", "arguments": {"city": "Paris"}}]`. Text outside the blocks is ignored.

Gold calls are `{"name": str, "arguments": dict}`. A gold argument value is the one expected
literal, or `{"__any_of__": [v1, v2, ...]}` to accept any of several values (at any depth): BFCL's
list of possible answers. As in BFCL, an alternative `""` (constant `OMITTED`) lets the argument (or a
key of a dict argument) be left out.
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
OMITTED = ""
"""A gold alternative meaning "may be omitted", as `""` is in BFCL's possible answers."""

_BLOCK = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)
_TYPE_ALIASES = {"float": "number", "dict": "object", "tuple": "array"}
"""Python-flavoured type names BFCL tool schemas use, mapped to JSON Schema names."""
_MAX_REASON_CHARS = 120
_STANDARDIZE = re.compile(r"[ ,./\-_*^]")
"""What BFCL's `standardize_string` deletes before comparing strings: spaces and `,./-_*^`."""


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

    @property
    def attempted(self) -> bool:
        """Whether the output tries to call a tool: it holds a call block that fails to parse or parses
        to at least one call (no block, or only empty lists `[]`, is no attempt)."""
        return self.error is not None or bool(self.calls)

    @property
    def made_call(self) -> bool:
        """Whether the output makes a call: it parses and holds at least one (BFCL's irrelevance test)."""
        return self.error is None and bool(self.calls)


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
    """No tool fits: correct iff the model makes no call (an unparsable call block is no call)."""

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
        raise _ParseError(f"argument {argument!r}: only str, int, float, bool, None, list, tuple, dict allowed")
    return _tuples_as_lists(value)


def _json_like(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(map(_json_like, value))
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_like(item) for key, item in value.items())
    return False


def _tuples_as_lists(value: Any) -> Any:
    """A tuple literal is an array (BFCL reads tuples as lists for its tuple-typed parameters)."""
    if isinstance(value, list | tuple):
        return [_tuples_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _tuples_as_lists(item) for key, item in value.items()}
    return value


def score_tool_calls(
    output: str, gold: list[dict], tools: list[dict] | None = None, *, category: str, parsed: ParseResult | None = None
) -> ToolCallScore:
    """Score `output`'s calls against `gold` for a BFCL `category` (see `Category`), by BFCL's AST checker rules.

    `tools` (`{"name", "parameters"}` or OpenAI `{"type": "function", "function": {...}}`) enables
    the schema checks: required arguments present, no unknown ones, types (an int passes where a number is
    declared; array items must have the declared `items` type exactly). Raises `ValueError` for an unknown
    category or a gold call count it does not allow, and `TypeError` for a gold call not shaped
    `{"name": str, "arguments": dict}`. `parsed`: `parse_tool_calls(output)` when the caller has it already.
    """
    kind = Category(category)
    if not kind.allows_gold_calls(len(gold)):
        raise ValueError(f"category {kind.value!r} does not allow {len(gold)} gold calls")
    expected = [_gold_call(entry) for entry in gold]
    parsed = parse_tool_calls(output) if parsed is None else parsed
    if kind is Category.IRRELEVANCE:
        # BFCL: an answer whose calls do not decode makes no call, which is right here.
        return ToolCallScore(False, "extra call") if parsed.made_call else ToolCallScore(True, "ok")
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
    problem = None if parameters is None else _schema_problem(call.arguments, parameters, want.arguments)
    return problem or _argument_mismatch(want.arguments, call.arguments, (parameters or {}).get("properties", {}))


def _schema_problem(arguments: dict[str, Any], parameters: dict, gold: dict[str, Any]) -> str | None:
    """Required arguments present, no unknown ones, each value of its declared type (an explicit None
    passes where gold lists None)."""
    properties = parameters.get("properties", {})
    for name in parameters.get("required", []):
        if name not in arguments:
            return f"missing argument {name!r}"
    for name, value in arguments.items():
        if name not in properties:
            return f"unexpected argument {name!r}"
        if value is None and name in gold and _lists_none(gold[name]):
            continue
        problem = _type_problem(value, properties[name])
        if problem:
            return f"argument {name!r}: {problem}"
    return None


def _type_problem(value: Any, schema: dict) -> str | None:
    """BFCL's `type_checker`: the value has the declared type, an int passing for a number (BFCL turns an int
    into a float for a float parameter); an array's items have the declared `items` type exactly, one level
    deep (no int for a number there: BFCL converts only top-level values)."""
    declared = schema.get("type")
    if declared and not _has_type(value, declared):
        return f"expected {_type_label(declared)}, got {_json_type(value)}"
    items = schema.get("items")
    item_type = items.get("type") if isinstance(items, dict) else None
    if isinstance(value, list) and item_type:
        for index, item in enumerate(value):
            if not _has_type(item, item_type, exact=True):
                return f"item {index}: expected {_type_label(item_type)}, got {_json_type(item)}"
    return None


def _argument_mismatch(expected: dict[str, Any], actual: dict[str, Any], properties: dict) -> str | None:
    """BFCL's value checks: every argument the output gives is one gold names, with an acceptable value;
    every gold argument is given unless its alternatives include `OMITTED`."""
    for name, want in expected.items():
        if name in actual:
            if not _value_matches(want, actual[name], properties.get(name, {})):
                return _short(f"argument {name!r}: expected {_describe(want)}, got {actual[name]!r}")
        elif not _may_omit(want):
            return f"missing argument {name!r}"
    for name in actual:
        if name not in expected:
            return f"unexpected argument {name!r}"
    return None


def _value_matches(want: Any, got: Any, schema: dict) -> bool:
    """Type-aware equality: strings after BFCL's `standardize_string`; bool is not int; int and float mix only
    where `schema` says number; a dict may leave out the keys whose gold allows `OMITTED`."""
    if _is_any_of(want):
        return any(_value_matches(option, got, schema) for option in want[ANY_OF])
    if isinstance(want, str) and isinstance(got, str):
        return standardize_string(want) == standardize_string(got)
    if isinstance(want, dict) and isinstance(got, dict):
        properties = schema.get("properties", {})
        return (
            got.keys() <= want.keys()
            and all(key in got or _may_omit(want[key]) for key in want)
            and all(_value_matches(want[key], got[key], properties.get(key, {})) for key in got)
        )
    if isinstance(want, list) and isinstance(got, list):
        items = schema.get("items", {})
        return len(want) == len(got) and all(_value_matches(w, g, items) for w, g in zip(want, got, strict=True))
    if type(want) is type(got):
        return want == got
    numbers = {_json_type(want), _json_type(got)} <= {"integer", "number"}
    return numbers and "number" in _type_names(schema.get("type")) and want == got


def standardize_string(text: str) -> str:
    """BFCL's `standardize_string`: drop spaces and `,./-_*^`, lowercase, single quotes to double."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _is_any_of(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {ANY_OF} and isinstance(value[ANY_OF], list)


def _alternatives(want: Any) -> list[Any]:
    return want[ANY_OF] if _is_any_of(want) else [want]


def _may_omit(want: Any) -> bool:
    """Whether gold lets the argument be left out: one of its alternatives is `OMITTED` (`""`)."""
    return any(isinstance(option, str) and option == OMITTED for option in _alternatives(want))


def _lists_none(want: Any) -> bool:
    return any(option is None for option in _alternatives(want))


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


def _has_type(value: Any, declared: str | list[str], *, exact: bool = False) -> bool:
    """Whether `value` is of a `declared` type; an int counts as a number unless `exact`."""
    names = _type_names(declared)
    actual = _json_type(value)
    return bool(names & {actual, "any"}) or (not exact and actual == "integer" and "number" in names)


def _short(message: str) -> str:
    return shorten(message, width=_MAX_REASON_CHARS, placeholder="...")
