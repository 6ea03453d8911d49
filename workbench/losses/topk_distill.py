"""LFM2's tempered, decoupled Top-K knowledge-distillation loss.

Per position, T is the teacher's top-K token set, P_T its teacher mass and Q_T its student mass.
The loss is ``w_ce * CE + w_kd * (L_B + L_T)`` with

* ``L_B = KL(Bernoulli(P_T) || Bernoulli(Q_T))``: how much mass belongs inside T (untempered);
* ``L_T = P_T * tau^2 * KL(p_tau(.|T) || q_tau(.|T))``: the shape of the distribution within T.

The derivation, the numerics and the defaults are in ``docs/distillation.md``.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.losses.topk_distill_config import TopKDistillConfig

IGNORE_INDEX = -100
"""Label value of positions that take part in neither the CE nor the distillation term."""


class TopKDistillLoss(NamedTuple):
    """The total loss and its parts, each a mean over the non-ignored positions.

    ``total = w_ce * ce + w_kd * (binary + topk)``; the parts are unweighted and keep their
    autograd graph (call ``.item()`` or ``.detach()`` to log them).
    """

    total: Tensor
    ce: Tensor
    binary: Tensor
    topk: Tensor


def decoupled_topk_kd_loss(
    student_logits: Tensor,
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    labels: Tensor,
    config: TopKDistillConfig,
) -> TopKDistillLoss:
    """Compute the decoupled Top-K distillation loss of a batch.

    All inputs are position-aligned: row ``[b, s]`` of every tensor describes the prediction of
    the same token (shifting is the caller's job).

    Args:
        student_logits: ``[B, S, V]`` student logits, any float dtype.
        teacher_topk_ids: ``[B, S, K]`` distinct token ids of T (int64, int32 or uint16).
        teacher_topk_logprobs: ``[B, S, K]`` teacher log-probs of those ids, taken from a
            full-vocabulary log-softmax at temperature 1 (fp16, bf16 or fp32).
        labels: ``[B, S]`` target ids, ``IGNORE_INDEX`` where a position is ignored. Teacher
            rows at ignored positions may hold any padding.
        config: weights, temperature and options.

    Returns:
        The total and its parts, averaged over the non-ignored positions (0 when there are none).
    """
    _check_shapes(student_logits, teacher_topk_ids, teacher_topk_logprobs, labels, config.k)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    valid = labels != IGNORE_INDEX
    ids, teacher_lp = _select_top_k(teacher_topk_ids.long(), teacher_topk_logprobs.to(dtype), config.k)
    ids, teacher_lp = _blank_ignored_rows(ids, teacher_lp, valid)
    safe_labels = torch.where(valid, labels, 0).long()

    student_top, log_q_mass, log_q_rest, ce = _student_terms(student_logits, ids, safe_labels, dtype)
    # Teacher log-probs come from a full-vocabulary softmax, so log P_T <= 0; rounding of
    # low-precision storage can push it slightly above, which would make 1 - P_T negative.
    log_p_mass = torch.logsumexp(teacher_lp, dim=-1).clamp(max=0.0)

    binary = _binary_kl(log_p_mass, log_q_mass, log_q_rest)
    topk = _within_top_k_kl(teacher_lp, student_top, config.temperature)
    if config.use_mass_weight:
        topk = log_p_mass.exp() * topk
    if config.use_tau_squared:
        topk = config.temperature**2 * topk

    ce, binary, topk = (_masked_mean(part, valid) for part in (ce, binary, topk))
    total = config.w_ce * ce + config.w_kd * (binary + topk)
    return TopKDistillLoss(total=total, ce=ce, binary=binary, topk=topk)


def _check_shapes(logits: Tensor, ids: Tensor, logprobs: Tensor, labels: Tensor, k: int) -> None:
    """Raise one ValueError that lists every shape problem of the inputs."""
    problems = []
    if logits.dim() != 3:
        problems.append(f"student_logits must be [B, S, V], got {tuple(logits.shape)}")
    if ids.shape != logprobs.shape:
        problems.append(f"teacher ids {tuple(ids.shape)} and log-probs {tuple(logprobs.shape)} differ")
    if ids.shape[:-1] != logits.shape[:-1] or labels.shape != logits.shape[:-1]:
        problems.append(
            f"batch shapes differ: logits {tuple(logits.shape)}, ids {tuple(ids.shape)}, labels {tuple(labels.shape)}"
        )
    if k > ids.shape[-1]:
        problems.append(f"the cache stores {ids.shape[-1]} teacher tokens, config.k = {k}")
    if k > logits.shape[-1]:
        problems.append(f"config.k = {k} exceeds the vocabulary size {logits.shape[-1]}")
    if problems:
        raise ValueError("; ".join(problems))


def _select_top_k(ids: Tensor, logprobs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the `k` teacher tokens with the highest log-probs (all of them when the cache has k)."""
    if ids.shape[-1] == k:
        return ids, logprobs
    logprobs, order = logprobs.topk(k, dim=-1)
    return ids.gather(-1, order), logprobs


def _blank_ignored_rows(ids: Tensor, logprobs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Replace teacher rows at ignored positions by distinct ids and finite log-probs.

    Padding such as ``-inf`` log-probs or repeated ids would give NaN values there; masking
    the values afterwards hides them in the forward pass but not in the backward pass
    (0 * NaN = NaN), so the rows are made harmless first.
    """
    keep = valid.unsqueeze(-1)
    placeholder_ids = torch.arange(ids.shape[-1], device=ids.device)
    return torch.where(keep, ids, placeholder_ids), torch.where(keep, logprobs, 0.0)


def _student_terms(
    logits: Tensor, ids: Tensor, labels: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return the student's logits on T, log Q_T, log(1 - Q_T) and per-position CE.

    log(1 - Q_T) is a log-sum-exp over the complement of T rather than log(1 - exp(log Q_T)),
    which would lose all precision once the tail mass nears float32 epsilon. The complement
    is the single ``[B, S, V]`` temporary: a copy of the logits with T set to the most negative
    finite value (not ``-inf``, whose all-``-inf`` rows give NaN gradients when K = V). Since
    logsumexp(all) = logaddexp(logsumexp(T), logsumexp(not T)), no log-softmax is needed.
    A tail mass below the smallest normal float (reachable only when T covers the whole
    vocabulary) is floored there, so L_B stays finite when the teacher claims mass that the
    student has nowhere to put.
    """
    logits_top = logits.gather(-1, ids).to(dtype)
    rest = logits.to(dtype, copy=True).scatter_(-1, ids, torch.finfo(dtype).min)
    lse_top = torch.logsumexp(logits_top, dim=-1)
    lse_rest = torch.logsumexp(rest, dim=-1)
    lse_all = torch.logaddexp(lse_top, lse_rest)
    log_q_rest = (lse_rest - lse_all).clamp(min=math.log(torch.finfo(dtype).tiny))
    ce = lse_all - logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).to(dtype)
    return logits_top, lse_top - lse_all, log_q_rest, ce


def _binary_kl(log_p_mass: Tensor, log_q_mass: Tensor, log_q_rest: Tensor) -> Tensor:
    """KL(Bernoulli(P_T) || Bernoulli(Q_T)) from log-masses; the 0 log 0 = 0 case is exact."""
    p_mass = log_p_mass.exp()
    p_rest = -torch.expm1(log_p_mass)
    return p_mass * (log_p_mass - log_q_mass) + torch.xlogy(p_rest, p_rest) - p_rest * log_q_rest


def _within_top_k_kl(teacher_lp: Tensor, student_top: Tensor, temperature: float) -> Tensor:
    """KL(p_tau(.|T) || q_tau(.|T)), both renormalized over T at the given temperature.

    The teacher's log-probs differ from its logits by a per-position constant, which the
    softmax over T removes, so they stand in for the teacher logits.
    """
    log_q = torch.log_softmax(student_top / temperature, dim=-1)
    p = torch.softmax(teacher_lp / temperature, dim=-1)
    return F.kl_div(log_q, p, reduction="none").sum(-1)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of `values` over the valid positions; 0 (still differentiable) when there are none."""
    return torch.where(valid, values, 0.0).sum() / valid.sum().clamp(min=1)
