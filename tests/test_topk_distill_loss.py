"""Tests of the decoupled Top-K distillation loss against a plain float64 reference."""

import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from workbench.losses.topk_distill import (
    IGNORE_INDEX,
    TopKDistillConfig,
    decoupled_topk_kd_loss,
)

B, S, V, K = 2, 5, 40, 6


def teacher_log_probs(seed: int, vocab: int = V) -> torch.Tensor:
    """A random teacher's full-vocabulary log-probs."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, S, vocab, generator=gen, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1)


def make_batch(seed: int = 0, k: int = K, vocab: int = V) -> dict[str, torch.Tensor]:
    """Random student logits, a random teacher's top-k rows, and labels with two ignored positions."""
    logprobs, ids = teacher_log_probs(seed, vocab).topk(k, dim=-1)
    gen = torch.Generator().manual_seed(seed + 1000)
    labels = torch.randint(0, vocab, (B, S), generator=gen)
    labels[0, 0] = labels[1, 3] = IGNORE_INDEX
    return {
        "student_logits": 2 * torch.randn(B, S, vocab, generator=gen),
        "teacher_topk_ids": ids,
        "teacher_topk_logprobs": logprobs.float(),
        "labels": labels,
    }


def reference_loss(batch: dict[str, torch.Tensor], config: TopKDistillConfig) -> dict[str, torch.Tensor]:
    """The loss written out position by position in float64, straight from its definition."""
    logits = batch["student_logits"].double()
    tau = config.temperature
    sums = {"ce": 0.0, "binary": 0.0, "topk": 0.0}
    count = 0
    for b in range(logits.shape[0]):
        for s in range(logits.shape[1]):
            label = int(batch["labels"][b, s])
            if label == IGNORE_INDEX:
                continue
            count += 1
            top = batch["teacher_topk_ids"][b, s].long()
            teacher_lp = batch["teacher_topk_logprobs"][b, s].double()
            q = torch.softmax(logits[b, s], dim=0)
            outside = torch.ones(logits.shape[2], dtype=torch.bool)
            outside[top] = False
            p_mass, q_mass, q_rest = (
                teacher_lp.exp().sum(),
                q[top].sum(),
                q[outside].sum(),
            )
            binary = p_mass * torch.log(p_mass / q_mass)
            if p_mass < 1:
                binary = binary + (1 - p_mass) * torch.log((1 - p_mass) / q_rest)
            p_tau = torch.softmax(teacher_lp / tau, dim=0)
            q_tau = torch.softmax(logits[b, s, top] / tau, dim=0)
            topk = (p_tau * torch.log(p_tau / q_tau)).sum()
            if config.use_mass_weight:
                topk = p_mass * topk
            if config.use_tau_squared:
                topk = tau**2 * topk
            sums["ce"] = sums["ce"] - torch.log(q[label])
            sums["binary"] = sums["binary"] + binary
            sums["topk"] = sums["topk"] + topk
    parts = {name: value / count for name, value in sums.items()}
    parts["total"] = config.w_ce * parts["ce"] + config.w_kd * (parts["binary"] + parts["topk"])
    return parts


def assert_matches(batch: dict[str, torch.Tensor], config: TopKDistillConfig, atol: float) -> None:
    """Check every part of the loss against the reference."""
    loss = decoupled_topk_kd_loss(**batch, config=config)
    expected = reference_loss(batch, config)
    for name in ("total", "ce", "binary", "topk"):
        torch.testing.assert_close(getattr(loss, name).double(), expected[name], rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_matches_float64_reference(temperature: float) -> None:
    config = TopKDistillConfig(k=K, temperature=temperature, w_ce=0.3, w_kd=0.7)
    assert_matches(make_batch(), config, atol=1e-5)


def test_float64_logits_are_computed_in_float64() -> None:
    batch = make_batch(seed=1)
    batch["student_logits"] = batch["student_logits"].double()
    assert_matches(batch, TopKDistillConfig(k=K, temperature=1.5), atol=1e-12)


def test_full_vocabulary_reduces_to_kl() -> None:
    batch = make_batch(seed=2, k=V)
    batch["student_logits"] = batch["student_logits"].double()
    # Kept in float64 so that P_T = 1 to rounding: in float32 it is 1 - O(1e-7), and that tail
    # mass, which the student cannot place anywhere when K = V, costs O(1e-5) of L_B.
    batch["teacher_topk_logprobs"] = teacher_log_probs(seed=2).topk(V, dim=-1).values
    loss = decoupled_topk_kd_loss(**batch, config=TopKDistillConfig(k=V, temperature=1.0))

    valid = batch["labels"] != IGNORE_INDEX
    teacher = torch.full((B, S, V), -math.inf, dtype=torch.float64)
    teacher.scatter_(-1, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"])
    student = torch.log_softmax(batch["student_logits"], dim=-1)
    full_kl = (teacher.exp() * (teacher - student)).sum(-1)[valid].mean()
    torch.testing.assert_close(loss.binary, torch.zeros((), dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(loss.topk, full_kl, atol=1e-12, rtol=0)


def test_gradient_matches_reference_autograd() -> None:
    batch = make_batch(seed=3)
    config = TopKDistillConfig(k=K, temperature=2.0, w_ce=0.4, w_kd=0.6)
    logits = batch["student_logits"].double().requires_grad_()
    decoupled_topk_kd_loss(**{**batch, "student_logits": logits}, config=config).total.backward()
    reference_logits = batch["student_logits"].double().requires_grad_()
    reference_loss({**batch, "student_logits": reference_logits}, config)["total"].backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad, atol=1e-12, rtol=0)


def test_gradcheck() -> None:
    batch = make_batch(seed=4)
    config = TopKDistillConfig(k=K, temperature=0.7)
    logits = batch["student_logits"].double().requires_grad_()

    def total(student_logits: torch.Tensor) -> torch.Tensor:
        return decoupled_topk_kd_loss(**{**batch, "student_logits": student_logits}, config=config).total

    assert torch.autograd.gradcheck(total, (logits,))


def test_moving_mass_out_of_top_k_increases_binary_term() -> None:
    batch = make_batch(seed=5)
    binaries = []
    for shift in (0.0, 0.5, 1.0, 2.0, 4.0):
        shifted = (
            teacher_log_probs(seed=5).float().scatter_add(-1, batch["teacher_topk_ids"], torch.full((B, S, K), -shift))
        )
        loss = decoupled_topk_kd_loss(**{**batch, "student_logits": shifted}, config=TopKDistillConfig(k=K))
        binaries.append(loss.binary.item())
    assert binaries[0] == pytest.approx(0.0, abs=1e-6)
    assert all(later > earlier for earlier, later in itertools.pairwise(binaries))


def test_ignored_positions_contribute_nothing() -> None:
    batch = make_batch(seed=6)
    config = TopKDistillConfig(k=K, temperature=2.0)
    ignored = batch["labels"] == IGNORE_INDEX
    garbage = {key: value.clone() for key, value in batch.items()}
    garbage["student_logits"][ignored] = 1e4
    garbage["teacher_topk_ids"][ignored] = 0
    garbage["teacher_topk_logprobs"][ignored] = -math.inf
    results = []
    for inputs in (batch, garbage):
        logits = inputs["student_logits"].clone().requires_grad_()
        loss = decoupled_topk_kd_loss(**{**inputs, "student_logits": logits}, config=config)
        loss.total.backward()
        results.append((loss, logits.grad))
    (clean, clean_grad), (dirty, dirty_grad) = results
    torch.testing.assert_close(dirty.total, clean.total)
    torch.testing.assert_close(dirty_grad, clean_grad)
    assert torch.all(dirty_grad[ignored] == 0)


def test_all_positions_ignored_gives_zero_and_finite_gradient() -> None:
    batch = make_batch(seed=7)
    batch["labels"].fill_(IGNORE_INDEX)
    logits = batch["student_logits"].requires_grad_()
    loss = decoupled_topk_kd_loss(**batch, config=TopKDistillConfig(k=K))
    loss.total.backward()
    assert loss.total.item() == 0.0
    assert torch.all(logits.grad == 0)


def test_option_flags_change_only_the_top_k_term() -> None:
    batch = make_batch(seed=8)
    tau = 3.0
    default = decoupled_topk_kd_loss(**batch, config=TopKDistillConfig(k=K, temperature=tau))
    no_square = decoupled_topk_kd_loss(**batch, config=TopKDistillConfig(k=K, temperature=tau, use_tau_squared=False))
    torch.testing.assert_close(no_square.topk * tau**2, default.topk)
    torch.testing.assert_close(no_square.binary, default.binary)
    torch.testing.assert_close(no_square.ce, default.ce)

    unweighted = TopKDistillConfig(k=K, temperature=tau, use_mass_weight=False)
    assert_matches(batch, unweighted, atol=1e-5)
    assert decoupled_topk_kd_loss(**batch, config=unweighted).topk > default.topk


@pytest.mark.parametrize("teacher_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("id_dtype", [torch.uint16, torch.int32])
def test_compact_cache_dtypes(teacher_dtype: torch.dtype, id_dtype: torch.dtype) -> None:
    batch = make_batch(seed=9)
    batch["teacher_topk_logprobs"] = batch["teacher_topk_logprobs"].to(teacher_dtype)
    batch["teacher_topk_ids"] = batch["teacher_topk_ids"].to(id_dtype)
    assert_matches(batch, TopKDistillConfig(k=K, temperature=2.0), atol=1e-5)


def test_bfloat16_student_logits() -> None:
    batch = make_batch(seed=10)
    batch["student_logits"] = batch["student_logits"].bfloat16()
    loss = decoupled_topk_kd_loss(**batch, config=TopKDistillConfig(k=K))
    assert loss.total.dtype == torch.float32
    assert_matches(batch, TopKDistillConfig(k=K), atol=1e-5)


def test_larger_cache_uses_the_k_most_likely_tokens() -> None:
    batch = make_batch(seed=11, k=2 * K)
    order = torch.randperm(2 * K, generator=torch.Generator().manual_seed(11))
    shuffled = {
        **batch,
        "teacher_topk_ids": batch["teacher_topk_ids"][..., order],
        "teacher_topk_logprobs": batch["teacher_topk_logprobs"][..., order],
    }
    exact = {
        **batch,
        "teacher_topk_ids": batch["teacher_topk_ids"][..., :K],
        "teacher_topk_logprobs": batch["teacher_topk_logprobs"][..., :K],
    }
    config = TopKDistillConfig(k=K)
    torch.testing.assert_close(
        decoupled_topk_kd_loss(**shuffled, config=config).total,
        decoupled_topk_kd_loss(**exact, config=config).total,
    )


def test_cache_smaller_than_k_is_rejected() -> None:
    with pytest.raises(ValueError, match="stores 6 teacher tokens"):
        decoupled_topk_kd_loss(**make_batch(), config=TopKDistillConfig(k=K + 1))


def test_config_rejects_typos_and_bad_values() -> None:
    assert TopKDistillConfig().k == 32
    with pytest.raises(ValidationError, match="temprature"):
        TopKDistillConfig(temprature=2.0)
    with pytest.raises(ValidationError, match="temperature"):
        TopKDistillConfig(temperature=0.0)
    with pytest.raises(ValidationError, match="w_ce \\+ w_kd"):
        TopKDistillConfig(w_ce=0.0, w_kd=0.0)


def test_confident_student_keeps_tail_precision() -> None:
    batch = make_batch(seed=12)
    on_top = torch.zeros(B, S, V).scatter_(-1, batch["teacher_topk_ids"], 20.0)
    batch["student_logits"] = batch["student_logits"] + on_top
    assert_matches(batch, TopKDistillConfig(k=K), atol=1e-5)


def test_graph_saves_one_vocabulary_sized_temporary() -> None:
    batch = make_batch(seed=13)
    logits = batch["student_logits"].bfloat16().requires_grad_()
    saved = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        decoupled_topk_kd_loss(**{**batch, "student_logits": logits}, config=TopKDistillConfig(k=K))
    vocabulary_sized = {tensor.data_ptr() for tensor in saved if tensor.numel() == B * S * V}
    assert len(vocabulary_sized - {logits.data_ptr()}) == 1
