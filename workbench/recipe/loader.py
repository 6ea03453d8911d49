"""Load a recipe file: safe YAML, schema validation, stage references and the stage graph.

Every problem in a file is collected and reported at once as `file:line: path: message`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workbench.errors import Problem, RecipeError
from workbench.recipe.graph import find_cycle, topological_order
from workbench.recipe.schema import Recipe, StageConfig
from workbench.recipe.yaml_lines import LineMap, load_yaml_with_lines
from workbench.stages.registry import stage_kinds


@dataclass
class LoadedRecipe:
    """A validated recipe with its stages parsed and ordered."""

    recipe: Recipe
    stages: dict[str, StageConfig]
    order: list[str]
    path: Path
    root: Path
    """Project root: relative paths in the recipe (data, work_dir) resolve against it."""

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def dependencies(self, name: str) -> list[str]:
        return list(dict.fromkeys(ref for _, ref in self.stages[name].stage_refs()))

    def descendants(self, names: set[str]) -> set[str]:
        found = set(names)
        for stage in self.order:
            if any(dep in found for dep in self.dependencies(stage)):
                found.add(stage)
        return found


class _Collector:
    def __init__(self, file: str, lines: LineMap):
        self.file, self.lines, self.problems = file, lines, []

    def add(self, path: tuple, message: str, line_path: tuple | None = None) -> None:
        line = self.lines.line_of(line_path if line_path is not None else path)
        self.problems.append(Problem(self.file, line, format_path(path), message))


def format_path(path: tuple) -> str:
    """('stages', 2, 'from') -> 'stages[2].from'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_recipe(path: str | Path, root: str | Path | None = None, check_files: bool = True) -> LoadedRecipe:
    """Parse and validate a recipe; raise RecipeError listing every problem found."""
    path = Path(path)
    display = str(path)
    if not path.is_file():
        raise RecipeError([Problem(display, None, "", "recipe file not found")])
    try:
        data, lines, duplicates = load_yaml_with_lines(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError([Problem(display, mark.line + 1 if mark else None, "", f"invalid YAML: {reason}")]) from None
    except UnicodeDecodeError:
        raise RecipeError([Problem(display, None, "", "file is not UTF-8 text")]) from None
    out = _Collector(display, lines)
    for line, where, message in duplicates:
        out.problems.append(Problem(display, line, format_path(where), message))
    if not isinstance(data, dict):
        out.add((), "a recipe must be a mapping with 'name', 'tokenizer' and 'stages'")
        raise RecipeError(out.problems)

    recipe = _validate(Recipe, data, (), out)
    stages = _validate_stages(data.get("stages"), out)
    _check_references(stages, out)
    if check_files:
        _check_files(recipe, stages, Path(root or Path.cwd()), out)
    if out.problems:
        raise RecipeError(sorted(out.problems, key=lambda p: (p.line or 0, p.path)))
    configs = {name: stage.config for name, stage in stages.items()}
    order = topological_order({name: [r for _, r in cfg.stage_refs()] for name, cfg in configs.items()})
    return LoadedRecipe(
        recipe=recipe,
        stages=configs,
        order=order,
        path=path,
        root=Path(root or Path.cwd()).resolve(),
    )


def _validate(model: type, data: dict, prefix: tuple, out: _Collector) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            _report_pydantic(model, item, data, prefix, out)
        return None


def _report_pydantic(model: type, item: dict, data: dict, prefix: tuple, out: _Collector) -> None:
    loc = tuple(item["loc"])
    kind = item["type"]
    if kind == "extra_forbidden":
        parent, key = prefix + loc[:-1], loc[-1]
        fields = _field_names(model, loc[:-1])
        out.add(parent, f"unknown field '{key}'{did_you_mean(str(key), fields)}", line_path=prefix + loc)
    elif kind == "missing":
        out.add(prefix + loc[:-1], f"missing required field '{loc[-1]}'")
    else:
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if kind not in ("value_error", "assertion_error") and not isinstance(item.get("input"), (dict, list)):
            message += f" (got {item.get('input')!r})"
        out.add(prefix + loc, message)


def _field_names(model: type, loc: tuple) -> list[str]:
    """Field names (aliases where set) of the sub-model at `loc`, for did-you-mean hints."""
    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if current is None:
            return []
    return [f.alias or name for name, f in current.model_fields.items()]


@dataclass
class _StageEntry:
    index: int
    raw: dict
    kind: type[StageConfig]
    config: StageConfig | None

    def values(self, fields: tuple[str, ...]) -> list[tuple[tuple, str]]:
        """(path below the stage, value) of the string values in `fields`, read from the raw YAML: a string,
        a list of strings, or mappings that name a stage with `from:` (`models: [{from: sft, ...}]`)."""
        found = []
        for field in fields:
            head, _, below = field.partition(".")
            alias = self.kind.model_fields[head].alias or head
            value, prefix = self.raw.get(alias), (alias,)
            if below:  # a field of a nested mapping, e.g. "select.compare"
                value, prefix = (value.get(below) if isinstance(value, dict) else None), (alias, below)
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for index, item in items:
                path = prefix if index is None else prefix + (index,)
                if isinstance(item, str):
                    found.append((path, item))
                elif isinstance(item, dict) and isinstance(item.get("from"), str):
                    found.append((path + ("from",), item["from"]))
        return found


def _validate_stages(raw: Any, out: _Collector) -> dict[str, _StageEntry]:
    """Validate each stage with its kind's schema. Names and references are read from the raw
    YAML so they are checked even for a stage whose other fields are wrong."""
    kinds = stage_kinds()
    stages: dict[str, _StageEntry] = {}
    if not isinstance(raw, list):
        return stages
    for index, entry in enumerate(raw):
        where = ("stages", index)
        if not isinstance(entry, dict):
            out.add(where, "a stage must be a mapping with 'name' and 'kind'")
            continue
        kind_name = entry.get("kind")
        if kind_name is None:
            out.add(where, f"missing required field 'kind' (one of: {', '.join(sorted(kinds))})")
        elif kind_name not in kinds:
            hint = did_you_mean(str(kind_name), list(kinds))
            out.add(
                where + ("kind",), f"unknown stage kind '{kind_name}'{hint}; known kinds: {', '.join(sorted(kinds))}"
            )
        name = entry.get("name")
        if isinstance(name, str) and name in stages:
            first = out.lines.line_of(("stages", stages[name].index, "name"))
            out.add(where + ("name",), f"duplicate stage name '{name}' (first defined at line {first})")
            continue
        if kind_name not in kinds:
            continue
        config = _validate(kinds[kind_name].config, entry, where, out)
        if isinstance(name, str):
            stages[name] = _StageEntry(index, entry, kinds[kind_name].config, config)
    return stages


def _check_references(stages: dict[str, _StageEntry], out: _Collector) -> None:
    names = list(stages)
    graph: dict[str, list[str]] = {}
    for name, stage in stages.items():
        graph[name] = []
        for below, ref in stage.values(stage.kind.stage_ref_fields):
            path = ("stages", stage.index) + below
            if ref == name:
                out.add(path, f"stage '{name}' cannot use its own output")
            elif ref not in stages:
                out.add(path, f"unknown stage '{ref}'{did_you_mean(ref, names)}")
            else:
                graph[name].append(ref)
    cycle = find_cycle(graph)
    if cycle:
        out.add(("stages", stages[cycle[0]].index, "name"), "dependency cycle: " + " -> ".join(cycle + [cycle[0]]))


def _check_files(recipe: Recipe | None, stages: dict[str, _StageEntry], root: Path, out: _Collector) -> None:
    def check(path: tuple, relative: str) -> None:
        if "://" not in relative and not (root / relative).exists():
            out.add(path, f"file not found: '{relative}' (relative to {root})")

    if recipe is not None and recipe.tokenizer.train is not None:
        for i, file in enumerate(recipe.tokenizer.train.files):
            check(("tokenizer", "train", "files", i), file)
    for stage in stages.values():
        for below, file in stage.values(stage.kind.data_file_fields):
            if below[-1] != "from":
                check(("stages", stage.index) + below, file)
