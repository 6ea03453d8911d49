"""Generalized length-normalized pairwise preference loss.

One function covers DPO, SLiC-HF, IPO, SimPO, APO-zero and the LFM2 objective. With
`r(y) = log pi(y|x) - log pi_ref(y|x)` (per-sequence sums over response tokens; the reference term is
dropped when `reference_free`) and `rn(y) = r(y) / |y|` when `length_normalize` (else `rn = r`):

    L = f(beta * (rn(y_w) - rn(y_l)) - margin)
        + delta * [(1 - sigmoid(beta * rn(y_w))) + sigmoid(beta * rn(y_l))]

Presets name the published settings; a recipe picks one and may override any field.
See docs/preference-loss.md for the derivation and the papers.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from workbench.losses.preference_config import (  # noqa: F401  (re-exported: the loss's public settings)
    LossFn,
    PreferenceLossConfig,
    Preset,
    PresetDefaults,
    resolve,
)


class PreferenceLossOutput(NamedTuple):
    """Per-pair results of `preference_loss`; all tensors have shape [B]."""

    losses: torch.Tensor
    """Loss of each pair, differentiable; the caller reduces it (usually with a mean)."""

    chosen_rewards: torch.Tensor
    """`beta * rn(y_w)`, detached, for logging."""

    rejected_rewards: torch.Tensor
    """`beta * rn(y_l)`, detached, for logging."""

    margins: torch.Tensor
    """`chosen_rewards - rejected_rewards` (before the target margin is subtracted), detached."""


def _logistic(u: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's Bradley-Terry negative log-likelihood `-log sigmoid(u)` (Rafailov et al. 2023)."""
    return -F.logsigmoid(u)


def _hinge(u: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-HF's calibration hinge `max(0, 1 - u)` (Zhao et al. 2023)."""
    return torch.relu(1 - u)


def _squared(u: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO's regression `(h - 1/(2 beta))^2` on the log-ratio gap `h = u / beta` (Azar et al. 2023)."""
    return (u - 0.5) ** 2 / beta**2


def _none(u: torch.Tensor, beta: float) -> torch.Tensor:
    """No pairwise term, so the anchor alone remains (APO-zero, D'Oosterlinck et al. 2024)."""
    return torch.zeros_like(u)


_PAIRWISE: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "logistic": _logistic,
    "hinge": _hinge,
    "squared": _squared,
    "none": _none,
}


def _check_inputs(config: PreferenceLossConfig, tensors: dict[str, torch.Tensor | None]) -> None:
    """Raise a ValueError if a needed reference input is missing or the inputs are not all of shape [B]."""
    if config.reference_free:
        tensors = {name: t for name, t in tensors.items() if not name.startswith("ref_")}
    missing = [name for name, tensor in tensors.items() if tensor is None]
    if missing:
        raise ValueError(
            f"preset {config.preset.value!r} with reference_free=False needs reference log-probs, but got None "
            f"for: {', '.join(missing)}; pass them or set reference_free=True"
        )
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"all inputs must be 1-D tensors of one shape [B]; got {shapes}")


def _scaled_reward(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    lengths: torch.Tensor,
    config: PreferenceLossConfig,
) -> torch.Tensor:
    """Return `beta * rn(y)`; lengths are clamped to at least 1 token, as trl does, so empty responses stay finite."""
    reward = policy_logps if config.reference_free else policy_logps - ref_logps
    if config.length_normalize:
        reward = reward / lengths.clamp(min=1).to(reward.dtype)
    return config.beta * reward


def preference_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    config: PreferenceLossConfig,
) -> PreferenceLossOutput:
    """Compute the generalized preference loss of each pair.

    Log-probs are per-sequence sums over response tokens, shape [B]; lengths count those tokens, shape [B].
    The reference log-probs may be None only when `config.reference_free`, and are ignored then.
    """
    _check_inputs(
        config,
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "ref_chosen_logps": ref_chosen_logps,
            "ref_rejected_logps": ref_rejected_logps,
            "chosen_lengths": chosen_lengths,
            "rejected_lengths": rejected_lengths,
        },
    )
    chosen = _scaled_reward(policy_chosen_logps, ref_chosen_logps, chosen_lengths, config)
    rejected = _scaled_reward(policy_rejected_logps, ref_rejected_logps, rejected_lengths, config)
    pairwise = _PAIRWISE[config.loss_fn](chosen - rejected - config.margin, config.beta)
    # 1 - sigmoid(x) is written sigmoid(-x), which keeps precision when x is large.
    anchor = torch.sigmoid(-chosen) + torch.sigmoid(rejected)
    margins = (chosen - rejected).detach()
    return PreferenceLossOutput(pairwise + config.delta * anchor, chosen.detach(), rejected.detach(), margins)
