"""trl's DPOTrainer with the generalized preference loss and a persistent reference log-prob cache.

Only two methods change: `_compute_loss` (the loss and its metrics) and `_precompute_ref_logps` (looked up
in / written to `RefLogpCache` around trl's own precompute loop). Data preparation, the collator, the fused
LM head, PEFT adapters as reference, DeepSpeed/FSDP precompute and checkpointing stay trl's.
"""

from __future__ import annotations

import warnings

import torch
from trl import DPOTrainer

from workbench.losses.preference import PreferenceLossConfig, preference_loss
from workbench.preference.ref_cache import RefLogpCache

_NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


class PreferenceTrainer(DPOTrainer):
    """A DPOTrainer whose loss is `workbench.losses.preference.preference_loss` under `loss_config`."""

    def __init__(self, *args, loss_config: PreferenceLossConfig, ref_cache: RefLogpCache | None = None, **kwargs):
        # Set before trl's __init__, which precomputes reference log-probs through `_precompute_ref_logps`.
        self.loss_config = loss_config
        self.ref_cache = ref_cache
        super().__init__(*args, **kwargs)
        if self.args.ld_alpha is not None:
            raise ValueError("ld_alpha is not supported by the workbench preference loss")
        if loss_config.reference_free:
            self.ref_model = None  # SimPO-style: no reference forward ever runs, so do not hold its weights

    def _ref_settings(self) -> dict:
        """What besides weights and tokens changes reference log-probs: truncation and precision."""
        model = self.ref_model if self.ref_model is not None else self.model
        return {
            "max_length": self.args.max_length,
            "truncation_mode": self.args.truncation_mode,
            "dtype": str(next(model.parameters()).dtype),
            "autocast": "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "none",
        }

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        if self.ref_cache is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        key = self.ref_cache.key(dataset, self._ref_settings())
        if self.accelerator.num_processes > 1:
            # every rank reads the entry rank 0 names: a dataset's fingerprint may differ between processes
            from accelerate.utils import broadcast_object_list

            key = broadcast_object_list([key], from_process=0)[0]
        found = self.ref_cache.load(key)
        if found is not None and len(found[0]) == len(dataset):
            self.ref_cache.hits.append(name)
            return dataset.add_column("ref_chosen_logps", found[0].tolist()).add_column(
                "ref_rejected_logps", found[1].tolist()
            )
        computed = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            chosen = torch.tensor(computed["ref_chosen_logps"])
            self.ref_cache.save(key, chosen, torch.tensor(computed["ref_rejected_logps"]))
        self.ref_cache.misses.append(name)
        return computed

    def _reference_logps(self, inputs) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.loss_config.reference_free:
            return None, None
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        # trl's own per-batch reference pass (a separate model, or the PEFT base with adapters disabled).
        return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS} | {"use_cache": False}
        completion_mask = inputs["completion_mask"]
        # Log-probs are of token t+1 given the prefix, so the response tokens are the shifted mask.
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        per_token_logps = outputs.log_probs[:, -shift_mask.size(1) :]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)
        chosen_lengths, rejected_lengths = shift_mask.sum(dim=1).chunk(2, dim=0)
        ref_chosen, ref_rejected = self._reference_logps(inputs)
        result = preference_loss(
            chosen_logps, rejected_logps, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths, self.loss_config
        )
        loss = result.losses.mean()
        per_token_chosen = chosen_logps.detach() / chosen_lengths.clamp(min=1)
        per_token_rejected = rejected_logps.detach() / rejected_lengths.clamp(min=1)
        self._log_pair_metrics(
            mode,
            {
                "rewards/chosen": result.chosen_rewards,
                "rewards/rejected": result.rejected_rewards,
                "rewards/margins": result.margins,
                "rewards/accuracies": (result.margins > 0).float(),
                "logps/chosen": chosen_logps.detach(),
                "logps/rejected": rejected_logps.detach(),
                # The policy's own per-token preference, meaningful before training too (rewards are 0 then).
                "logps/per_token_accuracy": (per_token_chosen > per_token_rejected).float(),
                "lengths/chosen": chosen_lengths.float(),
                "lengths/rejected": rejected_lengths.float(),
            },
        )
        if return_outputs:
            warnings.warn("return_outputs recomputes the logits with an extra forward pass", stacklevel=2)
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def _log_pair_metrics(self, mode: str, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self._metrics[mode][name].append(self.accelerator.gather_for_metrics(value).float().mean().item())
