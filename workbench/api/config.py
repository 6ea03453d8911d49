"""The base of every config: strict pydantic models, the fields every stage has, and the model-source mixin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workbench.api.markers import ModelPath, StageName
from workbench.api.resources import Resources

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]*$"


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors and field docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)


class RecipeView(Protocol):
    """What a stage's `check_recipe` may look at and report to while the loader validates a recipe."""

    root: Path

    def problem(self, path: tuple, message: str) -> None:
        """Report a problem at `path` below this stage (YAML keys, aliases as written)."""

    def kind_of(self, stage: str) -> str | None:
        """The kind of the stage named `stage`, or None if there is none."""

    def stages_of_kind(self, kind: str) -> list[str]:
        """The names of the recipe's stages of `kind`, in recipe order."""

    def config_of(self, stage: str) -> StageConfig | None:
        """The validated config of the stage named `stage` (None: unknown or invalid)."""

    def names(self, namespace: str) -> list[str]:
        """Every name in a catalog namespace (suites, merge templates, ...)."""

    def members(self, namespace: str, name: str) -> list[str] | None:
        """What a named thing provides (a suite's metric names); None when it cannot be known before running."""

    def candidates(self, stage: str) -> list[str] | None:
        """The candidates of a swept stage, by name in grid order; None when `stage` is not swept."""

    def trained_vocab_size(self) -> int | None:
        """The vocab_size the recipe trains its tokenizer to; None for a tokenizer loaded from a path or hub id
        (its size is known only once it is loaded)."""


class StageConfig(StrictModel):
    """Fields every stage has. Each stage kind subclasses this with `kind: Literal[...]`."""

    name: str = Field(pattern=NAME_PATTERN)
    """Unique stage name; later stages refer to this stage by it."""

    kind: str
    """The stage kind (init, sft, ...)."""

    description: str = ""
    """Free text for humans; does not affect the stage's hash."""

    resources: Resources | None = None
    """Processes, machines and parallelism for this stage, overriding the recipe's `resources` (kinds that run
    distributed only: pretrain, distill, sft, preference, evaluate, pairs, teacher_cache)."""

    # `resources` enters the hash as the runner resolves it (the recipe's default or this override, and only
    # what changes the output: see Resources.hashed), not as written.
    unhashed_fields: ClassVar[frozenset[str]] = frozenset({"name", "description", "resources"})
    """Fields that do not change the stage's output, so they stay out of its content hash."""

    hashed_when_set: ClassVar[frozenset[str]] = frozenset()
    """Optional fields (default None) added after stages of the kind were cached: left out of the hash while None,
    so adding the field did not invalidate every cached stage of the kind; once set, hashed like any field."""

    def hash_excluded(self) -> set[str]:
        """Fields left out of this stage's content hash."""
        return set(self.unhashed_fields) | {name for name in self.hashed_when_set if getattr(self, name) is None}

    def check_recipe(self, recipe: RecipeView) -> None:
        """Checks that need the rest of the recipe or the project (metric names, merge inputs); report each problem
        with `recipe.problem`. The field markers are already checked when this runs."""

    def architecture_source(self) -> tuple[str, str] | None:
        """Where this stage's output architecture comes from, when known before running: ('file', path of an
        architecture YAML) or ('stage', the stage whose model this one continues). None: unknown."""
        return None


class ModelSource(StrictModel):
    """A stage that starts from one model: an earlier stage (`from:`) or a folder / hub id (`model:`).

    `other_sources` names further alternatives of a kind (pretrain's `architecture`); exactly one is required.
    """

    from_: StageName | None = Field(default=None, alias="from")
    """The earlier stage whose model this stage uses."""

    model: Annotated[str, ModelPath(hash_prefix="model:")] | None = None
    """Or: a model folder (relative to the project root) or a Hugging Face hub id."""

    other_sources: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_model_source(self) -> Any:
        names = [*self.other_sources, "from", "model"]
        given = [getattr(self, "from_" if n == "from" else n) is not None for n in names]
        if sum(given) != 1:
            listed = ", ".join(f"'{n}'" for n in names[:-1]) + f" or '{names[-1]}'"
            raise ValueError(f"give exactly one of {listed}")
        return self

    def architecture_source(self) -> tuple[str, str] | None:
        if self.from_ is not None:
            return ("stage", self.from_)
        return None
