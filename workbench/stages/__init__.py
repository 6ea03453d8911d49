"""Built-in stage kinds. Importing this package registers them."""

from workbench.stages import init, sft  # noqa: F401
