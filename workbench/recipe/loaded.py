"""`LoadedRecipe`: a recipe that passed every check, with its stages parsed and put in run order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.api.config import StageConfig
from workbench.api.context import Project
from workbench.api.kinds import Catalog
from workbench.api.markers import Consumed, StageRef, consumed
from workbench.api.resources import Resources
from workbench.api.sweeps import stage_of
from workbench.recipe.grid import Sweep
from workbench.recipe.schema import Recipe


@dataclass
class LoadedRecipe:
    """A validated recipe with its stages parsed and ordered; a swept stage is its candidates
    (`sft@learning_rate=0.001`, ...), each a stage of its own here."""

    recipe: Recipe
    stages: dict[str, StageConfig]
    """Every stage and candidate by name; a candidate's config is its stage's, written with its values."""
    order: list[str]
    path: Path
    root: Path
    """Project root: relative paths in the recipe (data, work_dir) resolve against it."""
    catalog: Catalog = field(repr=False, default_factory=Catalog)
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    """The swept stages by the name the recipe writes, with their fields and candidates."""

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def consumed(self, name: str) -> list[Consumed]:
        config = self.stages[name]
        return consumed(type(config), config.model_dump(mode="json", by_alias=True))

    def dependencies(self, name: str, hashed_only: bool = False) -> list[str]:
        """The stages `name` reads (all of them, or only those whose output changes its own)."""
        found: list[str] = []
        for item in self.consumed(name):
            if isinstance(item.marker, StageRef) and (item.marker.hashed or not hashed_only):
                found += self.sweeps[item.value].candidates if item.marker.candidates else [item.value]
        return list(dict.fromkeys(found))

    def expand(self, names: set[str]) -> set[str]:
        """Stage names as the user gives them (`--force sft`): a swept stage stands for its candidates."""
        return {c for name in names for c in (self.sweeps[name].candidates if name in self.sweeps else [name])}

    @property
    def written_order(self) -> list[str]:
        """The run order by the names the recipe writes (a swept stage once, where its candidates run)."""
        return list(dict.fromkeys(stage_of(name) for name in self.order))

    def descendants(self, names: set[str]) -> set[str]:
        """`names` and every stage whose output depends on them (a stage that only checks against one, through
        an unhashed reference such as `compare`, does not)."""
        found = set(names)
        for stage in self.order:
            if any(dep in found for dep in self.dependencies(stage, hashed_only=True)):
                found.add(stage)
        return found

    def resources(self, name: str) -> Resources:
        """The resources stage `name` runs with: its own, else the recipe's default for a kind that runs
        distributed, else one process."""
        config = self.stages[name]
        if config.resources is not None:
            return config.resources
        kind = self.catalog.kinds.get(config.kind)
        return self.recipe.resources if kind is not None and kind.distributed else Resources()

    @property
    def work_root(self) -> Path:
        return self.resolve(self.recipe.work_dir)

    @property
    def project(self) -> Project:
        return Project(
            root=self.root,
            store_root=self.work_root / self.recipe.name,
            work_root=self.work_root,
            recipe_name=self.recipe.name,
            seed=self.recipe.seed,
            trust_remote_code=self.recipe.trust_remote_code,
            candidates={name: sweep.candidates for name, sweep in self.sweeps.items()},
        )
