"""Typed markers for everything a stage consumes, read from the config's annotations.

A stage config says what it consumes once, in its field types:

    from_: StageName | None                 # an earlier stage (an edge of the stage graph)
    data: DataFile                          # a file under the project root (checked, hashed by content)
    model: ModelPath | None                 # a model folder on disk or a hub id
    suites: list[Annotated[str, Named("suite")]]   # a named thing: checked against its namespace

The loader checks these (names exist, files exist, URIs are well formed), the planner hashes them and the
executor wires the inputs, all through `consumed()`, so the three can never disagree.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel


@dataclass(frozen=True)
class StageRef:
    """The value names an earlier stage of the recipe."""

    kinds: tuple[str, ...] = ()
    """The stage kinds it may name (empty: any kind that makes a model, since the stage reads that model)."""

    also: tuple[str, ...] = ()
    """With `kinds` empty: further kinds it may name besides those that make a model (evaluate's `from` also takes
    an export stage, whose GGUF file it scores)."""

    hashed: bool = True
    """False when the reference only feeds a check (a gate's comparison) and does not change this stage's output:
    the referenced stage still runs first, but its hash stays out of this stage's hash."""

    candidates: bool = False
    """True when the value names a swept stage and the field reads every candidate of it (a merge's
    `candidates_of`); any other reference names one stage or one candidate (`sft@learning_rate=0.001`)."""


@dataclass(frozen=True)
class DataPath:
    """The value is a file or folder relative to the project root; its content enters the stage's hash."""

    kind: Literal["file", "folder", "dataset", "any"] = "any"
    """`dataset`: a records file, or a folder saved by `datasets`' `save_to_disk`."""
    schemes: tuple[str, ...] = ()
    """URI schemes accepted instead of a path (`argilla`); each is resolved by a scheme in the catalog."""

    hash_prefix: str = ""
    """Prefix of this value's key among the hashed files (kept for stable hashes)."""


@dataclass(frozen=True)
class ModelPath:
    """The value is a model folder relative to the project root, or a Hugging Face hub id (`org/name`)."""

    hash_prefix: str = ""
    hub: bool = True
    """Whether a hub id is accepted; False for fields the stage opens as a local folder only."""


@dataclass(frozen=True)
class Named:
    """The value names a thing in a namespace of the catalog (`suite`, `merge_template`, `preset`, `judge`)."""

    namespace: str


Marker = StageRef | DataPath | ModelPath | Named

StageName = Annotated[str, StageRef()]
DataFile = Annotated[str, DataPath("file")]
DataSet = Annotated[str, DataPath("dataset")]
"""Records: a JSONL, JSON or Parquet file, or a saved Hugging Face dataset folder."""
DataFolder = Annotated[str, DataPath("folder")]
ModelSourcePath = Annotated[str, ModelPath()]


@dataclass(frozen=True)
class Consumed:
    """One consumed value: where it is (a YAML path below the stage, aliases used), what it is, its value."""

    path: tuple[str | int, ...]
    marker: Marker
    value: str


def consumed(model: type[BaseModel], data: Any, path: tuple = ()) -> list[Consumed]:
    """Every marked value in `data`, read against `model`'s annotations.

    `data` is raw YAML (a dict, checked even when other fields are invalid) or a `model_dump(by_alias=True)` of a
    validated config; values of the wrong shape are skipped (the schema reports those).
    """
    if not isinstance(data, dict):
        return []
    found: list[Consumed] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in data:
            found += _walk(_annotation(field), data[key], path + (key,))
    return found


def _annotation(field) -> Any:
    """The field's type with its markers: pydantic keeps `Annotated` metadata apart from the annotation."""
    markers = [m for m in field.metadata if isinstance(m, (StageRef, DataPath, ModelPath, Named))]
    return Annotated[field.annotation, *markers] if markers else field.annotation


def _walk(annotation: Any, value: Any, path: tuple) -> list[Consumed]:
    if value is None:
        return []
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *meta = get_args(annotation)
        markers = [m for m in meta if isinstance(m, (StageRef, DataPath, ModelPath, Named))]
        if markers and isinstance(value, str):
            return [Consumed(path, markers[0], value)]
        return _walk(inner, value, path)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if isinstance(value, str):
            options = [o for o in options if _accepts_str(o)] or options
        elif isinstance(value, dict):
            options = [o for o in options if _is_model(o) or get_origin(o) is dict]
        elif isinstance(value, list):
            options = [o for o in options if get_origin(o) in (list, tuple)]
        for option in options:
            found = _walk(option, value, path)
            if found:
                return found
        return []
    if origin in (list, tuple) and isinstance(value, list):
        item = get_args(annotation)[0] if get_args(annotation) else Any
        return [c for index, entry in enumerate(value) for c in _walk(item, entry, path + (index,))]
    if origin is dict and isinstance(value, dict):
        args = get_args(annotation)
        item = args[1] if len(args) == 2 else Any
        return [c for key, entry in value.items() for c in _walk(item, entry, path + (key,))]
    if _is_model(annotation):
        return consumed(annotation, value, path)
    return []


def _accepts_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    if get_origin(annotation) is Annotated:
        return _accepts_str(get_args(annotation)[0])
    return get_origin(annotation) is Literal or annotation is typing.Any


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
