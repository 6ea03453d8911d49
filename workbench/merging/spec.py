"""Templates in `merges/` and the merge spec a stage resolves to (template values, then the stage's overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench.api.kinds import Namespace
from workbench.errors import StageError

TEMPLATE_DIR = "merges"
# The mergekit keys a template may set; inputs (models, base_model) always come from the stage.
TEMPLATE_KEYS = ("merge_method", "parameters", "dtype", "out_dtype", "tokenizer_source", "chat_template")
# The stage fields a template may also set (the stage's value wins when it gives one).
SETTING_KEYS = ("dtype", "out_dtype", "tokenizer_source", "chat_template")


@dataclass(frozen=True)
class MergeSpec:
    """What to merge with, once template and stage are combined."""

    methods: list[str]
    """One method, or several to sweep over."""
    parameters: dict[str, Any]
    settings: dict[str, Any]
    """dtype, out_dtype, tokenizer_source, chat_template (None: mergekit's default)."""


# The templates workbench ships (as evaluation suites ship in evals/): found from any project folder; a project's
# own merges/<name>.yaml comes first.
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / TEMPLATE_DIR


def template_path(name: str) -> str:
    """The template file for `name`, relative to the project root."""
    return f"{TEMPLATE_DIR}/{name}.yaml"


def template_file(name: str, root: Path) -> Path:
    """The project's `merges/<name>.yaml`, else workbench's shipped one (the project's path when neither is)."""
    own = root / template_path(name)
    shipped = SHIPPED_TEMPLATES / f"{name}.yaml"
    return shipped if not own.is_file() and shipped.is_file() else own


def load_template(name: str, root: Path) -> dict[str, Any]:
    """A template's mergekit keys; unknown keys and a missing file are one-line errors."""
    path = template_file(name, root)
    if not path.is_file():
        known = template_names(root)
        raise StageError(
            f"merge template '{name}' not found in {root / TEMPLATE_DIR} or workbench's {SHIPPED_TEMPLATES} "
            f"(templates: {', '.join(known) or 'none'})"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise StageError(f"{where}: invalid YAML: {getattr(error, 'problem', None) or error}") from None
    except UnicodeDecodeError:
        raise StageError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: a merge template is a mapping of mergekit keys ({', '.join(TEMPLATE_KEYS)})")
    unknown = sorted(set(data) - set(TEMPLATE_KEYS))
    if unknown:
        raise StageError(f"{path}: unknown key '{unknown[0]}' (a template sets only: {', '.join(TEMPLATE_KEYS)})")
    if not isinstance(data.get("parameters", {}), dict):
        raise StageError(f"{path}: `parameters` must be a mapping")
    return data


def resolve_spec(
    template: dict[str, Any],
    method: str | list[str] | None,
    parameters: dict[str, Any],
    settings: dict[str, Any],
) -> MergeSpec:
    """Combine a template with the stage's own values: the stage wins, parameters key by key."""
    chosen = method if method is not None else template.get("merge_method")
    if chosen is None:
        raise StageError("no merge method: set `method` in the stage or `merge_method` in its template")
    methods = chosen if isinstance(chosen, list) else [chosen]
    merged_settings = {
        key: settings.get(key) if settings.get(key) is not None else template.get(key) for key in SETTING_KEYS
    }
    return MergeSpec(methods, {**template.get("parameters", {}), **parameters}, merged_settings)


def template_names(root: Path) -> list[str]:
    return sorted({p.stem for folder in (root / TEMPLATE_DIR, SHIPPED_TEMPLATES) for p in folder.glob("*.yaml")})


def template_problems(name: str, root: Path) -> list[str]:
    """What is wrong with a template file itself (its keys, its method and parameter names)."""
    from workbench.merging.methods import method_problems

    try:
        data = load_template(name, root)
    except StageError as error:
        return [str(error)]
    methods = data.get("merge_method")
    if methods is None:
        return []
    methods = methods if isinstance(methods, list) else [methods]
    return [f"template '{name}': {p}" for p in method_problems(methods, data.get("parameters", {}), {})]


TEMPLATES = Namespace(
    name="merge template",
    names=template_names,
    definition=lambda name, root: (template_path(name), template_file(name, root)),
    check=template_problems,
)
