"""Errors that reach the user as one clear line each, never as a traceback, and the one did-you-mean helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class WorkbenchError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, located by file, line and field path."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class RecipeError(WorkbenchError):
    """Every problem found in one recipe file, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StageError(WorkbenchError):
    """A stage could not run because of its input (bad data, missing model, mismatched tokenizer)."""


class StageHalted(WorkbenchError):
    """A stage finished but asked the recipe to stop (a failed gate); the message says why. `scores`: the metrics of
    the recipe's finished evaluate stages by name, in recipe order (what `workbench run` prints before the message)."""

    def __init__(self, message: str, scores: dict[str, dict[str, float]] | None = None):
        super().__init__(message)
        self.scores = scores or {}


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (a library's message may run to pages), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or '' when none is close."""
    choices = list(choices)
    same_letters = [choice for choice in choices if str(choice).lower() == str(word).lower()]
    if same_letters:  # a case slip (q4_k_m for q4_K_M) beats any edit-distance neighbour
        return f" (did you mean '{same_letters[0]}'?)"
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def article(word: str) -> str:
    """`a` or `an` before `word` (by its first letter: good enough for stage kinds and field names)."""
    return "an" if str(word)[:1].lower() in "aeiou" else "a"
