"""Execute a recipe's stage graph with caching, atomic outputs and MLflow tracking."""

from workbench.runner.catalog import default_catalog, load_recipe

__all__ = ["default_catalog", "load_recipe"]
