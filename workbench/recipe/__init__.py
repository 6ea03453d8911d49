"""Recipe schema and loading."""

from workbench.recipe.loader import LoadedRecipe, load_recipe
from workbench.recipe.schema import Recipe

__all__ = ["LoadedRecipe", "Recipe", "load_recipe"]
