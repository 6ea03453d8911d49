"""`init`: a model with random weights built from an architecture config in `pretrain/`.

The offline way to get a base model for tests and the quickstart; the full pretraining and
distillation stages build on the same architecture files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from workbench.recipe.schema import StageConfig
from workbench.stages.registry import StageKind, register

if TYPE_CHECKING:
    from workbench.runner.context import StageContext, StageResult


class InitStageConfig(StageConfig):
    """Build a randomly initialised LFM2-style model from an architecture file."""

    kind: Literal["init"]
    """Stage kind."""

    architecture: str
    """Path to an architecture YAML in `pretrain/` (Lfm2Config fields; vocab size comes from the tokenizer)."""

    seed: int | None = Field(default=None)
    """Seed for the random weights. Default: the recipe's seed."""

    data_file_fields = ("architecture",)


def run(ctx: StageContext) -> StageResult:
    from transformers import AutoTokenizer

    from workbench.errors import StageError
    from workbench.modeling.architecture import build_model, load_architecture
    from workbench.runner.context import StageResult

    config: InitStageConfig = ctx.config
    tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_dir)
    try:
        model = build_model(load_architecture(ctx.resolve(config.architecture)), tokenizer, seed=ctx.seed)
    except (ValueError, TypeError) as error:
        raise StageError(f"stage '{config.name}': {error}") from None
    ctx.save_model(model, tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    ctx.console.print(f"  built {model.config.model_type} with {parameters:,} parameters")
    return StageResult(metrics={"parameters": float(parameters)})


register(
    StageKind(name="init", config=InitStageConfig, run=run, summary="random-weight model from an architecture file")
)
