"""pydantic's validation errors as our one-line problems: one per mistake, no Python in the words, and a hint
where the field belongs when it sits in the wrong place."""

from __future__ import annotations

import re
from types import UnionType
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

from pydantic import ValidationError

from workbench.api.config import StageConfig
from workbench.api.kinds import Catalog
from workbench.errors import did_you_mean
from workbench.recipe.schema import Recipe


class SchemaProblem(NamedTuple):
    path: tuple
    message: str
    line_path: tuple | None
    """The path whose line to report (None: find it from `path` and the message)."""


def schema_problems(
    error: ValidationError, model: type, data: dict, prefix: tuple, catalog: Catalog
) -> list[SchemaProblem]:
    """The problems in `error`, raised validating `data` (found at `prefix` in the file) as `model`."""
    found = _collapse_unions(error.errors(), data)
    # a misspelt required field is one problem (the unknown field's did-you-mean), not two
    misspelt = {
        (loc[:-1], name)
        for loc, item in found
        if item["type"] == "extra_forbidden"
        for name in _field_names(model, loc[:-1])
        if did_you_mean(str(loc[-1]), _field_names(model, loc[:-1])) == f" (did you mean '{name}'?)"
    }
    return [
        _problem(model, loc, item, prefix, catalog)
        for loc, item in found
        if not (item["type"] == "missing" and (loc[:-1], loc[-1]) in misspelt)
    ]


def _problem(model: type, loc: tuple, item: dict, prefix: tuple, catalog: Catalog) -> SchemaProblem:
    """One pydantic error (`loc` cleaned of union tags) as a problem at `prefix + loc`."""
    kind = item["type"]
    if kind == "extra_forbidden":
        parent, key = prefix + loc[:-1], loc[-1]
        message = f"unknown field '{key}'{did_you_mean(str(key), _field_names(model, loc[:-1]))}"
        message += _elsewhere(model, loc, str(key), catalog)
        if len(loc) >= 3 and isinstance(loc[-2], int) and key in _field_names(model, loc[:-2]):
            # a field of the mapping form of a field that also takes a list, written in a list entry
            field = loc[-3]
            message += f"; '{key}' goes directly under '{field}:' ({field}: {{{key}: ...}}), not in a list entry"
        return SchemaProblem(parent, message, prefix + loc)
    if kind == "missing":
        return SchemaProblem(prefix + loc[:-1], f"missing required field '{loc[-1]}'", prefix + loc[:-1])
    message = _plain_message(item)
    value = item.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(value, (dict, list)):
        message += f" (got {value!r})"
        if kind in ("literal_error", "enum") and isinstance(value, str):
            message += did_you_mean(value, re.findall(r"'([^']*)'", str(item.get("ctx", {}).get("expected"))))
    return SchemaProblem(prefix + loc, message, None)


def _elsewhere(model: type, loc: tuple, key: str, catalog: Catalog) -> str:
    """Where a field this stage kind (or the recipe's top level) rejects does belong: other stage kinds, a
    sub-section of this stage (`loss`, `lora`), or the stage itself when it sits in a sub-section."""
    if len(loc) != 1:
        top = [f.alias or n for n, f in model.model_fields.items()]
        if issubclass(model, StageConfig) and key in top and isinstance(loc[-2], str):
            return f"; it is a field of the stage itself, not of '{loc[-2]}': indent it less"
        return ""
    takers = catalog.kinds_with_field(key)
    if model is Recipe and takers:
        return f"; stage kinds {', '.join(takers)} take it: is it indented under a stage?"
    if not issubclass(model, StageConfig):
        return ""
    sections = [
        section
        for section, info in model.model_fields.items()
        if any(key in _keys(sub) for sub in models_in(info.annotation))
    ]
    hint = f"; '{sections[0]}' takes it: indent it under '{sections[0]}:'" if sections else ""
    return hint + (f"; kinds that take it: {', '.join(takers)}" if takers else "")


def _field_names(model: type, loc: tuple) -> list[str]:
    """Field names (aliases where set) of the sub-model at `loc`, for did-you-mean hints: a list index steps into
    the list's items, so `models[0]` is an entry of `models:` and not its mapping form."""
    annotation: Any = model
    for part in loc:
        if isinstance(part, int):
            annotation = next((get_args(a)[0] for a in _shapes(annotation) if get_origin(a) is list), None)
            continue
        current = next((a for a in _shapes(annotation) if hasattr(a, "model_fields")), None)
        fields = {(f.alias or name): f for name, f in getattr(current, "model_fields", {}).items()}
        annotation = fields[part].annotation if part in fields else None
        if annotation is None:
            return []
    current = next((a for a in _shapes(annotation) if hasattr(a, "model_fields")), None)
    return [f.alias or name for name, f in current.model_fields.items()] if current else []


def _shapes(annotation: Any) -> list[Any]:
    """The types a value of `annotation` may have: through Optional, unions and Annotated, not into lists."""
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return [shape for arg in get_args(annotation) for shape in _shapes(arg)]
    return [annotation]


def models_in(annotation: Any) -> list[type]:
    """The pydantic models an annotation holds (through Optional, unions, lists, dicts and Annotated)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [model for arg in get_args(annotation) for model in models_in(arg)]


def _keys(model: type) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


_TAG_TYPES = frozenset({"str", "int", "float", "bool", "bytes", "none", "list", "dict", "nullable"})
_TYPE_WORDS = {
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _plain_message(item: dict) -> str:
    """pydantic's message without its Python: no 'Value error, ' prefix, no class names, no 'after validation'."""
    kind, message = item["type"], item["msg"]
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "Input should be a mapping of fields ('key: value' lines)"
    if kind == "too_short" and isinstance(item.get("ctx"), dict):
        count = item["ctx"].get("min_length", 1)
        return f"needs at least {count} {'entry' if count == 1 else 'entries'}"
    return message


def _clean_loc(loc: tuple, data: Any) -> tuple[tuple, int | None]:
    """`loc` without the union-member tags pydantic inserts (`str`, `function-after[...]`, `MergeInput`), read against
    the raw data so a user's own key is never taken for a tag; and where the first tag was (None: no union)."""
    kept: list = []
    union_at: int | None = None
    current = data
    for part in loc:
        if isinstance(current, dict) and part in current:
            kept.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            kept.append(part)
            current = current[part]
        elif isinstance(part, str) and (part in _TAG_TYPES or "[" in part or part[:1].isupper()):
            union_at = len(kept) if union_at is None else union_at
        else:
            kept.append(part)
            current = None
    return tuple(kept), union_at


def _collapse_unions(errors: list[dict], data: Any) -> list[tuple[tuple, dict]]:
    """One problem per mistake where a field takes one of several shapes: the errors of the shape the user wrote
    (a mapping's unknown field) when one branch got further than a type mismatch, else one 'should be a string or a
    mapping' for the value."""
    plain: list[tuple[tuple, dict]] = []
    groups: dict[tuple, list[tuple[tuple, dict]]] = {}
    for item in errors:
        loc, union_at = _clean_loc(tuple(item["loc"]), data)
        if union_at is None:
            plain.append((loc, item))
        else:
            groups.setdefault(loc[:union_at], []).append((loc, item))
    for root, members in groups.items():
        deeper = [(loc, item) for loc, item in members if loc != root or item["type"] not in _TYPE_WORDS]
        # a type mismatch of one shape is noise where another shape of the same value got further (a list entry
        # that is no string but a mapping with an unknown field: only the unknown field is the mistake)
        deeper = [(loc, item) for loc, item in deeper if item["type"] not in _TYPE_WORDS
                  or not any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in deeper)]  # fmt: skip
        if deeper:
            plain += list({(loc, item["msg"]): (loc, item) for loc, item in deeper}.values())
            continue
        words = list(dict.fromkeys(_TYPE_WORDS[item["type"]] for _, item in members))
        first = members[0][1]
        plain.append((root, {**first, "type": "union_type", "msg": f"Input should be {' or '.join(words)}"}))
    return plain
