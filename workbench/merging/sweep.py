"""Merge sweeps: a grid over methods and parameter values, expanded into concrete candidates.

A swept parameter is written `{sweep: [a, b, ...]}`. A bare list cannot mean a sweep: in mergekit a list
is a *gradient* (values interpolated across the layers), so `t: [0, 0.5, 1]` keeps its mergekit meaning.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from workbench.api.sweeps import SWEEP_KEY, is_sweep, looks_like_sweep, marker_problems


def sweep_problems(parameters: dict[str, Any], where: str) -> list[str]:
    """Malformed sweep markers in one parameter mapping (see `api.sweeps.marker_problems`; gradients may be swept)."""
    from workbench.recipe.problem_paths import format_path

    return [
        f"{where}.{format_path((name, *below))}: {message}"
        for name, value in parameters.items()
        if looks_like_sweep(value)
        for below, message in marker_problems(value, scalars_only=False)
    ]


def grid_size(methods: list[str], parameter_maps: list[dict[str, Any]]) -> int:
    """How many candidates `expand_grid` makes of these methods and parameter mappings (shared, then per model)."""
    count = len(methods)
    for parameters in parameter_maps:
        for value in parameters.values():
            count *= len(value[SWEEP_KEY]) if is_sweep(value) else 1
    return count


@dataclass(frozen=True)
class Candidate:
    """One point of the grid: the method, shared and per-model parameters, and what was chosen where."""

    index: int
    method: str
    parameters: dict[str, Any]
    model_parameters: tuple[dict[str, Any], ...]
    """Parameters of each input model, in the order of `models:`."""
    choices: dict[str, Any] = field(default_factory=dict)
    """Swept axis -> value picked for this candidate (empty when nothing is swept)."""

    @property
    def label(self) -> str:
        return ", ".join(f"{axis}={value}" for axis, value in self.choices.items()) or self.method


def expand_grid(
    methods: list[str], parameters: dict[str, Any], model_parameters: list[dict[str, Any]], model_labels: list[str]
) -> list[Candidate]:
    """Every combination of the swept values, in a stable order (methods first, then parameters as written)."""
    axes: list[tuple[str, list[Any]]] = []
    if len(methods) > 1:
        axes.append(("method", methods))
    axes += [(f"parameters.{name}", value[SWEEP_KEY]) for name, value in parameters.items() if is_sweep(value)]
    for label, own in zip(model_labels, model_parameters, strict=True):
        axes += [(f"{label}.{name}", value[SWEEP_KEY]) for name, value in own.items() if is_sweep(value)]
    candidates = []
    for index, picked in enumerate(itertools.product(*(values for _, values in axes))):
        choices = {axis: value for (axis, _), value in zip(axes, picked, strict=True)}
        candidates.append(
            Candidate(
                index=index,
                method=choices.get("method", methods[0]),
                parameters=_pick(parameters, "parameters", choices),
                model_parameters=tuple(
                    _pick(own, label, choices) for label, own in zip(model_labels, model_parameters, strict=True)
                ),
                choices=choices,
            )
        )
    return candidates


def _pick(parameters: dict[str, Any], prefix: str, choices: dict[str, Any]) -> dict[str, Any]:
    return {name: choices[f"{prefix}.{name}"] if is_sweep(value) else value for name, value in parameters.items()}
