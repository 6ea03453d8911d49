"""Recipe schema and loading."""

from workbench.recipe.loader import LoadedRecipe, load_recipe
from workbench.recipe.schema import Recipe, StageConfig

__all__ = ["LoadedRecipe", "Recipe", "StageConfig", "load_recipe"]
