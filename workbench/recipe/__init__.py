"""Recipe schema and loading."""

from workbench.recipe.loaded import LoadedRecipe
from workbench.recipe.loader import load_recipe
from workbench.recipe.schema import Recipe

__all__ = ["LoadedRecipe", "Recipe", "load_recipe"]
