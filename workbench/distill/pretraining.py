"""Where a corpus-trained model starts (random weights or an earlier model) and the order it reads blocks in."""

from __future__ import annotations

import numpy as np

from workbench.api.context import StageContext
from workbench.distill.corpus import CorpusBlocks


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


def heldout_evaluator(trainer, held_out: CorpusBlocks | None):
    """The training loop's `evaluate` for a corpus stage: next-token loss of the trainer's model on held-out blocks."""
    if held_out is None:
        return None
    from workbench.distill.curriculum import heldout_loss

    return lambda: {"eval/loss": heldout_loss(trainer.model, held_out.blocks)}


def corpus_training_metrics(trained, seq_len: int) -> dict[str, float]:
    """The loop's metrics plus throughput in tokens (blocks are all `seq_len` long)."""
    return trained.metrics | {"train/tokens_per_second": trained.output.metrics["train_samples_per_second"] * seq_len}
