"""A swept stage's grid: where its `{sweep: [...]}` fields are, what is wrong with them, and its candidates.

The loader validates each candidate as the stage written with that candidate's values (a bad value is reported at
its own line, `sft.learning_rate.sweep[1]`), and the planner hashes each one as that stage
(`workbench.api.sweeps` says how candidates are named).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from workbench.api.config import StageConfig
from workbench.api.markers import StageRef, consumed
from workbench.api.sweeps import SWEEP_KEY, candidate_name, looks_like_sweep
from workbench.api.sweeps import marker_problems as sweep_marker_problems


@dataclass(frozen=True)
class Sweep:
    """A swept stage as the recipe wrote it: its swept fields and its candidates."""

    fields: tuple[str, ...]
    """The swept fields, as dotted paths below the stage (`learning_rate`, `lora.r`)."""
    candidates: tuple[str, ...]
    """The candidates' names, in grid order (the first swept field's values outermost)."""


@dataclass(frozen=True)
class Point:
    """One candidate: its name, the stage's entry with each swept field set to its value, and which values."""

    name: str
    raw: dict[str, Any]
    picked: dict[tuple, int]
    """Swept field (a path below the stage) -> the index of this candidate's value in its sweep list."""

    def written_at(self, path: tuple) -> tuple:
        """`path` below the stage as it is written in the file: inside a swept field, at this candidate's value
        (`('learning_rate',)` -> `('learning_rate', 'sweep', 1)`)."""
        for field, index in self.picked.items():
            if path[: len(field)] == field:
                return field + (SWEEP_KEY, index) + path[len(field) :]
        return path


def sweep_fields(entry: dict, below: tuple = ()) -> list[tuple]:
    """The path of every `{sweep: ...}` mapping in a stage's entry (inside mappings only: a list is a value)."""
    found = []
    for key, value in entry.items():
        if looks_like_sweep(value):
            found.append(below + (key,))
        elif isinstance(value, dict):
            found += sweep_fields(value, below + (key,))
    return found


def marker_problems(entry: dict, fields: list[tuple]) -> list[tuple[tuple, str]]:
    """(path, message) for each malformed sweep among the stage's `fields` (see `api.sweeps.marker_problems`)."""
    return [
        (field + below, message)
        for field in fields
        for below, message in sweep_marker_problems(_at(entry, field), True)
    ]


def field_problem(field: tuple, config_class: type[StageConfig], raw: dict) -> str | None:
    """Why `field` cannot be swept, or None: the stage's name and kind, a reference to another stage (candidates
    would read different inputs: write one stage per input, or name one candidate of a swept input), and fields
    that do not change the output (every candidate would be the same)."""
    key = str(field[0])
    if key == "name":
        return "'name' cannot be swept: the candidates are named after the stage (`name@field=value`)"
    if key == "kind":
        return "'kind' cannot be swept: write one stage per kind"
    if any(isinstance(c.marker, StageRef) and c.path[: len(field)] == field for c in consumed(config_class, raw)):
        return (
            f"'{key}' names the stage's input and cannot be swept: write one stage per input (of a swept input, "
            f"name one candidate: `{key}: stage@field=value`)"
        )
    by_alias = {info.alias or name: name for name, info in config_class.model_fields.items()}
    if by_alias.get(key) in config_class.unhashed_fields:
        return f"'{key}' does not change the stage's output: every candidate would be the same"
    return None


def expand(name: str, entry: dict, fields: list[tuple]) -> list[Point]:
    """Every combination of the swept values (the first field's values outermost), each as a candidate."""
    lists = [_at(entry, field)[SWEEP_KEY] for field in fields]
    points = []
    for indices in itertools.product(*(range(len(values)) for values in lists)):
        raw = copy.deepcopy(entry)
        choices = {}
        for field, values, index in zip(fields, lists, indices, strict=True):
            _at(raw, field[:-1])[field[-1]] = values[index]
            choices[".".join(str(part) for part in field)] = values[index]
        points.append(Point(candidate_name(name, choices), raw, dict(zip(fields, indices, strict=True))))
    return points


def first_point(entry: dict, fields: list[tuple]) -> dict:
    """The entry with each well-formed sweep replaced by its first value (its other fields checked as usual)."""
    raw = copy.deepcopy(entry)
    for field in fields:
        values = _at(raw, field).get(SWEEP_KEY)
        if isinstance(values, list) and values:
            _at(raw, field[:-1])[field[-1]] = values[0]
    return raw


def _at(data: dict, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data
