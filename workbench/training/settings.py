"""The optimizer and schedule fields every training stage shares (sft, preference, pretrain, distill).

A stage whose sensible defaults differ (preference optimization wants far smaller learning rates)
re-declares just those fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from workbench.api.config import StrictModel
from workbench.api.resources import Resources


class TrainerFields(StrictModel):
    """Epochs or steps, batch, learning-rate schedule, precision, seed and logging/checkpoint cadence."""

    epochs: float = Field(default=1.0, gt=0)
    """Passes over the training data (ignored when max_steps is set)."""

    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps."""

    batch_size: int = Field(default=8, ge=1)
    """Examples per device per step."""

    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Steps accumulated per optimizer update."""

    learning_rate: float = Field(default=2e-5, gt=0)
    """Peak learning rate."""

    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule."""

    warmup: float = Field(default=0.0, ge=0)
    """Warm-up: a fraction of total steps if < 1, else a number of steps."""

    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""

    bf16: bool = False
    """Train in bfloat16 mixed precision (GPUs; off on CPU)."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Training seed. Default: the recipe's seed."""

    logging_steps: int = Field(default=10, ge=1)
    """Log training metrics every N steps."""

    save_steps: int = Field(default=100, ge=1)
    """Checkpoint every N steps; an interrupted stage resumes from the last one."""

    cadence_fields: ClassVar[frozenset[str]] = frozenset({"logging_steps", "save_steps"})
    """How often to log and checkpoint: they do not change the result, so they stay out of the stage hash."""

    def trainer_arguments(
        self, output_dir: str | Path, run_name: str, seed: int, resources: Resources | None = None
    ) -> dict[str, Any]:
        """The keyword arguments these fields give every Trainer config (TrainingArguments, SFTConfig,
        DPOConfig); each stage adds its own. Checkpoints every `save_steps` (two kept) let a killed stage
        resume; metrics stream to the stage's MLflow run
        (`train_and_save` adds the callback). `resources` adds the parallelism strategy and precision
        (`distributed_arguments`)."""
        return distributed_arguments(resources or Resources()) | {
            "output_dir": str(output_dir),
            "run_name": run_name,
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps or -1,
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.lr_scheduler,
            "warmup_steps": self.warmup,
            "weight_decay": self.weight_decay,
            "bf16": self.bf16 or (resources is not None and resources.mixed_precision == "bf16"),
            "seed": seed,
            "logging_steps": self.logging_steps,
            "logging_first_step": True,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": 2,
            "eval_strategy": "no",
            "report_to": "none",  # the loop adds TrackingCallback: the stage's run, kept while the server is away
            "dataloader_num_workers": 0,
        }


def distributed_arguments(resources: Resources) -> dict[str, Any]:
    """Trainer arguments for `resources`: the Trainer reads the process group torchrun or accelerate set up, and
    these choose how the model is spread over it (DDP needs nothing; FSDP2 and DeepSpeed ZeRO are configured here;
    an accelerate config file configures itself), the precision and activation checkpointing."""
    arguments: dict[str, Any] = {}
    if resources.mixed_precision == "fp16":
        arguments["fp16"] = True
    if resources.gradient_checkpointing:
        arguments["gradient_checkpointing"] = True
    if not resources.distributed or resources.accelerate_config is not None:
        return arguments
    arguments["ddp_find_unused_parameters"] = False
    import torch

    if not torch.cuda.is_available():
        # accelerate sets up a CPU process group (gloo) only when told the run is on the CPU
        arguments |= {"use_cpu": True, "ddp_backend": "gloo"}
    if resources.strategy == "fsdp":
        arguments["fsdp"] = "full_shard auto_wrap" + (" offload" if resources.offload else "")
        # the layers to wrap come from the model's own `_no_split_modules` (its decoder layer)
        arguments["fsdp_config"] = {"version": 2, "reshard_after_forward": True}
    elif resources.strategy == "deepspeed":
        zero: dict[str, Any] = {"stage": resources.zero_stage}
        if resources.offload:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            if resources.zero_stage == 3:
                zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        arguments["deepspeed"] = {
            "zero_optimization": zero,
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"},
            "fp16": {"enabled": "auto"},
        }
    return arguments
