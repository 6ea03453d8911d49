"""LoRA through peft for the training stages: settings, the peft config, and the merged model to save."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench.api.config import StrictModel

if TYPE_CHECKING:
    from workbench.api.context import StageContext


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


def peft_config(lora: LoraSettings | None):
    """peft's LoraConfig for `lora`, or None to train all weights."""
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


def trained_model(ctx: StageContext, trainer, is_lora: bool):
    """The full trained model; for LoRA the adapter is kept beside it and merged into the weights."""
    model = trainer.model
    if is_lora:
        if ctx.is_main:
            model.save_pretrained(ctx.tmp_dir / "adapter")
        model = model.merge_and_unload()
    return model
