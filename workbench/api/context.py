"""What a stage's `run(ctx)` receives and returns, and what its `review` sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from workbench.api.config import StageConfig
from workbench.api.resources import Resources
from workbench.errors import StageError, first_line
from workbench.tracking import StageTracker


@dataclass(frozen=True)
class Project:
    """The recipe-wide facts a stage may use."""

    root: Path
    """Project root: relative paths in the recipe resolve against it."""
    store_root: Path
    """`<work_dir>/<recipe>/`: stage folders and recipe-level caches (`_ref_logps`)."""
    work_root: Path
    """`<work_dir>/`: shared by every recipe of the project (pulled Argilla versions, the `_corpus` cache)."""
    recipe_name: str
    seed: int
    trust_remote_code: bool
    candidates: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """Each swept stage's candidates by name, in grid order (`workbench.api.sweeps`): what a merge's
    `candidates_of` reads."""

    def resolve(self, relative: str | Path) -> Path:
        return (self.root / relative).resolve()


@dataclass(frozen=True)
class StageInput:
    """A finished earlier stage, as later stages see it: its folder and its `stage.json`."""

    name: str
    dir: Path
    info: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def metrics(self) -> dict[str, float]:
        return self.info.get("metrics", {})


@dataclass
class StageResult:
    """What a stage reports back: final metrics (into stage.json and MLflow) and extra facts.

    `halt`: the stage finished (its output is kept) but the recipe must stop here, for this reason.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    halt: str | None = None


@dataclass
class Review:
    """A kind's verdict on a finished stage, fresh or cached: lines to print, and a reason to stop the recipe."""

    report: str = ""
    halt: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReviewContext:
    """What a kind's `review` sees: the stage's config, its recorded `stage.json`, its inputs and its run."""

    config: StageConfig
    info: dict[str, Any]
    inputs: dict[str, StageInput]
    project: Project
    tracker: StageTracker
    console: Console
    dir: Path
    """The stage's committed folder (its `model/`, its own files)."""

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"


@dataclass
class StageContext:
    project: Project
    config: StageConfig
    stage_hash: str
    tmp_dir: Path
    """The stage's temporary output folder; renamed into place only once the stage finished."""
    inputs: dict[str, StageInput]
    tokenizer_dir: Path
    tracker: StageTracker
    console: Console
    resources: Resources = field(default_factory=Resources)
    """The processes, machines and strategy this stage runs with (the runner resolves the recipe's default)."""
    rank: int = 0
    """This process's global rank when the stage runs distributed (0 otherwise)."""
    world_size: int = 1
    """How many processes run the stage."""
    tokenizer_fingerprint: str | None = None
    """The pinned tokenizer's fingerprint (`workbench.modeling.tokenizer.tokenizer_fingerprint`), hashed once per run
    by the executor; read it through `workbench.modeling.tokenizer.pinned_fingerprint(ctx)`, which hashes (once) a
    context built without it."""
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def model_dir(self) -> Path:
        return self.tmp_dir / "model"

    @property
    def is_main(self) -> bool:
        """Whether this process writes the stage's files and logs (rank 0; the only process when not distributed).
        Every rank runs the stage's code, so collective steps (training, held-out loss) stay in step."""
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        """Trainer checkpoints; they survive a killed run so the next run resumes from them."""
        return self.tmp_dir / "checkpoints"

    @property
    def seed(self) -> int:
        own = getattr(self.config, "seed", None)
        return self.project.seed if own is None else own

    def resolve(self, relative: str | Path) -> Path:
        return self.project.resolve(relative)

    def tokenizer(self):
        """The recipe's pinned tokenizer (loaded once per stage)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        return self._tokenizer

    def input_model(self) -> str:
        """The model this stage starts from: an earlier stage's model folder, a local path or a hub id."""
        source = getattr(self.config, "from_", None)
        if source is not None:
            return str(self.inputs[source].model_dir)
        model = getattr(self.config, "model", None)
        if model is None:
            raise StageError(f"stage '{self.config.name}' names no input model")
        return self.model_location(model)

    def model_location(self, model: str) -> str:
        """A `model:` value as a loader takes it: the local folder when it exists, else the hub id."""
        local = self.resolve(model)
        return str(local) if local.exists() else model

    def load_model(self, source: str | Path | None = None, auto_class=None):
        """A model in float32: `source` (a folder or hub id), by default this stage's input model. `auto_class`
        defaults to AutoModelForCausalLM. A load failure is a one-line StageError naming the model."""
        import torch

        if auto_class is None:
            from transformers import AutoModelForCausalLM as auto_class
        from workbench.api.hub import split_revision

        source = str(source) if source is not None else self.input_model()
        repo, revision = (source, None) if Path(source).exists() else split_revision(source)
        try:
            return auto_class.from_pretrained(
                repo, revision=revision, dtype=torch.float32, trust_remote_code=self.project.trust_remote_code
            )
        except OSError as error:
            raise StageError(
                f"stage '{self.config.name}': model '{source}' could not be loaded: {first_line(error)}"
            ) from None

    def save_model(self, model, tokenizer=None) -> None:
        """Write a complete Hugging Face model folder with the recipe's pinned tokenizer (the main process only)."""
        if not self.is_main:
            return
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer()
        model.save_pretrained(self.model_dir, safe_serialization=True)
        tokenizer.save_pretrained(self.model_dir)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(self.model_dir)
