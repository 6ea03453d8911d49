"""The one training loop of every training stage (pretrain, distill, sft, preference).

Resume from the last complete checkpoint when a killed run left one; evaluate before training (on a fresh start,
so a resumed run does not evaluate a half-trained model as "before"); train; evaluate after; save the full model
(LoRA adapters kept beside it and merged). A stage builds its trainer and says how to evaluate; this does the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.api.context import StageContext
from workbench.training.checkpoints import last_complete_checkpoint
from workbench.training.lora import trained_model
from workbench.training.tracking_callback import TrackingCallback


@dataclass
class Trained:
    """What the loop produced: the stage's metrics so far and the saved model (for samples after training)."""

    metrics: dict[str, float]
    model: Any
    output: Any
    """The Trainer's `TrainOutput` (its `metrics` hold runtime figures)."""


def train_and_save(
    ctx: StageContext,
    trainer,
    evaluate: Callable[[], dict[str, float]] | None = None,
    lora: bool = False,
) -> Trained:
    """Run the loop. `evaluate` returns held-out metrics named `eval/...`; the "before" ones get a `_before`
    suffix (`eval/loss_before`)."""
    metrics: dict[str, float] = {}
    trainer.add_callback(TrackingCallback(ctx.tracker))  # before the "before" evaluation, which logs too
    resume = last_complete_checkpoint(ctx.checkpoint_dir)
    if evaluate is not None and resume is None:
        metrics |= {f"{name}_before": value for name, value in evaluate().items()}
    if resume is not None:
        ctx.console.print(f"  resuming from {resume.name}")
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics["train/loss"] = output.training_loss
    metrics["train/steps"] = float(trainer.state.global_step)
    metrics["train/seconds"] = float(output.metrics.get("train_runtime", 0.0))
    if evaluate is not None:
        metrics |= evaluate()
        if "eval/loss" in metrics:
            ctx.console.print(
                f"  held-out loss {metrics.get('eval/loss_before', float('nan')):.4f} -> {metrics['eval/loss']:.4f}"
            )
    if _sharded(ctx):
        model = _save_sharded(ctx, trainer)
    else:
        model = trained_model(ctx, trainer, lora)
        ctx.save_model(model)
    return Trained(metrics, model, output)


def _sharded(ctx: StageContext) -> bool:
    """Whether no process holds the whole model after training (FSDP, DeepSpeed ZeRO-3)."""
    resources = ctx.resources
    return resources.distributed and (
        resources.strategy == "fsdp" or (resources.strategy == "deepspeed" and resources.zero_stage == 3)
    )


def _save_sharded(ctx: StageContext, trainer):
    """Gather the shards into one model folder (every rank takes part; the main process writes), add the pinned
    tokenizer, and return the full model on the main process (None elsewhere) for the after-training samples."""
    trainer.save_model(str(ctx.model_dir))
    if not ctx.is_main:
        return None
    ctx.tokenizer().save_pretrained(ctx.model_dir)
    generation = getattr(trainer.model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(ctx.model_dir)
    return ctx.load_model(ctx.model_dir)
