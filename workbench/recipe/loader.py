"""Load a recipe file: safe YAML, schema validation, everything each stage consumes, and the stage graph.

Every problem in a file is collected and reported at once as `file:line: path: message`, where `path` starts at
the stage's name (`sft.data`), not its index. What a stage consumes is read from its config's field markers
(`workbench.api.markers`), the same description the planner hashes, so a recipe that validates has every file,
name and reference that `plan` hashes and `run` opens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from workbench.api.config import NAME_PATTERN, StageConfig
from workbench.api.context import Project
from workbench.api.kinds import Catalog
from workbench.api.markers import Consumed, DataPath, ModelPath, Named, StageRef, consumed
from workbench.errors import Problem, RecipeError, did_you_mean
from workbench.recipe.schema import Recipe
from workbench.recipe.yaml_lines import LineMap, load_yaml_with_lines

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
BUILTIN_CHAT_TEMPLATES = ("lfm2",)


@dataclass
class LoadedRecipe:
    """A validated recipe with its stages parsed and ordered."""

    recipe: Recipe
    stages: dict[str, StageConfig]
    order: list[str]
    path: Path
    root: Path
    """Project root: relative paths in the recipe (data, work_dir) resolve against it."""
    catalog: Catalog = field(repr=False, default_factory=Catalog)

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def consumed(self, name: str) -> list[Consumed]:
        config = self.stages[name]
        return consumed(type(config), config.model_dump(mode="json", by_alias=True))

    def dependencies(self, name: str, hashed_only: bool = False) -> list[str]:
        """The stages `name` reads (all of them, or only those whose output changes its own)."""
        refs = [c.value for c in self.consumed(name) if isinstance(c.marker, StageRef)]
        if hashed_only:
            refs = [c.value for c in self.consumed(name) if isinstance(c.marker, StageRef) and c.marker.hashed]
        return list(dict.fromkeys(refs))

    def descendants(self, names: set[str]) -> set[str]:
        found = set(names)
        for stage in self.order:
            if any(dep in found for dep in self.dependencies(stage)):
                found.add(stage)
        return found

    @property
    def work_root(self) -> Path:
        return self.resolve(self.recipe.work_dir)

    @property
    def project(self) -> Project:
        return Project(
            root=self.root,
            store_root=self.work_root / self.recipe.name,
            work_root=self.work_root,
            recipe_name=self.recipe.name,
            seed=self.recipe.seed,
            trust_remote_code=self.recipe.trust_remote_code,
        )


def format_path(path: tuple) -> str:
    """('stages', 2, 'from') -> 'stages[2].from'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


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
        raise RecipeError([_yaml_problem(display, error)]) from None
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise RecipeError([Problem(display, line, "", "the file is not UTF-8 text (save it as UTF-8)")]) from None
    out = _Checker(display, lines, data, catalog, root, check_files)
    for line, where, message in duplicates:
        out.problems.append(Problem(display, line, out.format(where), message))
    if not isinstance(data, dict):
        out.add((), "a recipe must be a mapping with 'name', 'tokenizer' and 'stages'")
        raise RecipeError(out.problems)
    recipe = out.validate(Recipe, data, ())
    out.check_recipe_fields(data)
    out.check_stages(data.get("stages"))
    if out.problems:
        raise RecipeError(sorted(set(out.problems), key=lambda p: (p.line or 0, p.path, p.message)))
    configs = {name: entry.config for name, entry in out.stages.items()}
    graph = {name: out.stages[name].refs for name in configs}
    order = _stable_order(graph)
    return LoadedRecipe(recipe=recipe, stages=configs, order=order, path=path, root=root, catalog=catalog)


def _yaml_problem(display: str, error: yaml.YAMLError) -> Problem:
    """PyYAML's reason in words that say what to fix, at the line to fix (where a bracket or quote was opened,
    not the end of the file where the parser noticed)."""
    mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    reason = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None) or ""
    if "mapping values are not allowed" in reason:
        reason = (
            "unexpected ':' (is this line indented deeper than the key above it? a value containing ': ' must be "
            "quoted)"
        )
    elif reason.startswith(("expected <block end>", "expected key")) or "block mapping" in reason:
        reason = (
            "this line is not lined up with the lines above it (keys of one mapping start in the same column: a "
            "stage's fields under its 'name', list items under their key)"
        )
    elif "'\\t'" in reason:  # PyYAML writes the tab escaped
        reason = "a tab character: YAML indents with spaces only"
    elif "could not find expected ':'" in reason and context_mark is not None:
        reason, mark = "a line without 'key: value' inside a mapping (a missing ':'?)", context_mark
    elif context.startswith("while parsing a flow") and context_mark is not None:
        bracket = "[" if "sequence" in context else "{"
        reason, mark = f"the '{bracket}' opened on this line is not closed ({reason})", context_mark
    elif context.startswith("while scanning a quoted scalar") and context_mark is not None:
        reason, mark = "the quote opened on this line is not closed", context_mark
    return Problem(display, mark.line + 1 if mark else 1, "", f"invalid YAML: {reason}")


def _stable_order(graph: dict[str, list[str]]) -> list[str]:
    """Inputs before the stages that use them; stages that become ready together keep the recipe's order."""
    position = {name: index for index, name in enumerate(graph)}
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order += ready
        sorter.done(*ready)
    return order


@dataclass
class _Stage:
    index: int
    name: str
    raw: dict
    config_class: type[StageConfig]
    config: StageConfig | None
    refs: list[str] = field(default_factory=list)


class _Checker:
    """Collects problems while checking one recipe; implements the `RecipeView` stages' `check_recipe` sees."""

    def __init__(self, file: str, lines: LineMap, data: Any, catalog: Catalog, root: Path, check_files: bool):
        self.file, self.lines, self.data, self.catalog = file, lines, data, catalog
        self.root, self.check_files = root, check_files
        self.problems: list[Problem] = []
        self.stages: dict[str, _Stage] = {}
        self._current: tuple = ()
        self._names_cache: dict[str, list[str]] = {}
        self._unknown_kind: set[str] = set()
        """Names of stages whose kind is missing or unknown: reported once, not again by every reference."""

    # -- reporting ---------------------------------------------------------------------------------------------
    def add(self, path: tuple, message: str, line_path: tuple | None = None) -> None:
        if line_path is None:
            path, line_path = _locate(self.data, path, message)
        line = self.lines.line_of(line_path) or 1
        self.problems.append(Problem(self.file, line, self.format(path), message))

    def format(self, path: tuple) -> str:
        """`stages[1].from` as `sft.from` when stage 1 has a valid name no earlier stage has."""
        stages = self.data.get("stages") if isinstance(self.data, dict) else None
        if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], int) and isinstance(stages, list):
            index = path[1]
            entry = stages[index] if index < len(stages) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            earlier = [e.get("name") for e in stages[:index] if isinstance(e, dict)]
            if isinstance(name, str) and re.match(NAME_PATTERN, name) and name not in earlier:
                return format_path((name, *path[2:]))
        return format_path(path)

    # -- RecipeView, for StageConfig.check_recipe ----------------------------------------------------------------
    def problem(self, path: tuple, message: str) -> None:
        self.add(self._current + tuple(path), message)

    def kind_of(self, stage: str) -> str | None:
        entry = self.stages.get(stage)
        return entry.raw.get("kind") if entry else None

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
    def validate(self, model: type, data: dict, prefix: tuple) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as error:
            found = _collapse_unions(error.errors(), data)
            # a misspelt required field is one problem (the unknown field's did-you-mean), not two
            misspelt = {
                (loc[:-1], name)
                for loc, item in found
                if item["type"] == "extra_forbidden"
                for name in _field_names(model, loc[:-1])
                if did_you_mean(str(loc[-1]), _field_names(model, loc[:-1])) == f" (did you mean '{name}'?)"
            }
            for loc, item in found:
                if not (item["type"] == "missing" and (loc[:-1], loc[-1]) in misspelt):
                    self._report_pydantic(model, loc, item, prefix)
            return None

    def _report_pydantic(self, model: type, loc: tuple, item: dict, prefix: tuple) -> None:
        kind = item["type"]
        if kind == "extra_forbidden":
            parent, key = prefix + loc[:-1], loc[-1]
            message = f"unknown field '{key}'{did_you_mean(str(key), _field_names(model, loc[:-1]))}"
            message += self._elsewhere(model, loc, str(key))
            self.add(parent, message, line_path=prefix + loc)
        elif kind == "missing":
            self.add(prefix + loc[:-1], f"missing required field '{loc[-1]}'", line_path=prefix + loc[:-1])
        else:
            message = _plain_message(item)
            value = item.get("input")
            if kind not in ("value_error", "assertion_error") and not isinstance(value, (dict, list)):
                message += f" (got {value!r})"
                if kind in ("literal_error", "enum") and isinstance(value, str):
                    message += did_you_mean(value, re.findall(r"'([^']*)'", str(item.get("ctx", {}).get("expected"))))
            self.add(prefix + loc, message)

    def _elsewhere(self, model: type, loc: tuple, key: str) -> str:
        """Where a field this stage kind (or the recipe's top level) rejects does belong: other stage kinds, a
        sub-section of this stage (`loss`, `lora`), or the stage itself when it sits in a sub-section."""
        if len(loc) != 1:
            top = [f.alias or n for n, f in model.model_fields.items()]
            if issubclass(model, StageConfig) and key in top and isinstance(loc[-2], str):
                return f"; it is a field of the stage itself, not of '{loc[-2]}': indent it less"
            return ""
        takers = self.catalog.kinds_with_field(key)
        if model is Recipe and takers:
            return f"; stage kinds {', '.join(takers)} take it: is it indented under a stage?"
        if not issubclass(model, StageConfig):
            return ""
        sections = [
            section
            for section, info in model.model_fields.items()
            if any(key in _keys(sub) for sub in _models_in(info.annotation))
        ]
        hint = f"; '{sections[0]}' takes it: indent it under '{sections[0]}:'" if sections else ""
        return hint + (f"; kinds that take it: {', '.join(takers)}" if takers else "")

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
            self._check_model_path(("tokenizer", "path"), tokenizer["path"], "tokenizer folder")

    # -- stages --------------------------------------------------------------------------------------------------
    def check_stages(self, raw: Any) -> None:
        if not isinstance(raw, list):
            return
        kinds = self.catalog.kinds
        for index, entry in enumerate(raw):
            where = ("stages", index)
            if not isinstance(entry, dict):
                self.add(where, "a stage must be a mapping with 'name' and 'kind'")
                continue
            kind_name = entry.get("kind")
            if isinstance(entry.get("name"), str) and (kind_name is None or not isinstance(kind_name, str)
                                                       or kind_name not in kinds):  # fmt: skip
                self._unknown_kind.add(entry["name"])
            if kind_name is None:
                self.add(where, f"missing required field 'kind' (one of: {', '.join(sorted(kinds))})")
            elif not isinstance(kind_name, str):
                self.add(
                    where + ("kind",),
                    f"'kind' takes one stage kind: {', '.join(sorted(kinds))} (got {kind_name!r})",
                    line_path=where + ("kind",),
                )
                continue
            elif kind_name not in kinds:
                hint = did_you_mean(str(kind_name), list(kinds))
                self.add(
                    where + ("kind",),
                    f"unknown stage kind '{kind_name}'{hint}; known kinds: {', '.join(sorted(kinds))}",
                )
            name = entry.get("name")
            if isinstance(name, str) and name in self.stages:
                first = self.lines.line_of(("stages", self.stages[name].index, "name"))
                self.add(where + ("name",), f"duplicate stage name '{name}' (first defined at line {first})")
                continue
            if kind_name not in kinds:
                continue
            config_class = kinds[kind_name].config
            config = self.validate(config_class, entry, where)
            if isinstance(name, str):
                self.stages[name] = _Stage(index, name, entry, config_class, config)
        for stage in self.stages.values():
            self._check_consumed(stage)
        self._check_cycles()
        for stage in self.stages.values():
            if stage.config is not None:
                self._current = ("stages", stage.index)
                stage.config.check_recipe(self)
        self._current = ()

    def _check_consumed(self, stage: _Stage) -> None:
        """Every stage reference, path, model and name the stage's markers point at, read from the raw YAML so a
        stage with other errors is still checked."""
        for item in consumed(stage.config_class, stage.raw):
            path = ("stages", stage.index) + item.path
            marker = item.marker
            if isinstance(marker, StageRef):
                self._check_ref(stage, path, item.value, marker)
            elif isinstance(marker, DataPath):
                self._check_data_path(path, item.value, marker)
            elif isinstance(marker, ModelPath):
                self._check_model_path(path, item.value, "model folder")
            elif isinstance(marker, Named):
                self._check_name(path, item.value, marker)

    def _check_ref(self, stage: _Stage, path: tuple, ref: str, marker: StageRef) -> None:
        if ref == stage.name:
            self.add(path, f"stage '{stage.name}' cannot use its own output")
        elif ref not in self.stages:
            if ref not in self._unknown_kind:
                self.add(path, f"unknown stage '{ref}'{did_you_mean(ref, [n for n in self.stages if n != stage.name])}")
        else:
            kind = self.stages[ref].raw.get("kind")
            model_kinds = sorted(n for n, k in self.catalog.kinds.items() if k.makes_model)
            if not marker.kinds and kind in self.catalog.kinds and not self.catalog.kinds[kind].makes_model:
                candidates = [n for n, s in self.stages.items() if s.raw.get("kind") in model_kinds and n != stage.name]
                hint = did_you_mean(ref, candidates)
                self.add(path, f"'{ref}' is {_a(kind)} {kind} stage, which makes no model; this field takes a "
                               f"stage with a model ({', '.join(model_kinds)}){hint}")  # fmt: skip
            elif marker.kinds and kind not in marker.kinds:
                wanted = " or ".join(marker.kinds)
                candidates = [
                    n for n, s in self.stages.items() if s.raw.get("kind") in marker.kinds and n != stage.name
                ]
                hint = did_you_mean(ref, candidates) or (
                    f" ({wanted} stages: {', '.join(candidates)})" if candidates else ""
                )
                self.add(
                    path, f"'{ref}' is {_a(kind)} {kind} stage; this field takes {_a(wanted)} {wanted} stage{hint}"
                )
            stage.refs.append(ref)

    def _check_data_path(self, path: tuple, value: str, marker: DataPath) -> None:
        if "://" in value:
            scheme = value.split("://", 1)[0]
            if scheme not in marker.schemes or scheme not in self.catalog.schemes:
                allowed = ", ".join(f"{s}://" for s in marker.schemes) or "none"
                self.add(
                    path, f"'{value}': this field takes a file path, not a '{scheme}://' URI (URIs allowed: {allowed})"
                )
                return
            problem = self.catalog.schemes[scheme].check(value)
            if problem:
                self.add(path, problem)
            return
        if not self.check_files:
            return
        local = self.root / value
        if not local.exists():
            self.add(
                path,
                f"{'folder' if marker.kind == 'folder' else 'file'} not found: '{value}' (relative to {self.root})",
            )
        elif marker.kind == "file" and not local.is_file():
            self.add(path, f"'{value}' is a folder; a file is expected here")
        elif marker.kind == "folder" and not local.is_dir():
            self.add(path, f"'{value}' is a file; a folder is expected here")

    def _check_model_path(self, path: tuple, value: str, what: str) -> None:
        """A folder that exists, or a hub id (`org/name`) whose first part is not a folder of the project."""
        if not self.check_files or (self.root / value).exists():
            return
        first = Path(value).parts[0] if Path(value).parts else value
        looks_local = value.startswith((".", "/", "~")) or not HUB_ID.match(value) or (self.root / first).is_dir()
        if looks_local:
            self.add(path, f"{what} not found: '{value}' (relative to {self.root}; a hub id is written org/name)")

    def _check_name(self, path: tuple, value: str, marker: Named) -> None:
        space = self.catalog.namespaces.get(marker.namespace)
        if space is None:
            self.add(path, f"no namespace '{marker.namespace}' is registered (a stage kind's bug)")
            return
        known = self.names(marker.namespace)
        found = value in known or (space.contains is not None and space.contains(value, self.root))
        if not found:
            stem = value.rsplit(".", 1)[0] if "." in value else None
            if stem and stem in known:
                self.add(path, f"write the {space.name} name without its extension: '{stem}'")
            else:
                listed = ", ".join(known) if len(known) <= 12 else ", ".join(known[:12]) + ", ..."
                self.add(path, f"unknown {space.name} '{value}'{did_you_mean(value, known)}; known: {listed or 'none'}")
            return
        if space.check is not None:
            for message in space.check(value, self.root):
                self.add(path, message)

    def _check_cycles(self) -> None:
        graph = {name: stage.refs for name, stage in self.stages.items()}
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as error:
            cycle = list(reversed(error.args[1]))
            self.add(("stages", self.stages[cycle[0]].index, "name"), "dependency cycle: " + " -> ".join(cycle))


def _field_names(model: type, loc: tuple) -> list[str]:
    """Field names (aliases where set) of the sub-model at `loc`, for did-you-mean hints."""
    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        field_info = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field_info, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if current is None:
            return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _models_in(annotation: Any) -> list[type]:
    """The pydantic models an annotation holds (through Optional, unions, lists, dicts and Annotated)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _keys(model: type) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


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
        if deeper:
            plain += list({(loc, item["msg"]): (loc, item) for loc, item in deeper}.values())
            continue
        words = list(dict.fromkeys(_TYPE_WORDS[item["type"]] for _, item in members))
        first = members[0][1]
        plain.append((root, {**first, "type": "union_type", "msg": f"Input should be {' or '.join(words)}"}))
    return plain


def _locate(data: Any, path: tuple, message: str) -> tuple[tuple, tuple]:
    """(path to report, path of the line) for a problem reported on a whole mapping or list whose message quotes
    one of its keys or values (`ties takes no parameter 'densty'`): the line of that key or value, so the problem
    points at what to fix. Unchanged when no quoted name, or more than one, is found exactly once."""
    node: Any = data
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return path, path
    if not isinstance(node, (dict, list)):
        return path, path
    quoted = set(re.findall(r"'([^']+)'", message))
    found: dict[str, list[tuple[tuple, tuple]]] = {}

    def walk(value: Any, below: tuple) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, entry in items:
            if not below and key in ("name", "kind"):
                continue
            if isinstance(key, str) and key in quoted:
                found.setdefault(key, []).append((path + below, path + below + (key,)))
            if isinstance(entry, str) and entry in quoted:
                found.setdefault(entry, []).append((path + below + (key,),) * 2)
            if isinstance(entry, (dict, list)):
                walk(entry, below + (key,))

    walk(node, ())
    targets = {hits[0] for hits in found.values() if len(hits) == 1}
    return targets.pop() if len(targets) == 1 else (path, path)
