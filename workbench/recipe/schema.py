"""The recipe schema: typed, documented, strict (a typo fails at load time).

Stage configs are not listed here: each stage kind brings its own config class in the catalog the loader is
given, so new kinds plug in without touching the loader.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from workbench.api.config import NAME_PATTERN, StrictModel
from workbench.api.resources import Resources


class TrackingConfig(StrictModel):
    """Where MLflow records the run."""

    uri: str | None = None
    """MLflow tracking URI. Default: the MLFLOW_TRACKING_URI environment variable if set, else a
    SQLite store at `<work_dir>/mlflow.db`."""

    experiment: str | None = None
    """MLflow experiment name. Default: the recipe's name."""

    upload_models: bool | None = None
    """Upload each stage's model folder to the tracking server with its MLflow logged model. Default: yes for a
    tracking server (http, https), no for a local store, where the logged model references the stage's folder."""


class TokenizerTraining(StrictModel):
    """Train a byte-level BPE tokenizer locally (no download) from the given data files."""

    files: list[str] = Field(min_length=1)
    """Data files whose text trains the tokenizer: chat JSONL (message contents are used) or plain text."""

    vocab_size: int = Field(default=2048, ge=300, le=262144)
    """Vocabulary size, special tokens included."""


class TokenizerSpec(StrictModel):
    """The one tokenizer every stage of the recipe shares: an existing one, or one trained locally."""

    path: str | None = None
    """A tokenizer folder (or model folder) on disk, or a Hugging Face hub id."""

    train: TokenizerTraining | None = None
    """Train a tokenizer locally instead of loading one."""

    def model_post_init(self, _context: Any) -> None:
        if (self.path is None) == (self.train is None):
            raise ValueError("give exactly one of 'path' or 'train'")


class Recipe(StrictModel):
    """A recipe: named stages chained by name, one tokenizer and chat template for all of them."""

    name: str = Field(pattern=NAME_PATTERN)
    """Recipe name: names the output folder and the MLflow experiment."""

    description: str = ""
    """Free text for humans."""

    work_dir: str = "runs"
    """Where stage outputs, caches and the default MLflow store live (relative to the project root)."""

    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Global seed; each stage may override it."""

    tokenizer: TokenizerSpec
    """The tokenizer pinned for every stage."""

    chat_template: str = "lfm2"
    """Chat template pinned for every stage: a built-in name (`lfm2`) or a path to a `.jinja` file."""

    trust_remote_code: bool = False
    """Allow model code from the hub to run. Off unless the recipe asks for it explicitly."""

    tracking: TrackingConfig = TrackingConfig()
    """MLflow tracking settings."""

    resources: Resources = Resources()
    """Default processes, machines and parallelism of the stages that run distributed (pretrain, distill, sft,
    preference, evaluate, pairs, teacher_cache); a stage's own `resources` overrides it. Default: one process."""

    stages: list[dict[str, Any]] = Field(min_length=1)
    """The stages, each with a `name` and a `kind`; validated by the kind's own schema."""

    @field_validator("work_dir")
    @classmethod
    def _no_parent_escape(cls, value: str) -> str:
        if re.search(r"(^|/)\.\.(/|$)", value):
            raise ValueError("work_dir must not contain '..'")
        return value
