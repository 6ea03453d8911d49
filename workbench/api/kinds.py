"""Stage kinds and the catalog the loader, planner and executor are given (never import).

A kind is a typed config plus `run(ctx)`, and optionally `review(ctx)`: a verdict on its recorded output that runs
for fresh and cached stages alike (an evaluate stage's gates), so changing a threshold re-checks without re-running.
Namespaces list the named things recipes refer to (suites, merge templates, ...); URI schemes resolve data given
as a URI (`argilla://...`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from workbench.api.config import StageConfig
from workbench.api.context import Review, ReviewContext, StageContext, StageResult
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class StageKind:
    """A stage kind: its name, config schema and the function that runs it."""

    name: str
    config: type[StageConfig]
    run: Callable[[StageContext], StageResult]
    summary: str
    review: Callable[[ReviewContext], Review] | None = None
    makes_model: bool = True
    """Whether the stage's folder holds a `model/` that later stages may start from (`from:`, `models:`)."""
    distributed: bool = False
    """Whether `run` works on many processes (launched by the runner when `resources` asks for more than one):
    every rank runs it, `ctx.is_main` alone writes files and logs (see docs/distributed.md)."""
    same_on_any_world_size: bool = False
    """Whether a distributed run gives exactly the one-process output (work split across ranks and gathered, as
    evaluate, pairs and teacher_cache do), so the process count stays out of the stage's hash. Training kinds: no,
    their batch is per process."""
    scores: bool = False
    """Whether the stage's metrics are suite scores (`suite/metric`): the run's score table, `workbench report` and
    the run summary list them (the evaluate kind, or a plug-in one that scores models)."""
    sweepable: bool = False
    """Whether the kind's fields may be written `{sweep: [...]}`: the stage then becomes one candidate per grid point,
    each hashed, cached, run and tracked as the stage written with those values (`workbench.api.sweeps`)."""


@dataclass(frozen=True)
class Namespace:
    """Named things a recipe may refer to, and how each enters a stage's hash."""

    name: str
    """What the loader calls them in messages ("suite", "merge template")."""
    names: Callable[[Path], list[str]]
    """Every valid name, given the project root."""
    contains: Callable[[str, Path], bool] | None = None
    """A cheaper or wider membership test than `names` (lm-eval's task index); default: `name in names(root)`."""
    definition: Callable[[str, Path], tuple[str, Path] | None] | None = None
    """(hash key, file or folder) whose content defines the name, hashed into the stages that use it."""
    members: Callable[[str, Path], list[str] | None] | None = None
    """What the named thing provides (a suite's metric names); None when unknown before running."""
    check: Callable[[str, Path], list[str]] | None = None
    """Problems with the named thing's own definition (a template's keys), one message each."""


@dataclass(frozen=True)
class UriScheme:
    """Data given as `<scheme>://...` instead of a path."""

    scheme: str
    check: Callable[[str], str | None]
    """The problem with a URI's shape, or None (no network: validate must stay offline)."""
    digest: Callable[[str, Path], str]
    """The content hash of what the URI names (may fetch), given the work folder."""
    forget: Callable[[], None] | None = None
    """Forget what earlier plans fetched, so a new plan sees the source as it is now."""


@dataclass
class Catalog:
    """Everything the recipe layer needs to know about stage kinds, passed in rather than imported."""

    kinds: dict[str, StageKind] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    schemes: dict[str, UriScheme] = field(default_factory=dict)

    def add(self, kind: StageKind, source: str = "") -> None:
        """Add a stage kind; a second, different kind of the same name, or a config whose `kind` field does not
        accept the kind's name, is an error naming `source` (where the kind came from)."""
        where = f" ({source})" if source else ""
        if kind.name in self.kinds and self.kinds[kind.name] is not kind:
            raise WorkbenchError(f"stage kind '{kind.name}'{where} is already registered")
        accepted = get_args(kind.config.model_fields["kind"].annotation)
        if accepted != (kind.name,):
            raise WorkbenchError(
                f"stage kind '{kind.name}'{where}: its config's field must be `kind: Literal[\"{kind.name}\"]`"
            )
        self.kinds[kind.name] = kind

    def sweepable_kinds(self) -> list[str]:
        """The kinds whose fields may be swept."""
        return sorted(name for name, kind in self.kinds.items() if kind.sweepable)

    def kinds_with_field(self, field_name: str) -> list[str]:
        """The kinds whose config accepts `field_name` (aliases as written in YAML)."""
        return sorted(
            name
            for name, kind in self.kinds.items()
            if any((f.alias or n) == field_name for n, f in kind.config.model_fields.items())
        )
