"""The one training loop of every training stage (pretrain, distill, sft, preference).

Resume from the last complete checkpoint when a killed run left one; evaluate before training (on a fresh start,
so a resumed run does not evaluate a half-trained model as "before": it reads the fresh start's figures, kept
beside the checkpoints); train; evaluate after; save the full model
(LoRA adapters kept beside it and merged). A stage builds its trainer and says how to evaluate; this does the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.api.context import StageContext
from workbench.fsio import write_json_atomic
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
    before_file = ctx.checkpoint_dir / BEFORE_METRICS
    if evaluate is not None and resume is None:
        metrics |= {f"{name}_before": value for name, value in evaluate().items()}
        if ctx.is_main:  # kept beside the checkpoints: a resumed run reports the same "before" as a whole one
            ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(before_file, metrics)
    if resume is not None:
        ctx.console.print(f"  resuming from {resume.name}")
        if before_file.is_file():
            metrics |= json.loads(before_file.read_text(encoding="utf-8"))
    logged = logged_losses(resume)  # read now: checkpoint rotation may delete `resume` while training
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics["train/loss"] = whole_run_loss(logged, output.training_loss, trainer.state.global_step)
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


BEFORE_METRICS = "before_metrics.json"


def logged_losses(resume: Path | None) -> tuple[int, float, int] | None:
    """From the checkpoint a run resumes from: its step, and the mean training loss over the steps its logged
    windows cover (each logged loss is its window's mean), with how many steps that is."""
    if resume is None:
        return None
    state = json.loads((resume / "trainer_state.json").read_text(encoding="utf-8"))
    start = int(state.get("global_step", 0))
    logged_until, total = 0, 0.0
    for entry in sorted(state.get("log_history", []), key=lambda e: e.get("step", 0)):
        if "loss" in entry and logged_until < entry.get("step", 0) <= start:
            total += float(entry["loss"]) * (entry["step"] - logged_until)
            logged_until = entry["step"]
    return start, (total / logged_until if logged_until else 0.0), logged_until


def whole_run_loss(logged: tuple[int, float, int] | None, session_loss: float, global_step: int) -> float:
    """The mean training loss over every step, as a run that was never interrupted reports it. The Trainer's own
    `training_loss` after a resume averages only the steps since the checkpoint; the steps before it count at the
    checkpoint's logged mean (exact when save_steps is a multiple of logging_steps). When nothing was logged
    before the checkpoint (logging_steps above save_steps) only the steps since it are known: their mean it is."""
    if logged is None or not logged[2] or global_step <= 0:
        return session_loss
    start, before, _ = logged
    return (before * start + session_loss * (global_step - start)) / global_step


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
