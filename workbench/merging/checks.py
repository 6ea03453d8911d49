"""Merge checks that need the rest of the recipe or the project, run by `validate` before anything trains: the
template's method against the stage's parameters, the selection's metric and constraints, and whether inputs whose
architecture is known before running (from architecture files) can be merged at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from workbench.api.config import RecipeView
from workbench.errors import StageError


def template_fit_problems(config: Any, root: Path) -> list[tuple[tuple, str]]:
    """The stage's parameters checked against its template's method (the stage's own `method` is checked by its
    schema); a broken template file is reported by the template namespace."""
    from workbench.merging.methods import base_problems, method_problems, missing_parameter_problems
    from workbench.merging.spec import load_template

    if config.template is None:
        return []
    try:
        template = load_template(config.template, root)
    except StageError:
        return []
    method = config.method if config.method is not None else template.get("merge_method")
    if method is None:
        return [(("template",), f"template '{config.template}' sets no merge_method: add `method` to the stage")]
    methods = method if isinstance(method, list) else [method]
    inputs = config.model_inputs()
    shared = {**template.get("parameters", {}), **config.parameters}
    problems = method_problems(methods, shared, {f"model '{e.label}'": e.parameters for e in inputs})
    problems = problems or base_problems(methods, config.base is not None)
    if not problems:
        base = config.base_input()
        own = {entry.label: entry.parameters for entry in inputs}
        problems = missing_parameter_problems(methods, shared, own, base.label if base else None)
    return [(("parameters",) if "parameter" in p else ("template",), p) for p in problems]


def selection_problems(select: Any, recipe: RecipeView, where: tuple = ("select",)) -> None:
    """The selection metric (`select`, or a candidates' `by`, at `where`) is one its suite reports, and each
    constraint can be checked."""
    from workbench.evaluation.gates import gate_problems, metric_problem

    if select.suite is not None and select.metric != "eval_loss":
        problem = metric_problem(select.metric, select.suite, recipe)
        if problem:
            recipe.problem((*where, "metric"), problem)
    suites = [select.suite] if select.suite else []
    suite_field = ".".join((*where, "suite"))
    gate_problems(select.constraints, suites, select.compare, recipe, (*where, "constraints"), suite_field)


def architecture_file(stage: str, recipe: RecipeView) -> str | None:
    """The architecture YAML a stage's model is built from, following `from:` back to a stage that names one."""
    seen: set[str] = set()
    while stage not in seen:
        seen.add(stage)
        config = recipe.config_of(stage)
        source = config.architecture_source() if config is not None else None
        if source is None:
            return None
        kind, value = source
        if kind == "file":
            return value
        stage = value
    return None


def architecture_problems(stages: list[str], recipe: RecipeView) -> list[str]:
    """Inputs built from architecture files whose shapes differ cannot be merged: known before any training."""
    shapes: dict[str, tuple[str, dict]] = {}
    for stage in dict.fromkeys(stages):
        file = architecture_file(stage, recipe)
        path = recipe.root / file if file else None
        if path is None or not path.is_file():
            continue
        try:
            shape = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(shape, dict):
            shapes[stage] = (file, shape)
    problems = []
    items = list(shapes.items())
    for (first, (file_a, a)), (other, (file_b, b)) in zip(items, items[1:], strict=False):
        differing = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
        if differing:
            detail = ", ".join(f"{key} {a.get(key)} vs {b.get(key)}" for key in differing[:4])
            problems.append(
                f"cannot merge '{first}' ({file_a}) with '{other}' ({file_b}): different architectures ({detail})"
            )
    return problems
