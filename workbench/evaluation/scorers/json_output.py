"""Score structured (JSON) model output: extract one JSON value, validate it, compare it to gold.

Lenient extraction order (see `extract_json`): a ```json (or bare ```) fenced block, else the
first balanced `{...}` / `[...]` that a real JSON decoder accepts, else failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from textwrap import shorten
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

Method = Literal["strict", "fenced", "embedded"]

_FENCE = re.compile(r"```([\w-]*)[^\S\n]*\n?(.*?)```", re.DOTALL)
_FENCE_LANGUAGES = frozenset({"", "json"})
_OPENERS = re.compile(r"[{\[]")
_DECODER = json.JSONDecoder()
_MISSING = object()
_MAX_ERROR_CHARS = 120


@dataclass(frozen=True)
class ExtractResult:
    """One JSON value pulled out of model output, or why none was."""

    ok: bool
    """Whether a JSON value was found and parsed."""

    value: Any = None
    """The parsed value (None on failure; also a legitimate parsed `null`)."""

    method: Method | None = None
    """How the value was found: the whole output (strict), a fenced block, or embedded in prose."""

    error: str | None = None
    """Why extraction failed; None on success."""


@dataclass(frozen=True)
class JsonScore:
    """How one output fares against a schema and, optionally, a gold object."""

    parsed: bool
    """A JSON value could be extracted."""

    valid: bool
    """The extracted value satisfies the schema (False when nothing parsed)."""

    field_accuracy: float | None
    """Fraction of gold leaf fields the output reproduces exactly; None when no gold was given."""

    errors: list[str] = field(default_factory=list)
    """Short messages: the parse failure, schema violations, gold field mismatches."""


def extract_json(text: str, strict: bool = False) -> ExtractResult:
    """Find one JSON value in `text`.

    Strict: the whole output, stripped, must be exactly one JSON value (any type).
    Lenient: the first fenced block tagged `json` or untagged whose content parses; else the first
    `{` or `[` at which `json.JSONDecoder.raw_decode` succeeds (so it is balanced and valid JSON).
    """
    if strict:
        try:
            return ExtractResult(ok=True, value=json.loads(text.strip()), method="strict")
        except json.JSONDecodeError as exc:
            error = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            return ExtractResult(ok=False, error=error)
    for found in (_from_fence(text), _embedded(text)):
        if found is not None:
            return found
    return ExtractResult(ok=False, error="no JSON value found")


def _from_fence(text: str) -> ExtractResult | None:
    for match in _FENCE.finditer(text):
        if match.group(1).lower() not in _FENCE_LANGUAGES:
            continue
        try:
            return ExtractResult(ok=True, value=json.loads(match.group(2)), method="fenced")
        except json.JSONDecodeError:
            continue
    return None


def _embedded(text: str) -> ExtractResult | None:
    for match in _OPENERS.finditer(text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return ExtractResult(ok=True, value=value, method="embedded")
    return None


def score_json(output: str, schema: dict, gold: dict | None = None, strict: bool = False) -> JsonScore:
    """Parse `output`, validate it against `schema` (JSON Schema 2020-12), and compare it to `gold`.

    Raises `ValueError` if `schema` itself is not a valid schema: that is a suite bug, not a model error.
    """
    try:
        validator = schema_validator(schema)
    except SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from exc
    extracted = extract_json(output, strict=strict)
    if not extracted.ok:
        accuracy = None if gold is None else 0.0
        return JsonScore(parsed=False, valid=False, field_accuracy=accuracy, errors=[extracted.error])
    violations = sorted(validator.iter_errors(extracted.value), key=lambda e: e.json_path)
    errors = [_short(f"{error.json_path}: {error.message}") for error in violations]
    valid = not errors
    accuracy = None
    if gold is not None:
        accuracy, mismatches = field_accuracy(gold, extracted.value)
        errors += mismatches
    return JsonScore(parsed=True, valid=valid, field_accuracy=accuracy, errors=errors)


def schema_validator(schema: Any) -> Draft202012Validator:
    """A Draft 2020-12 validator for `schema`, which is checked against the meta-schema (raising `SchemaError`)
    once per process per distinct schema: validators are kept by the schema's JSON text."""
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError):  # not JSON (a set, a circular reference): checked every time, as it may change
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema)
    return _validator(text)


@lru_cache(maxsize=4096)
def _validator(text: str) -> Draft202012Validator:
    schema = json.loads(text)  # its own copy: a caller changing its dict later cannot change the cached validator
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def field_accuracy(gold: dict, value: Any) -> tuple[float, list[str]]:
    """Fraction of `gold`'s leaf paths whose values `value` reproduces, and a message per miss.

    Objects are flattened recursively (`{"a": {"b": 1}}` has the one leaf `$.a.b`); lists and empty
    objects are leaves compared whole. Equality is JSON equality: `1 == 1.0`, but `true != 1`.
    """
    leaves = list(_leaves(gold, ()))
    misses = []
    for path, expected in leaves:
        actual = _lookup(value, path)
        where = "$" + "".join(f".{key}" for key in path)
        if actual is _MISSING:
            misses.append(f"field {where}: missing")
        elif not _json_equal(expected, actual):
            misses.append(_short(f"field {where}: expected {expected!r}, got {actual!r}"))
    return (len(leaves) - len(misses)) / len(leaves), misses


def _leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    else:
        yield path, value


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    return a == b


def _short(message: str) -> str:
    return shorten(message, width=_MAX_ERROR_CHARS, placeholder="...")
