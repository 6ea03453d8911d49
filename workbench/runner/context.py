"""What a stage's `run(ctx)` receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from workbench.errors import StageError

if TYPE_CHECKING:
    from workbench.recipe.loader import LoadedRecipe
    from workbench.recipe.schema import StageConfig
    from workbench.tracking import StageTracker


@dataclass(frozen=True)
class StageInput:
    """A finished earlier stage, as later stages see it: its folder and its `stage.json`."""

    name: str
    dir: Path
    info: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"


@dataclass
class StageResult:
    """What a stage reports back: final metrics (into stage.json and MLflow) and extra facts."""

    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    loaded: LoadedRecipe
    config: StageConfig
    stage_hash: str
    tmp_dir: Path
    """The stage's temporary output folder; renamed into place only once the stage finished."""
    inputs: dict[str, StageInput]
    tokenizer_dir: Path
    tracker: StageTracker
    console: Console

    @property
    def model_dir(self) -> Path:
        return self.tmp_dir / "model"

    @property
    def checkpoint_dir(self) -> Path:
        """Trainer checkpoints; they survive a killed run so the next run resumes from them."""
        return self.tmp_dir / "checkpoints"

    @property
    def seed(self) -> int:
        own = getattr(self.config, "seed", None)
        return self.loaded.recipe.seed if own is None else own

    def resolve(self, relative: str) -> Path:
        return self.loaded.resolve(relative)

    def input_model(self) -> str:
        """The model this stage starts from: an earlier stage's model folder, a local path or a hub id."""
        source = getattr(self.config, "from_", None)
        if source is not None:
            return str(self.inputs[source].model_dir)
        model = getattr(self.config, "model", None)
        if model is None:
            raise StageError(f"stage '{self.config.name}' names no input model")
        local = self.resolve(model)
        return str(local) if local.exists() else model

    def load_model(self, source: str | Path | None = None, auto_class=None):
        """A model in float32: `source` (a folder or hub id), by default this stage's input model. `auto_class`
        defaults to AutoModelForCausalLM. A load failure is a one-line StageError naming the model."""
        import torch

        if auto_class is None:
            from transformers import AutoModelForCausalLM as auto_class
        source = str(source) if source is not None else self.input_model()
        try:
            return auto_class.from_pretrained(
                source, dtype=torch.float32, trust_remote_code=self.loaded.recipe.trust_remote_code
            )
        except OSError as error:
            first = str(error).strip().splitlines()[0]
            raise StageError(f"stage '{self.config.name}': model '{source}' could not be loaded: {first}") from None

    def save_model(self, model, tokenizer) -> None:
        """Write a complete Hugging Face model folder with the recipe's pinned tokenizer."""
        model.save_pretrained(self.model_dir, safe_serialization=True)
        tokenizer.save_pretrained(self.model_dir)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(self.model_dir)
