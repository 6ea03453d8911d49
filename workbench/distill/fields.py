"""The config fields shared by the corpus stages (`pretrain`, `teacher_cache`, `distill`): they decide the packed
blocks, and (for the training ones) where the model starts and in which order it reads the blocks."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from workbench.api.config import ModelSource, StrictModel
from workbench.api.markers import DataFile, StageName
from workbench.training.settings import TrainerFields


class CorpusFields(StrictModel):
    """The corpus fields shared by `pretrain`, `teacher_cache` and `distill`; they decide the packed blocks."""

    corpus: DataFile
    """Training corpus, relative to the project root: `.txt` (one document per line), `.jsonl` (one object per
    line with a text field) or `.parquet` (a text column)."""

    text_field: str = "text"
    """The field (JSONL) or column (Parquet) that holds a document's text."""

    difficulty_field: str = "difficulty"
    """The field or column with a document's difficulty score (a number; larger is harder), used by
    `curriculum: column`. Documents without one are reported."""

    seq_len: int = Field(default=256, ge=8)
    """Tokens per packed block. Documents (bos + text + eos) are concatenated and cut into blocks of this
    length; the last partial block is dropped (and reported)."""

    invalid_lines: Literal["drop", "error"] = "drop"
    """Empty, undecodable, over-long (8 MiB) or malformed lines are always reported with their line numbers; `drop`
    skips them, `error` stops the stage. Repeated documents are kept and reported either way."""


class PretrainFields(ModelSource, CorpusFields, TrainerFields):
    """A causal LM trained on packed blocks: where it starts, the held-out corpus and the block order."""

    architecture: DataFile | None = None
    """Start from random weights: an architecture YAML in `pretrain/` (vocab size from the tokenizer)."""

    eval_corpus: DataFile | None = None
    """Held-out corpus in the same format: its next-token loss is reported before and after training."""

    curriculum: Literal["none", "column", "scorer"] = "none"
    """Block order. `none`: shuffled every epoch. `column`: easy to hard by the documents' `difficulty_field`
    (token-weighted mean per block). `scorer`: easy to hard by the per-token loss of the `scorer` stage's model."""

    scorer: StageName | None = None
    """Earlier stage whose model scores difficulty (its mean next-token loss on each block); `curriculum: scorer`."""

    curriculum_buckets: int = Field(default=4, ge=1)
    """Difficulty buckets: blocks are shuffled within a bucket, buckets go from easy to hard, and the trainer
    reads them in that order (no reshuffling)."""

    batch_size: int = Field(default=16, ge=1)
    """Blocks per device per step."""

    learning_rate: float = Field(default=1e-3, gt=0)
    """Peak learning rate."""

    warmup: float = Field(default=0.05, ge=0)
    """Warm-up: a fraction of total steps if < 1, else a number of steps."""

    other_sources: ClassVar[tuple[str, ...]] = ("architecture",)

    @model_validator(mode="after")
    def _curriculum_scorer(self):
        if (self.curriculum == "scorer") != (self.scorer is not None):
            raise ValueError("'scorer' is needed by, and only by, curriculum: scorer")
        return self

    def architecture_source(self) -> tuple[str, str] | None:
        if self.architecture is not None:
            return ("file", self.architecture)
        return ModelSource.architecture_source(self)
