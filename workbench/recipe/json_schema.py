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
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "workbench recipe"
    return schema
