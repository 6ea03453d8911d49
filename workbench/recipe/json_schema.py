"""The JSON Schema of recipe files, with every stage kind of a catalog, for editor autocompletion."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from workbench.api.kinds import Catalog
from workbench.recipe.schema import Recipe


def recipe_json_schema(catalog: Catalog) -> dict[str, Any]:
    configs = tuple(kind.config for kind in catalog.kinds.values())
    stage_union = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007 (built at runtime)
    schema = Recipe.model_json_schema(by_alias=True)
    stage_schema = TypeAdapter(stage_union).json_schema(by_alias=True, ref_template="#/$defs/{model}")
    schema.setdefault("$defs", {}).update(stage_schema.pop("$defs", {}))
    schema["properties"]["stages"]["items"] = stage_schema
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
