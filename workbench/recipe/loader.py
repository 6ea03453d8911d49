"""Load a recipe file: safe YAML, schema validation, everything each stage consumes, and the stage graph.

Every problem in a file is collected and reported at once as `file:line: path: message`, where `path` starts at
the stage's name (`sft.data`), not its index. What a stage consumes is read from its config's field markers
(`workbench.api.markers`), the same description the planner hashes, so a recipe that validates has every file,
name and reference that `plan` hashes and `run` opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workbench.api.config import StageConfig
from workbench.api.kinds import Catalog
from workbench.api.markers import DataPath, ModelPath, Named, StageRef, consumed
from workbench.api.resources import Resources
from workbench.api.sweeps import SWEEP_KEY, stage_of
from workbench.errors import Problem, RecipeError, did_you_mean
from workbench.recipe.grid import Point, Sweep, expand, field_problem, first_point, marker_problems, sweep_fields
from workbench.recipe.loaded import LoadedRecipe
from workbench.recipe.problem_paths import format_path, locate, named_path
from workbench.recipe.schema import Recipe
from workbench.recipe.schema_errors import schema_problems
from workbench.recipe.stage_graph import find_cycle, stable_order
from workbench.recipe.stage_inputs import data_path_problem, model_path_problem, name_problems, ref_problem
from workbench.recipe.yaml_errors import yaml_problem
from workbench.recipe.yaml_lines import LineMap, load_yaml_with_lines

__all__ = ["LoadedRecipe", "format_path", "load_recipe"]

BUILTIN_CHAT_TEMPLATES = ("lfm2",)


def load_recipe(
    path: str | Path, catalog: Catalog, root: str | Path | None = None, check_files: bool = True
) -> LoadedRecipe:
    """Parse and validate a recipe; raise RecipeError listing every problem found."""
    path = Path(path)
    root = Path(root or Path.cwd()).resolve()
    display = str(path)
    if not path.is_file():
        raise RecipeError([Problem(display, None, "", "recipe file not found")])
    raw = path.read_bytes()
    try:
        data, lines, duplicates = load_yaml_with_lines(raw.decode("utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError([yaml_problem(display, error)]) from None
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise RecipeError([Problem(display, line, "", "the file is not UTF-8 text (save it as UTF-8)")]) from None
    out = _Checker(display, lines, data, catalog, root, check_files)
    for line, where, message in duplicates:
        out.problems.append(Problem(display, line, named_path(data, where), message))
    if not isinstance(data, dict):
        out.add((), "a recipe must be a mapping with 'name', 'tokenizer' and 'stages'")
        raise RecipeError(out.problems)
    recipe = out.validate(Recipe, data, ())
    out.check_recipe_fields(data)
    out.check_stages(data.get("stages"))
    out.check_resources(recipe.resources if recipe is not None else None)
    if out.problems:
        raise RecipeError(sorted(set(out.problems), key=lambda p: (p.line or 0, p.path, p.message)))
    configs = {name: entry.config for name, entry in out.stages.items()}
    graph = {name: out.stages[name].refs for name in configs}
    order = stable_order(graph)
    return LoadedRecipe(
        recipe=recipe, stages=configs, order=order, path=path, root=root, catalog=catalog, sweeps=out.sweeps
    )


@dataclass
class _Stage:
    """A stage, or one candidate of a swept stage (`name` is then the candidate's, `raw` its values)."""

    index: int
    name: str
    raw: dict
    config_class: type[StageConfig]
    config: StageConfig | None
    refs: list[str] = field(default_factory=list)
    point: Point | None = None

    @property
    def written(self) -> str:
        """The stage's name as the recipe writes it (a candidate's stage)."""
        return self.raw.get("name", self.name)

    def at(self, path: tuple) -> tuple:
        """`path` below the stage as written in the file (a candidate's own values inside its swept fields)."""
        return self.point.written_at(path) if self.point is not None else path


class _Checker:
    """Collects problems while checking one recipe; implements the `RecipeView` stages' `check_recipe` sees."""

    def __init__(self, file: str, lines: LineMap, data: Any, catalog: Catalog, root: Path, check_files: bool):
        self.file, self.lines, self.data, self.catalog = file, lines, data, catalog
        self.root, self.check_files = root, check_files
        self.problems: list[Problem] = []
        self.stages: dict[str, _Stage] = {}
        """Every stage by name, a swept stage as its candidates."""
        self.sweeps: dict[str, Sweep] = {}
        self.written: dict[str, int] = {}
        """Each stage name the recipe writes -> its index in `stages:`."""
        self._current: tuple = ()
        self._point: Point | None = None
        self._names_cache: dict[str, list[str]] = {}
        self._unknown_kind: set[str] = set()
        """Names of stages whose kind is missing or unknown: reported once, not again by every reference."""

    def add(self, path: tuple, message: str, line_path: tuple | None = None) -> None:
        if line_path is None:
            path, line_path = locate(self.data, path, message)
        line = self.lines.line_of(line_path) or 1
        self.problems.append(Problem(self.file, line, named_path(self.data, path), message))

    # -- RecipeView, for StageConfig.check_recipe ----------------------------------------------------------------
    def problem(self, path: tuple, message: str) -> None:
        below = self._point.written_at(tuple(path)) if self._point is not None else tuple(path)
        self.add(self._current + below, message)

    def kind_of(self, stage: str) -> str | None:
        entry = self.stages.get(self.sweeps[stage].candidates[0] if stage in self.sweeps else stage)
        return entry.raw.get("kind") if entry else None

    def candidates(self, stage: str) -> list[str] | None:
        return list(self.sweeps[stage].candidates) if stage in self.sweeps else None

    def trained_vocab_size(self) -> int | None:
        from workbench.recipe.schema import TokenizerTraining

        tokenizer = self.data.get("tokenizer") if isinstance(self.data, dict) else None
        train = tokenizer.get("train") if isinstance(tokenizer, dict) else None
        if not isinstance(train, dict):
            return None
        size = train.get("vocab_size", TokenizerTraining.model_fields["vocab_size"].default)
        return size if isinstance(size, int) else None

    def stages_of_kind(self, kind: str) -> list[str]:
        return [name for name, entry in self.stages.items() if entry.raw.get("kind") == kind]

    def config_of(self, stage: str) -> StageConfig | None:
        entry = self.stages.get(stage)
        return entry.config if entry else None

    def names(self, namespace: str) -> list[str]:
        if namespace not in self._names_cache:
            self._names_cache[namespace] = sorted(self.catalog.namespaces[namespace].names(self.root))
        return self._names_cache[namespace]

    def members(self, namespace: str, name: str) -> list[str] | None:
        space = self.catalog.namespaces[namespace]
        return space.members(name, self.root) if space.members else None

    # -- schema --------------------------------------------------------------------------------------------------
    def validate(self, model: type, data: dict, prefix: tuple, point: Point | None = None, reported: tuple = ()) -> Any:
        """`data` (at `prefix` in the file) as `model`, or None with its problems reported; a candidate's (`point`)
        at the lines of its own values. Problems below a path in `reported` are reported already."""

        def written(path: tuple | None) -> tuple | None:
            if point is None or path is None:
                return path
            return prefix + point.written_at(path[len(prefix) :])

        try:
            # by alias only: `from_` is the Python name of `from:`, not a second spelling recipes may use
            return model.model_validate(data, by_alias=True, by_name=False)
        except ValidationError as error:
            for problem in schema_problems(error, model, data, prefix, self.catalog):
                if any(problem.path[len(prefix) : len(prefix) + len(done)] == done for done in reported):
                    continue
                self.add(written(problem.path), problem.message, line_path=written(problem.line_path))
            return None

    # -- recipe-level fields -------------------------------------------------------------------------------------
    def check_recipe_fields(self, data: dict) -> None:
        template = data.get("chat_template")
        if isinstance(template, str) and template not in BUILTIN_CHAT_TEMPLATES:
            if not template.endswith(".jinja"):
                builtins = ", ".join(BUILTIN_CHAT_TEMPLATES)
                self.add(
                    ("chat_template",), f"unknown chat template '{template}': a builtin ({builtins}) or a .jinja file"
                )
            elif self.check_files and not (self.root / template).is_file():
                self.add(("chat_template",), f"file not found: '{template}' (relative to {self.root})")
        tokenizer = data.get("tokenizer")
        if not isinstance(tokenizer, dict):
            return
        train = tokenizer.get("train")
        if isinstance(train, dict) and isinstance(train.get("files"), list) and self.check_files:
            for index, file in enumerate(train["files"]):
                where = ("tokenizer", "train", "files", index)
                if isinstance(file, str) and (self.root / file).is_dir():
                    self.add(where, f"'{file}' is a folder; list the files in it that train the tokenizer")
                elif isinstance(file, str) and not (self.root / file).is_file():
                    self.add(where, f"file not found: '{file}' (relative to {self.root})")
        if isinstance(tokenizer.get("path"), str):
            message = model_path_problem(tokenizer["path"], "tokenizer folder", self.root, self.check_files)
            if message is not None:
                self.add(("tokenizer", "path"), message)

    # -- stages --------------------------------------------------------------------------------------------------
    def check_stages(self, raw: Any) -> None:
        if not isinstance(raw, list):
            return
        for index, entry in enumerate(raw):
            self._add_stage(index, entry)
        kinds = {name: stage.raw.get("kind") for name, stage in self.stages.items()}
        kinds |= {name: self.kind_of(name) for name in self.sweeps}
        for stage in self.stages.values():
            self._check_consumed(stage, kinds)
        self._check_cycles()
        for stage in self.stages.values():
            if stage.config is not None:
                self._current, self._point = ("stages", stage.index), stage.point
                stage.config.check_recipe(self)
        self._current, self._point = (), None

    def _add_stage(self, index: int, entry: Any) -> None:
        """Check a stage's name and kind, validate it as its kind, and keep it when it has a name."""
        kinds = self.catalog.kinds
        where = ("stages", index)
        if not isinstance(entry, dict):
            self.add(where, "a stage must be a mapping with 'name' and 'kind'")
            return
        kind_name = entry.get("kind")
        known_kind = isinstance(kind_name, str) and kind_name in kinds
        if isinstance(entry.get("name"), str) and not known_kind:
            self._unknown_kind.add(entry["name"])
        if kind_name is None:
            self.add(where, f"missing required field 'kind' (one of: {', '.join(sorted(kinds))})")
        elif not isinstance(kind_name, str):
            message = f"'kind' takes one stage kind: {', '.join(sorted(kinds))} (got {kind_name!r})"
            if isinstance(kind_name, dict) and SWEEP_KEY in kind_name:
                message = "'kind' cannot be swept: write one stage per kind"
            self.add(where + ("kind",), message, line_path=where + ("kind",))
            return
        elif not known_kind:
            hint = did_you_mean(str(kind_name), list(kinds))
            self.add(
                where + ("kind",), f"unknown stage kind '{kind_name}'{hint}; known kinds: {', '.join(sorted(kinds))}"
            )
        name = entry.get("name")
        if isinstance(name, str) and name in self.written:
            first = self.lines.line_of(("stages", self.written[name], "name"))
            self.add(where + ("name",), f"duplicate stage name '{name}' (first defined at line {first})")
            return
        # a stage whose kind is missing or unknown is still checked for a duplicate name, but not validated
        if not known_kind:
            return
        if isinstance(name, str):
            self.written[name] = index
        config_class = kinds[kind_name].config
        fields = sweep_fields(entry)
        if not kinds[kind_name].sweepable:
            fields = [f for f in fields if len(f) == 1]  # deeper ones are the kind's own (a merge's parameters)
        if fields:
            self._add_swept(index, name, entry, kind_name, fields)
            return
        config = self.validate(config_class, entry, where)
        if isinstance(name, str):
            self.stages[name] = _Stage(index, name, entry, config_class, config)

    def _add_swept(self, index: int, name: Any, entry: dict, kind_name: str, fields: list[tuple]) -> None:
        """A stage with `{sweep: [...]}` fields: one candidate per grid point, each validated as the stage written
        with its values. A sweep that cannot be expanded is reported, and the stage is checked with each sweep's
        first value, so its other problems are reported too."""
        kind, where = self.catalog.kinds[kind_name], ("stages", index)
        probe = first_point(entry, fields)
        problems = marker_problems(entry, fields)
        if not kind.sweepable:
            sweepable = ", ".join(self.catalog.sweepable_kinds())
            problems += [(f, f"{kind_name} stages take no {{sweep: [...]}} here (kinds whose fields sweep: {sweepable})")
                         for f in fields]  # fmt: skip
        else:
            problems += [(f, message) for f in fields if (message := field_problem(f, kind.config, probe))]
        for path, message in problems:
            self.add(where + path, message)
        if problems or not isinstance(name, str):
            reported = tuple(f for f in fields if any(path[: len(f)] == f for path, _ in problems))
            config = self.validate(kind.config, probe, where, reported=reported)
            if isinstance(name, str):
                self.stages[name] = _Stage(index, name, probe, kind.config, config if not problems else None)
            return
        points = expand(name, entry, fields)
        same_stage: dict[str, str] = {}  # a candidate's validated config (without its name) -> the first one's name
        for point in points:
            config = self.validate(kind.config, point.raw, where, point)
            if config is not None:
                # `[1, 1.0]` or `[true, 1]` differ as written and validate to one value: one stage, trained twice
                key = config.model_dump_json(exclude={"name"})
                if key in same_stage:
                    self.add(
                        where + point.written_at(fields[0]),
                        f"{point.name} is the same stage as {same_stage[key]}: its values validate to the same config",
                    )
                    continue
                same_stage[key] = point.name
            self.stages[point.name] = _Stage(index, point.name, point.raw, kind.config, config, point=point)
        self.sweeps[name] = Sweep(
            tuple(".".join(str(part) for part in f) for f in fields),
            tuple(point.name for point in points if point.name in self.stages),
        )

    def _check_consumed(self, stage: _Stage, kinds: dict[str, Any]) -> None:
        """Every stage reference, path, model and name the stage's markers point at, read from the raw YAML so a
        stage with other errors is still checked (`kinds`: each kept stage's kind, in recipe order)."""
        for item in consumed(stage.config_class, stage.raw):
            value, marker = item.value, item.marker
            messages: list[str | None] = []
            if isinstance(marker, StageRef):
                problem = ref_problem(
                    value, stage.written, kinds, self._unknown_kind, marker, self.catalog, self.sweeps
                )
                messages = [problem]
                if problem is None and marker.candidates:
                    stage.refs += self.sweeps[value].candidates
                elif stage_of(value) != stage.written and value in self.stages:
                    stage.refs.append(value)
            elif isinstance(marker, DataPath):
                messages = [data_path_problem(value, marker, self.catalog, self.root, self.check_files)]
            elif isinstance(marker, ModelPath):
                messages = [model_path_problem(value, "model folder", self.root, self.check_files, marker.hub)]
            elif isinstance(marker, Named):
                messages = name_problems(value, marker, self.catalog, self.root, self.names)
            for message in messages:
                if message is not None:
                    self.add(("stages", stage.index) + stage.at(item.path), message)

    def check_resources(self, default: Resources | None) -> None:
        """Resources a stage can use: more than one process only for kinds that run distributed, a strategy whose
        package is installed, an accelerate config that exists (the recipe's default is checked once, where it
        is written, and applies to the kinds that run distributed)."""
        distributed = sorted(name for name, kind in self.catalog.kinds.items() if kind.distributed)
        default = default or Resources()  # an invalid default is reported already; check the stages anyway
        if default.distributed and (problem := default.missing_package()):
            self.add(("resources", "strategy"), problem)
        if default.accelerate_config and (problem := data_path_problem(
            default.accelerate_config, DataPath(kind="file"), self.catalog, self.root, self.check_files
        )):  # fmt: skip
            self.add(("resources", "accelerate_config"), problem)
        for stage in self.stages.values():
            own = stage.config.resources if stage.config is not None else None
            if own is None:
                continue
            kind = self.catalog.kinds[stage.config.kind]
            where = ("stages", stage.index, "resources")
            if own.distributed and not kind.distributed:
                self.add(
                    where,
                    f"{kind.name} stages run in one process; more than one process ({own.world_size} here) is for "
                    f"the kinds that run distributed: {', '.join(distributed)}",
                )
            elif own.distributed and (problem := own.missing_package()):
                self.add(where + ("strategy",), problem)
            if own.strategy == "fsdp" and own.distributed and getattr(stage.config, "lora", None) is not None:
                self.add(where + ("strategy",), "LoRA trains on ddp or deepspeed, not fsdp (use strategy: ddp)")

    def _check_cycles(self) -> None:
        cycle = find_cycle({name: stage.refs for name, stage in self.stages.items()})
        if cycle:
            self.add(("stages", self.stages[cycle[0]].index, "name"), "dependency cycle: " + " -> ".join(cycle))
