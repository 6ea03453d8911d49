"""Trainer pieces for packed blocks: a dataset in a fixed order, a collator that attaches cached teacher targets,
and `DistillTrainer`, a `transformers.Trainer` whose loss is the decoupled Top-K distillation loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from workbench.distill.topk_cache import TopKCache, teacher_topk
from workbench.losses.topk_distill import TopKDistillConfig, decoupled_topk_kd_loss

LOSS_PARTS = ("ce", "binary", "topk")


class BlockDataset(torch.utils.data.Dataset):
    """Block indices in the given order (a curriculum, or corpus order for a shuffled run)."""

    def __init__(self, order: np.ndarray):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"block": int(self.order[index])}


class BlockCollator:
    """Token ids of the batch's blocks as `input_ids`/`labels` (the model shifts), plus the cached teacher rows."""

    def __init__(self, blocks: np.ndarray, cache: TopKCache | None = None):
        self.blocks, self.cache = blocks, cache

    def __call__(self, features: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        indices = [f["block"] for f in features]
        ids = torch.from_numpy(np.asarray(self.blocks[indices], dtype=np.int64))
        batch = {"input_ids": ids, "labels": ids.clone()}
        if self.cache is not None:
            teacher_ids, teacher_logprobs = self.cache.rows(indices)
            batch["teacher_ids"] = torch.from_numpy(teacher_ids.astype(np.int64))
            batch["teacher_logprobs"] = torch.from_numpy(teacher_logprobs)
        return batch


class DistillTrainer(Trainer):
    """Trainer with `w_ce * CE + w_kd * (L_B + L_T)` as its loss.

    Teacher targets come from the batch (`teacher_ids`, `teacher_logprobs`: cached rows) or, when a teacher
    model is given, from its forward pass on the same batch (online mode). Row t of the targets is the
    teacher's distribution over token t + 1, so the student's logits at 0..S-2 are compared with rows 0..S-2
    and labels 1..S-1; the last row has no label inside the block.
    """

    loss_is_scaled_for_ga = False  # the loss is a per-batch mean

    def __init__(self, *args, loss_config: TopKDistillConfig, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.teacher = teacher
        if teacher is not None:
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self._parts: list[torch.Tensor] = []
        """Per training batch since the last log: its `LOSS_PARTS`, detached and left on the device, so that a step
        never waits for the device; they are copied to the host together when the Trainer logs."""

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        if self.teacher is not None:
            teacher_ids, teacher_logprobs = teacher_topk(self.teacher, input_ids, self.loss_config.k)
        else:
            teacher_ids, teacher_logprobs = inputs["teacher_ids"], inputs["teacher_logprobs"]
        outputs = model(input_ids=input_ids)
        parts = decoupled_topk_kd_loss(
            outputs.logits[:, :-1],
            teacher_ids[:, :-1],
            teacher_logprobs[:, :-1],
            input_ids[:, 1:],
            self.loss_config,
        )
        if model.training:
            self._parts.append(torch.stack([getattr(parts, name).detach() for name in LOSS_PARTS]))
        return (parts.total, outputs) if return_outputs else parts.total

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the loss parts (means since the last log) next to the Trainer's `loss`."""
        if "loss" in logs and self._parts:
            columns = zip(*torch.stack(self._parts).tolist(), strict=True)  # the one host sync per log
            logs = logs | {
                f"loss_{name}": float(np.mean(values)) for name, values in zip(LOSS_PARTS, columns, strict=True)
            }
            self._parts.clear()
        super().log(logs, start_time)


def training_arguments(config, output_dir: Path, seed: int, sequential: bool, resources=None):
    """TrainingArguments from a pretrain/distill stage config; `sequential` keeps the dataset's order."""
    from transformers import TrainingArguments

    return TrainingArguments(
        **config.trainer_arguments(output_dir, config.name, seed, resources),
        remove_unused_columns=False,  # the dataset yields block indices, the collator builds the inputs
        train_sampling_strategy="sequential" if sequential else "random",
    )
