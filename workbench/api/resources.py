"""How many processes and machines a stage runs on, and how the model is spread over them.

A recipe gives a default (`resources:` at the top) and a stage may override it (`resources:` in the stage). The
runner launches a stage with more than one process through PyTorch's elastic launcher (`torch.distributed.run`,
what `torchrun` runs) or, with `accelerate_config`, through `accelerate launch`; the Trainer does the rest
(DDP, FSDP2 or DeepSpeed). See docs/distributed.md.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench.api.markers import DataPath

# The package each strategy needs beyond torch and transformers, and how to install it.
STRATEGY_PACKAGES = {"deepspeed": ("deepspeed", "pip install deepspeed")}


class Resources(BaseModel):
    """Processes, machines and the parallelism strategy of a stage (recipe default or per-stage override)."""

    # StrictModel's settings (api.config imports this module, so it cannot be the base)
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)

    processes: int = Field(default=1, ge=1)
    """Worker processes per node: one per GPU on a GPU node, a few on a CPU machine (gloo backend)."""

    nodes: int = Field(default=1, ge=1)
    """Machines. Start `workbench run RECIPE --nnodes N --node-rank R --master-addr HOST` on each (or let Slurm's
    `srun workbench run RECIPE` set them)."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    """`ddp`: a full model copy per process; `fsdp`: PyTorch FSDP2, parameters, gradients and optimizer state
    sharded; `deepspeed`: DeepSpeed ZeRO at `zero_stage` (needs the deepspeed package)."""

    zero_stage: Literal[1, 2, 3] = 2
    """DeepSpeed ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters."""

    offload: bool = False
    """FSDP or DeepSpeed: keep parameters and optimizer state in CPU memory (fits bigger models, slower)."""

    accelerate_config: Annotated[str, DataPath(kind="file")] | None = None
    """An accelerate config file for anything else accelerate accepts: the stage is launched with
    `accelerate launch --config_file` and `strategy` is left to that file."""

    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed-precision training (GPUs; `no` on CPU)."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def hashed(self) -> dict:
        """What changes a stage's output: the number of processes (the batch is per process, so the global batch
        grows with it) and the precision. Empty for one process in full precision, so single-process stages keep
        the hashes they had before resources existed; the strategy and checkpointing give the same model."""
        changes = {}
        if self.world_size > 1:
            changes["world_size"] = self.world_size
        if self.mixed_precision != "no":
            changes["mixed_precision"] = self.mixed_precision
        return changes

    def missing_package(self) -> str | None:
        """What to install for `strategy`, when its package is missing."""
        package = STRATEGY_PACKAGES.get(self.strategy)
        if package is None or self.accelerate_config is not None:
            return None
        module, install = package
        if importlib.util.find_spec(module) is None:
            return f"strategy '{self.strategy}' needs the {module} package, which is not installed: {install}"
        return None
