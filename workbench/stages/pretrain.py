"""`pretrain`: next-token cross-entropy on a text corpus, from scratch (an architecture file) or continued from
a model, with an optional easy-to-hard curriculum. Uses `transformers.Trainer` on packed blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from workbench.recipe.schema import StageConfig, StrictModel
from workbench.stages.registry import StageKind, register
from workbench.training.settings import TrainerFields

if TYPE_CHECKING:
    import numpy as np

    from workbench.distill.corpus import CorpusBlocks
    from workbench.runner.context import StageContext, StageResult


class CorpusFields(StrictModel):
    """The corpus fields shared by `pretrain`, `teacher_cache` and `distill`; they decide the packed blocks."""

    corpus: str
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
    """Empty, undecodable or malformed lines are always reported with their line numbers; `drop` skips them,
    `error` stops the stage."""


class PretrainStageConfig(StageConfig, CorpusFields, TrainerFields):
    """Train a causal LM on packed blocks of a text corpus."""

    kind: Literal["pretrain"]
    """Stage kind."""

    architecture: str | None = None
    """Start from random weights: an architecture YAML in `pretrain/` (vocab size from the tokenizer)."""

    from_: str | None = Field(default=None, alias="from")
    """Or: continue training the model of an earlier stage."""

    model: str | None = None
    """Or: continue training a model folder on disk (or a hub id)."""

    eval_corpus: str | None = None
    """Held-out corpus in the same format: its next-token loss is reported before and after training."""

    curriculum: Literal["none", "column", "scorer"] = "none"
    """Block order. `none`: shuffled every epoch. `column`: easy to hard by the documents' `difficulty_field`
    (token-weighted mean per block). `scorer`: easy to hard by the per-token loss of the `scorer` stage's model."""

    scorer: str | None = None
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

    stage_ref_fields = ("from_", "scorer")
    data_file_fields = ("corpus", "eval_corpus", "architecture")
    unhashed_fields = StageConfig.unhashed_fields | TrainerFields.cadence_fields

    @model_validator(mode="after")
    def _consistent(self):
        sources = [self.architecture, self.from_, self.model]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("give exactly one of 'architecture' (from scratch), 'from' (an earlier stage) or 'model'")
        if (self.curriculum == "scorer") != (self.scorer is not None):
            raise ValueError("'scorer' is needed by, and only by, curriculum: scorer")
        return self


def run(ctx: StageContext) -> StageResult:
    from transformers import AutoTokenizer, Trainer

    from workbench.distill.corpus import load_corpus
    from workbench.distill.training import BlockCollator, BlockDataset, training_arguments

    config: PretrainStageConfig = ctx.config
    tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_dir)
    model = start_model(ctx, tokenizer)
    train = load_corpus(ctx, config, config.corpus, tokenizer, "data/train")
    held_out = load_corpus(ctx, config, config.eval_corpus, tokenizer, "data/eval") if config.eval_corpus else None
    order, sequential = block_order(ctx, train)
    trainer = Trainer(
        model=model,
        args=training_arguments(config, ctx.checkpoint_dir, ctx.seed, sequential),
        train_dataset=BlockDataset(order),
        data_collator=BlockCollator(train.blocks),
        processing_class=tokenizer,
    )
    return train_and_save(ctx, trainer, tokenizer, held_out)


def start_model(ctx: StageContext, tokenizer):
    """Random weights from `architecture`, or the model named by `from`/`model`."""
    from workbench.errors import StageError
    from workbench.modeling.architecture import build_model, load_architecture

    config = ctx.config
    if config.architecture is not None:
        try:
            return build_model(load_architecture(ctx.resolve(config.architecture)), tokenizer, seed=ctx.seed)
        except (ValueError, TypeError) as error:
            raise StageError(f"stage '{config.name}': {error}") from None
    return ctx.load_model()


def block_order(ctx: StageContext, train: CorpusBlocks) -> tuple[np.ndarray, bool]:
    """The order the trainer reads blocks in, and whether it must keep it (a curriculum) or may shuffle."""
    import numpy as np

    from workbench.distill.curriculum import block_losses, curriculum_order
    from workbench.errors import StageError

    config = ctx.config
    if config.curriculum == "none":
        return np.arange(len(train.blocks)), False
    if config.curriculum == "column":
        if train.difficulty is None:
            info = train.info
            raise StageError(
                f"stage '{config.name}': curriculum: column needs a numeric '{config.difficulty_field}' in every "
                f"document; {info['missing_difficulty_count']} lack one ({info['unit']}s "
                f"{', '.join(map(str, info['missing_difficulty'][:8]))})"
            )
        difficulty = train.difficulty
    else:
        scorer = ctx.load_model(ctx.inputs[config.scorer].model_dir)
        difficulty = block_losses(scorer, train.blocks)
        del scorer
    order = curriculum_order(difficulty, config.curriculum_buckets, ctx.seed)
    buckets = np.array_split(difficulty[order], min(config.curriculum_buckets, len(order)))
    ctx.tracker.log_metrics(
        {
            "curriculum/first_bucket_difficulty": float(buckets[0].mean()),
            "curriculum/last_bucket_difficulty": float(buckets[-1].mean()),
        }
    )
    ctx.tracker.log_dict({"order": order.tolist(), "difficulty": difficulty[order].tolist()}, "curriculum.json")
    ctx.console.print(
        f"  curriculum ({config.curriculum}): {len(buckets)} buckets, mean difficulty "
        f"{buckets[0].mean():.3g} -> {buckets[-1].mean():.3g}"
    )
    return order, True


def train_and_save(ctx: StageContext, trainer, tokenizer, held_out: CorpusBlocks | None) -> StageResult:
    """Train (resuming from the last complete checkpoint), report held-out loss before/after, save the model."""
    from workbench.distill.curriculum import heldout_loss
    from workbench.runner.context import StageResult
    from workbench.training.checkpoints import last_complete_checkpoint

    metrics: dict[str, float] = {}
    resume = last_complete_checkpoint(ctx.checkpoint_dir)
    if held_out is not None and resume is None:
        metrics["eval/loss_before"] = heldout_loss(trainer.model, held_out.blocks)
    if resume is not None:
        ctx.console.print(f"  resuming from {resume.name}")
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics["train/loss"] = output.training_loss
    metrics["train/steps"] = float(trainer.state.global_step)
    metrics["train/seconds"] = float(output.metrics["train_runtime"])
    metrics["train/tokens_per_second"] = output.metrics["train_samples_per_second"] * ctx.config.seq_len
    if held_out is not None:
        metrics["eval/loss"] = heldout_loss(trainer.model, held_out.blocks)
        ctx.console.print(
            f"  held-out loss {metrics.get('eval/loss_before', float('nan')):.4f} -> {metrics['eval/loss']:.4f}"
        )
    ctx.save_model(trainer.model, tokenizer)
    return StageResult(metrics=metrics)


register(
    StageKind(
        name="pretrain",
        config=PretrainStageConfig,
        run=run,
        summary="next-token pretraining on a packed text corpus (from scratch or continued, optional curriculum)",
    )
)
