"""`sft`: supervised fine-tuning on chat data with trl's SFTTrainer (full or LoRA)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from workbench.recipe.schema import StageConfig, StrictModel
from workbench.stages.registry import StageKind, register
from workbench.training.settings import TrainerFields

if TYPE_CHECKING:
    from workbench.runner.context import StageContext, StageResult


class LoraSettings(StrictModel):
    """Low-rank adapters through peft. The stage still writes a merged full model folder."""

    r: int = Field(default=16, ge=1)
    """Adapter rank."""

    alpha: int = Field(default=32, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""

    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""

    target_modules: list[str] | str = "all-linear"
    """Modules that get adapters: a list of names or peft's 'all-linear'."""


class SFTStageConfig(StageConfig, TrainerFields):
    """Fine-tune on chat-format data (`messages`, optional `tools`) with loss on assistant turns."""

    kind: Literal["sft"]
    """Stage kind."""

    from_: str | None = Field(default=None, alias="from")
    """Earlier stage whose model this stage starts from."""

    model: str | None = None
    """Or: a model folder on disk or a Hugging Face hub id to start from."""

    data: str
    """Training data: JSONL, JSON, Parquet or a saved dataset folder, relative to the project root."""

    eval_data: str | None = None
    """Held-out chat data for eval loss (before and after training) and sample generations."""

    max_length: int = Field(default=1024, ge=8)
    """Longest tokenized conversation; see `overlength` for longer ones."""

    assistant_only_loss: bool = True
    """Train only on assistant turns (needs `{% generation %}` in the chat template, as `lfm2` has)."""

    packing: bool = False
    """Pack several conversations into each sequence. LFM2's conv layers see across packed boundaries
    unless the attention/conv kernels are boundary-aware, so this is off by default."""

    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    """trl packing strategy: best-fit decreasing (padding-free), with splitting, or wrapped."""

    lora: LoraSettings | None = None
    """Train LoRA adapters instead of all weights."""

    invalid_records: Literal["error", "drop"] = "error"
    """What to do with malformed records (missing roles, empty turns): stop, or drop them (reported)."""

    overlength: Literal["drop", "truncate", "error"] = "drop"
    """What to do with conversations longer than max_length (always reported with their lines)."""

    sample_count: int = Field(default=3, ge=0)
    """Held-out prompts to generate from before and after training (logged to MLflow)."""

    stage_ref_fields = ("from_",)
    data_file_fields = ("data", "eval_data")
    unhashed_fields = StageConfig.unhashed_fields | TrainerFields.cadence_fields | {"sample_count"}

    @model_validator(mode="after")
    def _one_source(self) -> SFTStageConfig:
        if (self.from_ is None) == (self.model is None):
            raise ValueError("give exactly one of 'from' (an earlier stage) or 'model' (a path or hub id)")
        return self


def run(ctx: StageContext) -> StageResult:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from workbench.runner.context import StageResult
    from workbench.training.chat_dataset import load_training_chats
    from workbench.training.checkpoints import last_complete_checkpoint
    from workbench.training.samples import generate_samples, prompts_from_records

    config: SFTStageConfig = ctx.config
    tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_dir)
    model = _load_model(ctx, AutoModelForCausalLM)
    policies = dict(invalid=config.invalid_records, overlength=config.overlength)
    train = load_training_chats(ctx, config.data, tokenizer, config.max_length, metric_prefix="data/train", **policies)
    held_out = (
        load_training_chats(ctx, config.eval_data, tokenizer, config.max_length, metric_prefix="data/eval", **policies)
        if config.eval_data
        else None
    )
    prompts = prompts_from_records((held_out or train).raw, config.sample_count)
    before = generate_samples(model, tokenizer, prompts)
    trainer = SFTTrainer(
        model=model,
        args=_training_args(ctx, SFTConfig, evaluate=held_out is not None),
        train_dataset=_dataset(train.examples),
        eval_dataset=_dataset(held_out.examples) if held_out else None,
        processing_class=tokenizer,
        peft_config=_peft_config(config.lora),
    )
    metrics: dict[str, float] = {}
    resume = last_complete_checkpoint(ctx.checkpoint_dir)
    if held_out and resume is None:
        metrics["eval/loss_before"] = trainer.evaluate()["eval_loss"]
    if resume is not None:
        ctx.console.print(f"  resuming from {resume.name}")
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics["train/loss"] = output.training_loss
    if held_out:
        metrics["eval/loss"] = trainer.evaluate()["eval_loss"]
    trained = _finalize(ctx, trainer, config.lora is not None)
    ctx.save_model(trained, tokenizer)
    after = generate_samples(trained, tokenizer, prompts)
    _log_samples(ctx, prompts, before, after)
    metrics["train/steps"] = float(trainer.state.global_step)
    return StageResult(metrics=metrics)


def _load_model(ctx: StageContext, auto_class):
    import torch

    from workbench.errors import StageError

    source = ctx.input_model()
    try:
        return auto_class.from_pretrained(
            source, dtype=torch.float32, trust_remote_code=ctx.loaded.recipe.trust_remote_code
        )
    except OSError as error:
        first = str(error).strip().splitlines()[0]
        raise StageError(f"stage '{ctx.config.name}': model '{source}' could not be loaded: {first}") from None


def _training_args(ctx: StageContext, args_class, evaluate: bool):
    config: SFTStageConfig = ctx.config
    return args_class(
        **config.trainer_arguments(ctx.checkpoint_dir, config.name, ctx.seed),
        per_device_eval_batch_size=config.batch_size,
        max_length=config.max_length,
        packing=config.packing,
        packing_strategy=config.packing_strategy,
        assistant_only_loss=config.assistant_only_loss,
        dataset_num_proc=None,
    )


def _dataset(examples):
    from datasets import Dataset

    return Dataset.from_list(examples)


def _peft_config(lora: LoraSettings | None):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _finalize(ctx: StageContext, trainer, is_lora: bool):
    """The full trained model; for LoRA the adapter is kept beside it and merged into the weights."""
    model = trainer.model
    if is_lora:
        model.save_pretrained(ctx.tmp_dir / "adapter")
        model = model.merge_and_unload()
    return model


def _log_samples(ctx: StageContext, prompts, before: list[str], after: list[str]) -> None:
    rows = [
        {"prompt": p["messages"][-1]["content"], "reference": p["reference"], "before": b, "after": a}
        for p, b, a in zip(prompts, before, after, strict=True)
    ]
    ctx.tracker.log_dict(rows, "samples.json")
    for row in rows[:2]:
        ctx.console.print(f"  [dim]prompt:[/] {row['prompt'][:100]}")
        ctx.console.print(f"  [dim]before:[/] {row['before'][:100]!r}")
        ctx.console.print(f"  [dim]after: [/] {row['after'][:100]!r}")


register(
    StageKind(name="sft", config=SFTStageConfig, run=run, summary="supervised fine-tuning with trl (full or LoRA)")
)
