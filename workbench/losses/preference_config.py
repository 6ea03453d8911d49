"""The settings of the generalized preference loss (`preference.py`): presets and their overrides, kept free
of torch so recipes validate and plan without loading it."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

LossFn = Literal["logistic", "hinge", "squared", "none"]


@dataclasses.dataclass(frozen=True)
class PresetDefaults:
    """The `PreferenceLossConfig` field values a preset fills in before overrides; unset ones are plain DPO's."""

    beta: float
    margin: float = 0.0
    delta: float = 0.0
    loss_fn: LossFn = "logistic"
    length_normalize: bool = False
    reference_free: bool = False


class Preset(enum.StrEnum):
    """Named settings of the objective; each member carries its defaults and the paper they come from."""

    defaults: PresetDefaults
    paper: str

    DPO = "dpo", PresetDefaults(beta=0.1), "Rafailov et al. 2023, arXiv:2305.18290"
    # beta = 5 is Tulu 3's `dpo_norm` setting (open-instruct); trl calls this loss `sigmoid_norm`.
    LN_DPO = (
        "ln_dpo",
        PresetDefaults(beta=5.0, length_normalize=True),
        "Lambert et al. 2024 (Tulu 3), arXiv:2411.15124",
    )
    # The SimPO paper recommends beta in [2, 2.5] and gamma / beta near 0.5: margin = gamma = 1.0.
    SIMPO = (
        "simpo",
        PresetDefaults(beta=2.0, margin=1.0, length_normalize=True, reference_free=True),
        "Meng et al. 2024, arXiv:2405.14734",
    )
    # Anchor term only, unnormalized: exactly trl's `apo_zero` (APO Eq. 7) at trl's default beta.
    APO_ZERO = (
        "apo_zero",
        PresetDefaults(beta=0.1, delta=1.0, loss_fn="none"),
        "D'Oosterlinck et al. 2024, arXiv:2408.06266",
    )
    # Length-normalized DPO plus a small anchor; delta = 0.1 is our choice (docs/preference-loss.md).
    LFM2 = (
        "lfm2",
        PresetDefaults(beta=5.0, delta=0.1, length_normalize=True),
        "Liquid AI 2025, arXiv:2511.23404",
    )

    def __new__(cls, value: str, defaults: PresetDefaults, paper: str) -> Self:
        """Build a member whose value is its name and which carries `defaults` and `paper`."""
        member = str.__new__(cls, value)
        member._value_ = value
        member.defaults = defaults
        member.paper = paper
        return member

    @property
    def needs_reference_model(self) -> bool:
        """Whether the preset, unmodified, needs reference-model log-probs."""
        return not self.defaults.reference_free

    @property
    def length_normalized(self) -> bool:
        """Whether the preset, unmodified, divides log-ratios by the response length."""
        return self.defaults.length_normalize


def _parse_preset(name: object) -> Preset:
    """Return the preset called `name`, or raise a ValueError listing the known ones."""
    try:
        return Preset(name)
    except ValueError:
        known = ", ".join(preset.value for preset in Preset)
        raise ValueError(f"unknown preset {name!r}; choose one of: {known}") from None


class PreferenceLossConfig(BaseModel):
    """Settings of the generalized preference loss; fields not given take the preset's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    preset: Preset
    """Named starting point (dpo, ln_dpo, simpo, apo_zero, lfm2) whose defaults fill the fields not given."""

    beta: float = Field(gt=0)
    """Inverse temperature scaling the (normalized) log-ratios; for `squared` it is IPO's 1 / tau."""

    margin: float = Field(ge=0)
    """Target reward margin `m` subtracted inside f; SimPO's gamma. Not rescaled when beta is overridden."""

    delta: float = Field(ge=0)
    """Weight of the APO-zero-style anchor term that raises chosen and lowers rejected rewards in absolute terms."""

    loss_fn: LossFn
    """Pairwise f: logistic (DPO), hinge (SLiC-HF), squared (IPO), or none (anchor only, needs delta > 0)."""

    length_normalize: bool
    """Divide each log-ratio by its number of response tokens, so rewards are per-token averages."""

    reference_free: bool
    """Use `log pi(y|x)` as the reward with no reference model (SimPO); reference inputs are then ignored."""

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """Fill the fields the caller left out from the named preset's defaults."""
        if not isinstance(data, dict):
            return data
        if "preset" not in data:
            raise ValueError(f"`preset` is required; choose one of: {', '.join(p.value for p in Preset)}")
        preset = _parse_preset(data["preset"])
        return {**dataclasses.asdict(preset.defaults), **data, "preset": preset}

    @model_validator(mode="after")
    def _check_has_a_loss_term(self) -> Self:
        """Reject settings whose loss is identically zero."""
        if self.loss_fn == "none" and self.delta == 0:
            raise ValueError("loss_fn='none' with delta=0 leaves no loss term; set delta > 0 or choose a pairwise f")
        return self

    @property
    def needs_reference_model(self) -> bool:
        """Whether `preference_loss` needs reference log-probs under these settings."""
        return not self.reference_free


def resolve(preset: Preset | str, **overrides: Any) -> PreferenceLossConfig:
    """Return the config of `preset` with `overrides` applied, validated as a whole."""
    return PreferenceLossConfig(preset=preset, **overrides)
