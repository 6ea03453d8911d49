"""The settings of LFM2's decoupled Top-K distillation loss (`topk_distill.py`), kept free of torch so recipes
validate and plan without loading it."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TopKDistillConfig(BaseModel):
    """Settings of :func:`decoupled_topk_kd_loss`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    k: int = Field(default=32, ge=1)
    """Teacher tokens per position (the size of T). The cache must store at least `k`; when it
    stores more, the `k` with the highest teacher log-probs are used, so one cache serves
    ablations over smaller K."""

    temperature: float = Field(default=1.5, gt=0)
    """tau, applied to both sides of the within-T term only (the report's tempered term). 1.0 makes
    L_B + L_T exactly the part of KL(p || q) that a top-K cache can see; above 1 softens both
    distributions. 1.5 had the lowest held-out loss in a sweep of 1 to 4 on the quickstart's student
    (docs/distillation.md)."""

    w_ce: float = Field(default=0.5, ge=0)
    """Weight of the cross-entropy on the ground-truth labels."""

    w_kd: float = Field(default=0.5, ge=0)
    """Weight of the distillation term L_B + L_T. With w_ce + w_kd = 1 the gradient has the
    scale of plain CE, so a learning rate tuned for SFT carries over."""

    use_mass_weight: bool = True
    """Multiply L_T by P_T, as the chain rule of KL prescribes; False weighs every position's
    within-T term equally, however little mass the teacher puts in T."""

    use_tau_squared: bool = True
    """Multiply L_T by tau^2 so its gradient keeps the same scale for every temperature. Our choice, from
    Hinton et al. 2015, not part of the LFM2 report's formula; without it every tau above 1 did worse in
    the sweep, as the within-T gradient shrinks as 1/tau^2."""

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        """Reject a loss that would be identically zero."""
        if self.w_ce + self.w_kd <= 0:
            raise ValueError("w_ce + w_kd must be positive")
        return self
