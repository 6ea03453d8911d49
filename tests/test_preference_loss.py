"""Tests for the generalized preference loss: hand-computed values, trl equivalence, gradients, errors."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from trl.trainer.dpo_trainer import DPOTrainer

from workbench.losses.preference import (
    PreferenceLossConfig,
    Preset,
    preference_loss,
    resolve,
)

# Two preference pairs: per-token policy log-probs of each response, and per-sequence reference sums.
CHOSEN_TOKENS = [[-0.5, -1.0, -0.25, -2.25], [-0.2, -0.3]]
REJECTED_TOKENS = [[-1.5, -0.5, -2.0, -1.0, -3.0, -0.5], [-1.0, -1.0, -0.5]]
REF_CHOSEN = [-4.5, -1.0]
REF_REJECTED = [-8.0, -2.0]

# (policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_len, rejected_len) per pair, as plain floats.
PAIRS = [
    (sum(c), sum(r), rc, rr, len(c), len(r))
    for c, r, rc, rr in zip(CHOSEN_TOKENS, REJECTED_TOKENS, REF_CHOSEN, REF_REJECTED, strict=True)
]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


# Expected per-pair losses, written out from each paper's formula with plain floats.
EXPECTED = {
    ("dpo", ()): [_neg_log_sigmoid(0.1 * ((pc - rc) - (pr - rr))) for pc, pr, rc, rr, lc, lr in PAIRS],
    ("ln_dpo", ()): [_neg_log_sigmoid(5.0 * ((pc - rc) / lc - (pr - rr) / lr)) for pc, pr, rc, rr, lc, lr in PAIRS],
    ("simpo", ()): [_neg_log_sigmoid(2.0 * pc / lc - 2.0 * pr / lr - 1.0) for pc, pr, rc, rr, lc, lr in PAIRS],
    ("apo_zero", ()): [(1 - _sigmoid(0.1 * (pc - rc))) + _sigmoid(0.1 * (pr - rr)) for pc, pr, rc, rr, lc, lr in PAIRS],
    ("lfm2", ()): [
        _neg_log_sigmoid(5.0 * ((pc - rc) / lc - (pr - rr) / lr))
        + 0.1 * ((1 - _sigmoid(5.0 * (pc - rc) / lc)) + _sigmoid(5.0 * (pr - rr) / lr))
        for pc, pr, rc, rr, lc, lr in PAIRS
    ],
    # SLiC-HF hinge on the unnormalized gap.
    ("dpo", (("loss_fn", "hinge"),)): [max(0.0, 1 - 0.1 * ((pc - rc) - (pr - rr))) for pc, pr, rc, rr, lc, lr in PAIRS],
    # IPO in its own form, (h - 1 / (2 tau))^2, with tau = beta = 0.5 and h the normalized gap.
    ("ln_dpo", (("loss_fn", "squared"), ("beta", 0.5))): [
        ((pc - rc) / lc - (pr - rr) / lr - 1 / (2 * 0.5)) ** 2 for pc, pr, rc, rr, lc, lr in PAIRS
    ],
}


def _inputs(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """The fixed pairs as [B] float64 tensors, in `preference_loss`'s argument order."""
    columns = list(zip(*PAIRS, strict=True))
    names = ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"]
    tensors = {name: torch.tensor(col, dtype=torch.float64) for name, col in zip(names, columns, strict=False)}
    for name in names[:2]:
        tensors[name].requires_grad_(requires_grad)
    tensors["chosen_lengths"] = torch.tensor(columns[4])
    tensors["rejected_lengths"] = torch.tensor(columns[5])
    return tensors


@pytest.mark.parametrize(("preset", "overrides"), list(EXPECTED))
def test_loss_matches_hand_computed_formula(preset: str, overrides: tuple) -> None:
    config = resolve(preset, **dict(overrides))
    losses = preference_loss(**_inputs(), config=config).losses
    assert losses.tolist() == pytest.approx(EXPECTED[preset, overrides], rel=1e-12)


def _trl_mean_loss(loss_types: list[str], beta: float, loss_weights: list[float] | None = None) -> float:
    """Run trl 1.16's own `DPOTrainer._compute_loss` on the fixed pairs.

    The loss is computed inline in that method, so it is called unbound with a minimal trainer state, reference
    log-probs supplied as precomputed (`precompute_ref_logps=True`), and a fake model returning the fixed
    per-token log-probs through trl's fused-LM-head output fields.
    """
    sequences = CHOSEN_TOKENS + REJECTED_TOKENS  # trl's batch is [chosen..., rejected...]
    prompt_len = 2
    width = prompt_len + max(len(tokens) for tokens in sequences)
    token_logps = torch.zeros(len(sequences), width, dtype=torch.float64)
    completion_mask = torch.zeros(len(sequences), width, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, tokens in enumerate(sequences):
        end = prompt_len + len(tokens)
        token_logps[row, prompt_len:end] = torch.tensor(tokens, dtype=torch.float64)
        completion_mask[row, prompt_len:end] = 1
        attention_mask[row, :end] = 1

    def fake_model(*, labels: torch.Tensor, fused_lm_head: bool, **_: object) -> SimpleNamespace:
        log_probs = token_logps[:, 1:] * (labels[:, 1:] != -100)  # zero where the label is -100, as trl's head
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    def identity(tensor: torch.Tensor) -> torch.Tensor:
        """Single process: trl's gathers return their input."""
        return tensor

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": attention_mask.clone(),
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor(REF_CHOSEN, dtype=torch.float64),
        "ref_rejected_logps": torch.tensor(REF_REJECTED, dtype=torch.float64),
    }
    return DPOTrainer._compute_loss(trainer, fake_model, inputs, return_outputs=False).item()


@pytest.mark.parametrize(
    ("preset", "overrides", "trl_loss_types", "trl_loss_weights"),
    [
        ("ln_dpo", {}, ["sigmoid_norm"], None),
        ("dpo", {}, ["sigmoid"], None),
        ("dpo", {"loss_fn": "hinge"}, ["hinge"], None),
        ("ln_dpo", {"loss_fn": "squared"}, ["ipo"], None),
        ("apo_zero", {}, ["apo_zero"], None),
        ("dpo", {"delta": 0.3}, ["sigmoid", "apo_zero"], [1.0, 0.3]),
    ],
)
def test_matches_trl_dpo_trainer(
    preset: str, overrides: dict, trl_loss_types: list[str], trl_loss_weights: list[float] | None
) -> None:
    config = resolve(preset, **overrides)
    ours = preference_loss(**_inputs(), config=config).losses.mean().item()
    assert ours == pytest.approx(_trl_mean_loss(trl_loss_types, config.beta, trl_loss_weights), rel=1e-12)


@pytest.mark.parametrize("preset", list(Preset))
def test_gradients_raise_chosen_and_lower_rejected(preset: Preset) -> None:
    inputs = _inputs(requires_grad=True)
    output = preference_loss(**inputs, config=resolve(preset))
    output.losses.sum().backward()
    assert (inputs["policy_chosen_logps"].grad < 0).all()
    assert (inputs["policy_rejected_logps"].grad > 0).all()
    assert not output.chosen_rewards.requires_grad and not output.margins.requires_grad


def test_rewards_and_margins_are_beta_scaled_normalized_log_ratios() -> None:
    output = preference_loss(**_inputs(), config=resolve("lfm2"))
    expected_chosen = [5.0 * (pc - rc) / lc for pc, pr, rc, rr, lc, lr in PAIRS]
    expected_rejected = [5.0 * (pr - rr) / lr for pc, pr, rc, rr, lc, lr in PAIRS]
    assert output.chosen_rewards.tolist() == pytest.approx(expected_chosen, rel=1e-12)
    assert output.rejected_rewards.tolist() == pytest.approx(expected_rejected, rel=1e-12)
    assert output.margins.tolist() == pytest.approx(
        [c - r for c, r in zip(expected_chosen, expected_rejected, strict=True)], rel=1e-12
    )


def test_reference_free_ignores_reference_inputs() -> None:
    config = resolve("simpo")
    with_refs = preference_loss(**_inputs(), config=config).losses
    inputs = _inputs() | {"ref_chosen_logps": None, "ref_rejected_logps": torch.zeros(5)}
    assert torch.equal(preference_loss(**inputs, config=config).losses, with_refs)


def test_length_normalization_makes_repeating_a_response_neutral() -> None:
    repeated = _inputs()
    for name in ("policy_chosen_logps", "ref_chosen_logps", "chosen_lengths"):
        repeated[name] = repeated[name] * 2  # the chosen response said twice: twice the tokens and log-ratio
    for preset, unchanged in (("ln_dpo", True), ("dpo", False)):
        config = resolve(preset)
        before = preference_loss(**_inputs(), config=config).losses
        after = preference_loss(**repeated, config=config).losses
        assert torch.allclose(before, after) is unchanged


def test_empty_response_counts_as_one_token() -> None:
    inputs = _inputs() | {"chosen_lengths": torch.tensor([0, 2])}
    losses = preference_loss(**inputs, config=resolve("ln_dpo")).losses
    assert torch.isfinite(losses).all()


def test_missing_reference_inputs_are_an_error_when_needed() -> None:
    inputs = _inputs() | {"ref_chosen_logps": None, "ref_rejected_logps": None}
    with pytest.raises(ValueError, match="'lfm2' .* got None for: ref_chosen_logps, ref_rejected_logps"):
        preference_loss(**inputs, config=resolve("lfm2"))


def test_mismatched_shapes_are_an_error() -> None:
    inputs = _inputs() | {"rejected_lengths": torch.tensor([6, 3, 1])}
    with pytest.raises(ValueError, match="1-D tensors of one shape"):
        preference_loss(**inputs, config=resolve("dpo"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preset": "orpo"}, "unknown preset 'orpo'; choose one of: dpo, ln_dpo, simpo, apo_zero, lfm2"),
        ({"preset": "dpo", "beta": -0.1}, "beta\n  Input should be greater than 0"),
        ({"preset": "dpo", "delta": -1.0}, "delta\n  Input should be greater than or equal to 0"),
        ({"preset": "dpo", "loss_fn": "exponential"}, "loss_fn\n  Input should be 'logistic', 'hinge'"),
        ({"preset": "dpo", "betta": 0.2}, "betta\n  Extra inputs are not permitted"),
        ({"beta": 0.2}, "`preset` is required"),
        ({"preset": "apo_zero", "delta": 0.0}, "leaves no loss term"),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PreferenceLossConfig.model_validate(fields)


def test_overrides_keep_the_other_preset_defaults() -> None:
    config = PreferenceLossConfig.model_validate({"preset": "lfm2", "delta": 0.2})
    assert config == resolve(Preset.LFM2, delta=0.2)
    assert (config.beta, config.delta, config.length_normalize, config.reference_free) == (5.0, 0.2, True, False)


@pytest.mark.parametrize(
    ("preset", "needs_reference_model", "length_normalized"),
    [
        ("dpo", True, False),
        ("ln_dpo", True, True),
        ("simpo", False, True),
        ("apo_zero", True, False),
        ("lfm2", True, True),
    ],
)
def test_preset_properties(preset: str, needs_reference_model: bool, length_normalized: bool) -> None:
    assert Preset(preset).needs_reference_model is needs_reference_model
    assert Preset(preset).length_normalized is length_normalized
    assert resolve(preset).needs_reference_model is needs_reference_model


def test_every_config_field_is_documented() -> None:
    assert all(field.description for field in PreferenceLossConfig.model_fields.values())
