"""The JSON Schema of recipe files, with every stage kind of a catalog, for editor autocompletion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, TypeAdapter

from workbench.api.kinds import Catalog
from workbench.api.markers import Named
from workbench.recipe.schema import Recipe
from workbench.recipe.schema_errors import models_in


def recipe_json_schema(catalog: Catalog) -> dict[str, Any]:
    configs = tuple(kind.config for kind in catalog.kinds.values())
    stage_union = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007 (built at runtime)
    schema = Recipe.model_json_schema(by_alias=True)
    stage_schema = TypeAdapter(stage_union).json_schema(by_alias=True, ref_template="#/$defs/{model}")
    schema.setdefault("$defs", {}).update(stage_schema.pop("$defs", {}))
    schema["properties"]["stages"]["items"] = stage_schema
    _name_choices(schema["$defs"], catalog)
    _allow_sweeps(schema["$defs"], catalog)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "workbench recipe"
    return schema


SWEEP_SCHEMA = {
    "type": "object",
    "description": "A grid: one candidate of the stage per value (docs/sweeps.md).",
    "properties": {
        "sweep": {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean", "null"]}}
    },
    "required": ["sweep"],
    "additionalProperties": False,
}
KEPT_OUTSIDE = ("title", "description", "default")


def _allow_sweeps(definitions: dict[str, Any], catalog: Catalog) -> None:
    """Each field a sweepable kind may sweep also takes `{sweep: [...]}` (the loader says which fields may)."""
    definitions["Sweep"] = SWEEP_SCHEMA
    for kind in catalog.kinds.values():
        definition = definitions.get(kind.config.__name__) if kind.sweepable else None
        if definition is None:
            continue
        unhashed = {(info.alias or name) for name, info in kind.config.model_fields.items()
                    if name in kind.config.unhashed_fields}  # fmt: skip
        for key, field in definition.get("properties", {}).items():
            if key in ("name", "kind", "from") or key in unhashed:
                continue
            inner = {k: v for k, v in field.items() if k not in KEPT_OUTSIDE}
            outer = {k: v for k, v in field.items() if k in KEPT_OUTSIDE}
            definition["properties"][key] = outer | {"anyOf": [inner, {"$ref": "#/$defs/Sweep"}]}


def _name_choices(definitions: dict[str, Any], catalog: Catalog, root: Path | None = None) -> None:
    """A field that names a thing of a catalog namespace (a suite, a judge, a merge template) lists the names known
    here as `examples`, for an editor's completion; not `enum`: a suite may be any stock lm-eval task and a
    template any file of the project."""
    root = root or Path.cwd()
    for name, model in _models(catalog).items():
        definition = definitions.get(name)
        if definition is None:
            continue
        for field_name, info in model.model_fields.items():
            namespace, in_list = _namespace_of([info.annotation, *info.metadata])
            prop = definition.get("properties", {}).get(info.alias or field_name)
            if namespace is None or prop is None or namespace not in catalog.namespaces:
                continue
            names = sorted(catalog.namespaces[namespace].names(root))
            target = prop.get("items", prop) if in_list else prop
            target["examples"] = names


def _models(catalog: Catalog) -> dict[str, type[BaseModel]]:
    """Every config model of the catalog's kinds, nested ones included, by class name."""
    found: dict[str, type[BaseModel]] = {}
    pending = [kind.config for kind in catalog.kinds.values()]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            pending += models_in(info.annotation)
    return found


def _namespace_of(annotations: list[Any], in_list: bool = False) -> tuple[str | None, bool]:
    """The namespace a `Named` marker anywhere in these annotations names, and whether it marks a list's items."""
    for annotation in annotations:
        if isinstance(annotation, Named):
            return annotation.namespace, in_list
        inner = [*get_args(annotation), *getattr(annotation, "__metadata__", ())]
        found, listed = _namespace_of(inner, in_list or get_origin(annotation) is list)
        if found is not None:
            return found, listed
    return None, in_list
