"""The catalog of stage kinds, namespaces and URI schemes, handed to the recipe loader (which never imports it)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from workbench.api.kinds import Catalog
from workbench.recipe.loaded import LoadedRecipe
from workbench.recipe.loader import load_recipe as load_with


@cache
def default_catalog() -> Catalog:
    """The built-in stage kinds and the plug-ins registered under the `workbench.stages` entry-point group."""
    from workbench.stages import builtin_catalog

    return builtin_catalog()


def load_recipe(path: str | Path, root: str | Path | None = None, check_files: bool = True) -> LoadedRecipe:
    """Load and validate a recipe against the default catalog (see `workbench.recipe.loader.load_recipe`)."""
    return load_with(path, default_catalog(), root=root, check_files=check_files)
