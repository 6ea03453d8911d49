"""Swept fields: a training stage's field written `{sweep: [a, b, ...]}` makes the stage a grid of candidates.

A candidate is the stage as it would be written with one value of each swept field: the same config, so the same
hash, cache entry and output as that stage. Its name is the stage's name followed by its choices,
`sft@learning_rate=0.001` (several swept fields: `sft@learning_rate=0.001@epochs=2`); `@` is never part of a stage's
own name, so a candidate's name always tells its stage. Candidates share their stage's folder in the store
(`<recipe>/sft/<hash>/`), each under its own hash.

A bare list cannot mean a sweep: lists are values of their own (a mergekit gradient, a list of suites).
"""

from __future__ import annotations

import json
from typing import Any

SWEEP_KEY = "sweep"
CANDIDATE_MARK = "@"
SCALARS = (str, int, float, bool, type(None))


def is_sweep(value: Any) -> bool:
    """True for a well-formed `{sweep: [...]}` marker (`marker_problems` reports the others)."""
    return isinstance(value, dict) and set(value) == {SWEEP_KEY}


def looks_like_sweep(value: Any) -> bool:
    """True for any mapping with a `sweep` key: meant as a sweep, well-formed or not."""
    return isinstance(value, dict) and SWEEP_KEY in value


def marker_problems(marker: dict, scalars_only: bool) -> list[tuple[tuple, str]]:
    """(path below the marker, message) for each way `marker` is malformed: other keys beside `sweep`, an empty or
    non-list `sweep`, a value listed twice (its two candidates would be one) and, with `scalars_only`, a value that
    is not a scalar (a merge parameter may sweep mergekit gradients, which are lists)."""
    values = marker[SWEEP_KEY]
    if len(marker) != 1:
        return [((), "a sweep is `{sweep: [values]}` with no other keys")]
    if not isinstance(values, list) or not values:
        return [((SWEEP_KEY,), "`sweep` needs a non-empty list of values")]
    problems, texts = [], []
    for index, value in enumerate(values):
        if scalars_only and not isinstance(value, SCALARS):
            problems.append(
                ((SWEEP_KEY, index), "a swept value is a number, string, boolean or null; to sweep inside a mapping, "
                 "sweep its field (`lora: {r: {sweep: [8, 16]}}`)")
            )  # fmt: skip
        elif value_text(value) in texts:
            problems.append(((SWEEP_KEY, index), f"{value_text(value)} is listed twice"))
        else:
            texts.append(value_text(value))
    return problems


def stage_of(name: str) -> str:
    """The stage a name belongs to: `sft@learning_rate=0.001` -> `sft`; a stage's own name is itself."""
    return name.split(CANDIDATE_MARK, 1)[0]


def value_text(value: Any) -> str:
    """A swept value as a candidate's name shows it: a string as written, anything else as YAML/JSON spells it
    (`0.001`, `true`, `null`)."""
    return value if isinstance(value, str) else json.dumps(value)


def candidate_name(stage: str, choices: dict[str, Any]) -> str:
    """`stage@field=value@...` for the swept fields (dotted paths below the stage) and this candidate's values."""
    return stage + "".join(f"{CANDIDATE_MARK}{field}={value_text(value)}" for field, value in choices.items())


def spelled_as_candidate(name: str) -> str:
    """A candidate name with each value written as candidate names write it: `sft@learning_rate=1.0e-3` ->
    `sft@learning_rate=0.001` (the same number spelt another way); the name itself when nothing parses."""
    stage, *parts = name.split(CANDIDATE_MARK)
    choices: dict[str, Any] = {}
    for part in parts:
        field, found, text = part.partition("=")
        if not found:
            return name
        try:
            choices[field] = json.loads(text)  # numbers, true/false/null as JSON reads them; anything else as text
        except ValueError:
            choices[field] = text
    return candidate_name(stage, choices)
