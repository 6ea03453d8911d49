"""`sft`: supervised fine-tuning on chat data with trl's SFTTrainer (full or LoRA)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.api import DataSet, ModelSource, StageConfig, StageContext, StageKind, StageResult
from workbench.errors import StageError
from workbench.training.lora import LoraSettings
from workbench.training.settings import TrainerFields


class SFTStageConfig(StageConfig, ModelSource, TrainerFields):
    """Fine-tune on chat-format data (`messages`, optional `tools`) with loss on assistant turns."""

    kind: Literal["sft"]
    """Stage kind."""

    data: DataSet
    """Training data: JSONL, JSON, Parquet or a saved dataset folder, relative to the project root."""

    eval_data: DataSet | None = None
    """Held-out chat data for eval loss (before and after training) and sample generations."""

    max_length: int = Field(default=1024, ge=8)
    """Longest tokenized conversation; see `overlength` for longer ones."""

    assistant_only_loss: bool = True
    """Train only on assistant turns (needs `{% generation %}` in the chat template, as `lfm2` has)."""

    packing: bool = False
    """Pack several conversations into each sequence (trl's packing), off by default."""

    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    """trl packing strategy: best-fit decreasing (padding-free), with splitting, or wrapped. The padding-free ones
    keep conversations apart by position ids, which LFM2's conv layers follow only with the `causal_conv1d`
    package (a CUDA kernel): without it the stage stops before reading data. `wrapped` cuts the token stream into
    fixed blocks and runs anywhere, but conv and attention then see across conversation boundaries."""

    lora: LoraSettings | None = None
    """Train LoRA adapters instead of all weights."""

    invalid_records: Literal["error", "drop"] = "error"
    """What to do with malformed records (unknown roles, empty turns, unreadable lines): stop, or drop them
    (reported). Records repeating an earlier one are kept and reported either way."""

    overlength: Literal["drop", "truncate", "error"] = "drop"
    """What to do with conversations longer than max_length (always reported with their lines)."""

    sample_count: int = Field(default=3, ge=0)
    """Held-out prompts to generate from before and after training (logged to MLflow)."""

    unhashed_fields = StageConfig.unhashed_fields | TrainerFields.cadence_fields | {"sample_count"}


def run(ctx: StageContext) -> StageResult:
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset
    from workbench.training.chat_dataset import load_training_chats
    from workbench.training.loop import train_and_save
    from workbench.training.lora import peft_config
    from workbench.training.samples import generate_samples, log_samples, prompts_from_records

    config: SFTStageConfig = ctx.config
    tokenizer = ctx.tokenizer()
    model = ctx.load_model()
    if config.packing and config.packing_strategy != "wrapped":
        problem = packed_conv_problem(model.config)
        if problem:
            raise StageError(f"packing_strategy {config.packing_strategy}: {problem}")
    policies = dict(
        invalid=config.invalid_records, overlength=config.overlength, assistant_only_loss=config.assistant_only_loss
    )
    train = load_training_chats(ctx, config.data, tokenizer, config.max_length, metric_prefix="data/train", **policies)
    held_out = (
        load_training_chats(ctx, config.eval_data, tokenizer, config.max_length, metric_prefix="data/eval", **policies)
        if config.eval_data
        else None
    )
    # samples are for the reviewer: the main process alone generates them
    prompts = prompts_from_records((held_out or train).raw, config.sample_count if ctx.is_main else 0)
    before = generate_samples(model, tokenizer, prompts)
    trainer = SFTTrainer(
        model=model,
        args=_training_args(ctx, SFTConfig, evaluate=held_out is not None),
        train_dataset=Dataset.from_list(train.examples),
        eval_dataset=Dataset.from_list(held_out.examples) if held_out else None,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora),
    )
    evaluate = (lambda: {"eval/loss": trainer.evaluate()["eval_loss"]}) if held_out else None
    trained = train_and_save(ctx, trainer, evaluate, lora=config.lora is not None)
    after = generate_samples(trained.model, tokenizer, prompts)
    log_samples(ctx, prompts, before, after)
    return StageResult(metrics=trained.metrics)


def packed_conv_problem(model_config) -> str | None:
    """Why padding-free packed sequences cannot train this model here: transformers keeps them apart in LFM2's
    conv layers only through causal_conv1d's kernel, and refuses otherwise once the first batch arrives."""
    import importlib.util

    if "conv" not in (getattr(model_config, "layer_types", None) or []):
        return None
    if importlib.util.find_spec("causal_conv1d") is not None:
        return None
    return (
        "LFM2's conv layers keep padding-free packed conversations apart only with the causal_conv1d package, "
        "which is not installed here: install it (CUDA), or use packing_strategy: wrapped, or packing: false"
    )


def _training_args(ctx: StageContext, args_class, evaluate: bool):
    config: SFTStageConfig = ctx.config
    return args_class(
        **config.trainer_arguments(ctx.checkpoint_dir, config.name, ctx.seed, ctx.resources),
        per_device_eval_batch_size=config.batch_size,
        max_length=config.max_length,
        packing=config.packing,
        packing_strategy=config.packing_strategy,
        # the examples are tokenized, labelled and truncated already (`load_training_chats`): trl's preparation
        # would only copy them through three more dataset passes, so it runs only to pack; trl refuses the
        # assistant-only flag itself on a tokenized dataset
        assistant_only_loss=False,
        dataset_kwargs={"skip_prepare_dataset": not config.packing},
        dataset_num_proc=None,
    )


KIND = StageKind(
    name="sft",
    config=SFTStageConfig,
    run=run,
    distributed=True,
    sweepable=True,
    summary="supervised fine-tuning with trl (full or LoRA)",
)
