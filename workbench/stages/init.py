"""`init`: a model with random weights built from an architecture config in `pretrain/`.

The offline way to get a base model for tests and the quickstart; the full pretraining and
distillation stages build on the same architecture files.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.api import DataFile, StageConfig, StageContext, StageKind, StageResult


class InitStageConfig(StageConfig):
    """Build a randomly initialised LFM2-style model from an architecture file."""

    kind: Literal["init"]
    """Stage kind."""

    architecture: DataFile
    """Path to an architecture YAML in `pretrain/` (Lfm2Config or Lfm2MoeConfig fields; vocab from the tokenizer)."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Seed for the random weights. Default: the recipe's seed."""

    def architecture_source(self) -> tuple[str, str] | None:
        return ("file", self.architecture)


def run(ctx: StageContext) -> StageResult:
    from workbench.errors import StageError
    from workbench.modeling.architecture import build_model, load_architecture

    config: InitStageConfig = ctx.config
    tokenizer = ctx.tokenizer()
    try:
        model = build_model(load_architecture(ctx.resolve(config.architecture)), tokenizer, seed=ctx.seed)
    except (ValueError, TypeError) as error:
        raise StageError(f"stage '{config.name}': {error}") from None
    ctx.save_model(model, tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    ctx.console.print(f"  built {model.config.model_type} with {parameters:,} parameters")
    return StageResult(metrics={"parameters": float(parameters)})


KIND = StageKind(name="init", config=InitStageConfig, run=run, summary="random-weight model from an architecture file")
