"""mergekit's merge methods, read from its registry, and checks of a config's parameters against them.

mergekit ignores parameters a method does not take (a typo like `wieght` silently falls back to the
default), so workbench checks names and scopes itself before anything is merged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from workbench.errors import did_you_mean


@dataclass(frozen=True)
class MethodInfo:
    """What workbench needs to know about one mergekit method."""

    name: str
    shared: frozenset[str]
    """Parameters set once for the whole merge (`parameters:`)."""
    per_model: frozenset[str]
    """Parameters that may differ per input model (a model's `parameters:`, or `parameters:` for all)."""
    base: str
    """mergekit's base policy: required, optional, forbidden or ignored."""
    min_inputs: int
    max_inputs: int | None
    reference: str | None
    required: tuple[tuple[str, str], ...] = ()
    """Parameters mergekit cannot run without, with their scope: shared, input (every model) or non_base."""


@cache
def merge_methods() -> dict[str, MethodInfo]:
    """Every method mergekit registers, by name."""
    from mergekit.merge_methods import registered_methods
    from mergekit.merge_methods.base import ParameterScope

    found = {}
    for method in registered_methods():
        spec = method.spec
        found[spec.name] = MethodInfo(
            name=spec.name,
            shared=frozenset(p.name for p in spec.parameters if p.scope == ParameterScope.SHARED),
            per_model=frozenset(p.name for p in spec.parameters if p.scope != ParameterScope.SHARED),
            base=spec.contract.base.value,
            min_inputs=spec.contract.min_inputs,
            max_inputs=spec.contract.max_inputs,
            reference=spec.reference_url,
            required=tuple((p.name, p.scope.value) for p in spec.parameters if p.required),
        )
    return found


def method_problems(methods: list[str], shared: Iterable[str], per_model: dict[str, Iterable[str]]) -> list[str]:
    """Why these parameters do not fit `methods`: an unknown method, a name no method takes, a shared one set
    on a single model. In a method sweep a parameter that only some of the methods take is fine.

    `shared` are the names under `parameters:`; `per_model` maps an input's label to its own parameter names.
    """
    known_methods = merge_methods()
    for method in methods:
        if method not in known_methods:
            hint = did_you_mean(method, known_methods)
            return [f"unknown merge method '{method}'{hint}; mergekit has: {', '.join(sorted(known_methods))}"]
    infos = [known_methods[m] for m in methods]
    takes_shared = frozenset().union(*(i.shared for i in infos))
    takes_per_model = frozenset().union(*(i.per_model for i in infos))
    what = " or ".join(methods)
    takes = ", ".join(sorted(takes_shared | takes_per_model)) or "none"
    names = sorted(takes_shared | takes_per_model)
    problems = [f"{what} takes no parameter '{name}'{did_you_mean(name, names)} (it takes: {takes})" for name in shared
                if name not in takes_shared | takes_per_model]  # fmt: skip
    for label, names in per_model.items():
        for name in names:
            if name in takes_shared and name not in takes_per_model:
                problems.append(f"'{name}' is a shared parameter of {what}: set it under `parameters`, not on {label}")
            elif name not in takes_per_model:
                hint = did_you_mean(name, sorted(takes_per_model))
                problems.append(f"{what} takes no parameter '{name}'{hint} (on {label}; it takes: {takes})")
    return problems


def base_problems(methods: list[str], has_base: bool) -> list[str]:
    """A method that needs a base model without one, or one that forbids it with one."""
    problems = []
    for method in methods:
        policy = merge_methods()[method].base
        if policy == "required" and not has_base:
            problems.append(f"{method} needs a `base` model")
        elif policy == "forbidden" and has_base:
            problems.append(f"{method} does not take a `base` model")
    return problems


REQUIRED_DEFAULTS: dict[str, Any] = {"weight": 1.0}
"""Values workbench gives required parameters no input sets: `weight` 1.0 on every model, so `linear` with no
weights is the plain average (mergekit normalizes by default) and task vectors add at full strength, as in
merges/. mergekit itself stops mid-run without them."""


def missing_parameter_problems(
    methods: list[str],
    shared: Iterable[str],
    per_model: dict[str, Iterable[str]],
    base: str | None,
    defaults: bool = True,
) -> list[str]:
    """Parameters a method requires that are set neither under `parameters` nor on every model that needs them
    (mergekit would stop mid-run: "Missing required parameter weight for ..."). `per_model` maps each input's
    label to its own parameter names; `base` is the base model's label (non_base parameters skip it). With
    `defaults`, the parameters `applicable` fills in (REQUIRED_DEFAULTS) count as set: a merge stage's; a mergekit
    file runs as written, so for it they do not."""
    shared = set(shared)
    problems = []
    for method in methods:
        for name, scope in merge_methods()[method].required:
            if name in shared or (defaults and name in REQUIRED_DEFAULTS):
                continue
            if scope == "shared":
                problems.append(f"{method} needs `{name}` under `parameters`")
                continue
            lacking = [label for label, own in per_model.items() if name not in set(own)
                       and not (scope == "non_base" and label == base)]  # fmt: skip
            if lacking:
                where = ", ".join(f"'{label}'" for label in lacking)
                problems.append(
                    f"{method} needs `{name}` on every input model or under `parameters`; missing on {where}"
                )
    return problems


def applicable(
    method: str, parameters: dict[str, Any], model_parameters: tuple[dict[str, Any], ...]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The shared and per-model parameters `method` takes, and the names left out: in a method sweep, a parameter
    only some of the methods take reaches only those (mergekit would ignore it silently)."""
    info = merge_methods()[method]
    shared = {k: v for k, v in parameters.items() if k in info.shared | info.per_model}
    for name, _ in info.required:
        if name in REQUIRED_DEFAULTS and name not in shared:
            shared[name] = REQUIRED_DEFAULTS[name]  # a model's own value still wins (mergekit's precedence)
    per_model = [{k: v for k, v in own.items() if k in info.per_model} for own in model_parameters]
    ignored = set(parameters) - set(shared)
    for own, kept in zip(model_parameters, per_model, strict=True):
        ignored |= set(own) - set(kept)
    return shared, per_model, sorted(ignored)
