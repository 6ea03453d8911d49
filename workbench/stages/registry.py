"""The registry of stage kinds. A kind is a typed config plus a `run(ctx)` function.

Built-in kinds register when `workbench.stages` is imported; third-party kinds register through
the `workbench.stages` entry-point group, so neither touches the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.recipe.schema import StageConfig
    from workbench.runner.context import StageContext, StageResult


@dataclass(frozen=True)
class StageKind:
    """A stage kind: its name, config schema and the function that runs it."""

    name: str
    config: type[StageConfig]
    run: Callable[[StageContext], StageResult]
    summary: str


_KINDS: dict[str, StageKind] = {}
_plugins_loaded = False


def register(kind: StageKind) -> StageKind:
    """Add a stage kind; a second registration of the same name is a programming error."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"stage kind '{kind.name}' is already registered")
    _KINDS[kind.name] = kind
    return kind


def stage_kinds() -> dict[str, StageKind]:
    """All registered kinds, built-in and plug-in, by name."""
    global _plugins_loaded
    import workbench.stages  # noqa: F401  (registers the built-in kinds)

    if not _plugins_loaded:
        _plugins_loaded = True
        for entry in entry_points(group="workbench.stages"):
            entry.load()
    return dict(_KINDS)
