"""`pretrain`: next-token cross-entropy on a text corpus, from scratch (an architecture file) or continued from
a model, with an optional easy-to-hard curriculum. Uses `transformers.Trainer` on packed blocks."""

from __future__ import annotations

from typing import Literal

from workbench.api import StageConfig, StageContext, StageKind, StageResult
from workbench.distill.fields import PretrainFields
from workbench.training.settings import TrainerFields


class PretrainStageConfig(StageConfig, PretrainFields):
    """Train a causal LM on packed blocks of a text corpus."""

    kind: Literal["pretrain"]
    """Stage kind."""

    unhashed_fields = StageConfig.unhashed_fields | TrainerFields.cadence_fields


def run(ctx: StageContext) -> StageResult:
    from transformers import Trainer

    from workbench.distill.corpus import load_corpus
    from workbench.distill.pretraining import block_order, corpus_training_metrics, heldout_evaluator, start_model
    from workbench.distill.training import BlockCollator, BlockDataset, training_arguments
    from workbench.training.loop import train_and_save

    config: PretrainStageConfig = ctx.config
    tokenizer = ctx.tokenizer()
    model = start_model(ctx, tokenizer)
    train = load_corpus(ctx, config, config.corpus, tokenizer, "data/train")
    held_out = load_corpus(ctx, config, config.eval_corpus, tokenizer, "data/eval") if config.eval_corpus else None
    order, sequential = block_order(ctx, train)
    trainer = Trainer(
        model=model,
        args=training_arguments(config, ctx.checkpoint_dir, ctx.seed, sequential, ctx.resources),
        train_dataset=BlockDataset(order),
        data_collator=BlockCollator(train.blocks),
        processing_class=tokenizer,
    )
    trained = train_and_save(ctx, trainer, heldout_evaluator(trainer, held_out))
    return StageResult(metrics=corpus_training_metrics(trained, config.seq_len))


KIND = StageKind(
    name="pretrain",
    config=PretrainStageConfig,
    run=run,
    distributed=True,
    sweepable=True,
    summary="next-token pretraining on a packed text corpus (from scratch or continued, optional curriculum)",
)
