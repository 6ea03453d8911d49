"""The merge stage's config pieces: one input model with its own parameters, and how sweep candidates are scored
and selected. Checks inside one piece are its validators; checks that need the recipe are in `merging.checks`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from workbench.api import DataSet, ModelPath, Named, StageName, StageRef, StrictModel


class MergeInput(StrictModel):
    """One input model and its own mergekit parameters."""

    from_: StageName | None = Field(default=None, alias="from")
    """An earlier stage whose model is merged."""

    model: Annotated[str, ModelPath()] | None = None
    """Or: a model folder (relative to the project root) or a Hugging Face hub id (from the local cache)."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    """mergekit parameters for this model only (e.g. `weight`, `density`); `{sweep: [...]}` sweeps one."""

    @model_validator(mode="after")
    def _one_source(self) -> MergeInput:
        if (self.from_ is None) == (self.model is None):
            raise ValueError("give exactly one of 'from' (an earlier stage) or 'model' (a path or hub id)")
        return self

    @property
    def label(self) -> str:
        return self.from_ or self.model or ""


class SelectSpec(StrictModel):
    """How sweep candidates are scored and which one becomes the stage's output."""

    metric: str = "eval_loss"
    """The metric to optimise: `eval_loss` (held-out loss on `data`) or a metric of `suite` (e.g. `json_schema/valid_rate`)."""

    mode: Literal["min", "max"] | None = None
    """Whether lower or higher is better. Default: `min` for eval_loss; required for suite metrics."""

    data: DataSet | None = None
    """Held-out chat data (JSONL, JSON, Parquet) for `eval_loss`: mean loss per assistant token."""

    suite: Annotated[str, Named("suite")] | None = None
    """An evaluation suite (workbench.evaluation) that reports `metric` and the constrained metrics."""

    constraints: list[str] = Field(default_factory=list)
    """Gates on `suite`'s metrics a candidate must pass to be selected, in the evaluate stage's grammar: absolute
    (`json_schema/valid_rate >= 0.5`) or relative to an earlier evaluate stage listed in `compare`
    (`json_schema/valid_rate >= eval_sft - 0.02`)."""

    compare: list[Annotated[str, StageRef(kinds=("evaluate",))]] = Field(default_factory=list)
    """Earlier evaluate stages that relative constraints compare with; they become inputs of this stage, so
    their results are part of its cache key."""

    limit: int | None = Field(default=None, ge=1)
    """Samples per suite for each candidate (all when unset); a sweep evaluates every candidate."""

    batch_size: int = Field(default=8, ge=1)
    """Generation batch size for suite evaluation."""

    max_length: int = Field(default=1024, ge=8)
    """Longest tokenized conversation scored for eval_loss (longer ones are cut)."""

    @model_validator(mode="after")
    def _source(self) -> SelectSpec:
        from workbench.evaluation.gates import parse_gate

        if self.metric == "eval_loss":
            if self.data is None or self.suite is not None or self.constraints or self.compare:
                raise ValueError(
                    "metric eval_loss needs `data:` (a held-out chat file), and no `suite`, `constraints` or `compare`"
                )
        elif self.suite is None or self.mode is None:
            raise ValueError(f"metric '{self.metric}' needs `suite:` (the evaluation suite) and `mode:` (min or max)")
        for text in self.constraints:
            parse_gate(text)
        return self

    @property
    def direction(self) -> Literal["min", "max"]:
        return self.mode or "min"


class CandidateInputs(StrictModel):
    """A merge's models from a swept stage: all its candidates, or the best `top_k` by the score `by` gives."""

    candidates_of: Annotated[str, StageRef(candidates=True)]
    """A swept stage (a field written `{sweep: [...]}`): its candidates are the models to merge."""

    top_k: int | None = Field(default=None, ge=1)
    """Merge only the best k candidates by `by` (default: every candidate)."""

    by: SelectSpec | None = None
    """How candidates are scored for `top_k`, as a merge's `select` scores its own: a suite metric with `mode`
    (lm-eval on each candidate's model), or `eval_loss` on held-out `data`; a candidate that breaks one of the
    `constraints` is not kept."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    """mergekit parameters for each kept candidate (e.g. `weight`); no sweeps here (sweep the merge's own
    `parameters`)."""

    @model_validator(mode="after")
    def _ranked(self) -> CandidateInputs:
        from workbench.api.sweeps import looks_like_sweep

        if (self.top_k is None) != (self.by is None):
            raise ValueError("give `top_k` and `by` together (without them every candidate is merged)")
        swept = [name for name, value in self.parameters.items() if looks_like_sweep(value)]
        if swept:
            raise ValueError(
                f"parameters.{swept[0]}: the candidates' parameters apply to each of them and take no sweep; "
                "sweep the merge's own `parameters`"
            )
        return self

    def inputs(self, names: list[str]) -> list[MergeInput]:
        """The chosen candidates (by name) as merge inputs, each with the candidates' parameters."""
        return [MergeInput(**{"from": name, "parameters": self.parameters}) for name in names]


def input_problems(
    methods: list[str] | None,
    parameters: dict[str, Any],
    inputs: list[MergeInput],
    base: MergeInput | None,
    tokenizer_source: str | None,
) -> list[str]:
    """What is wrong with a merge stage's own fields, before the recipe is known: malformed sweeps, methods and
    parameters that do not fit (`methods` None: they come from a template, checked by `merging.checks`), a base the
    methods need or forbid, and a tokenizer_source that names no input."""
    from workbench.merging.methods import base_problems, method_problems, missing_parameter_problems
    from workbench.merging.sweep import sweep_problems

    problems = sweep_problems(parameters, "parameters")
    for index, entry in enumerate(inputs):
        problems += sweep_problems(entry.parameters, f"models[{index}].parameters")
    if methods is not None:
        fit = method_problems(methods, parameters, {f"model '{e.label}'": e.parameters for e in inputs})
        unknown = bool(fit) and fit[0].startswith("unknown merge method")
        problems += fit if unknown else fit + base_problems(methods, base is not None)
        if not unknown:
            own = {entry.label: entry.parameters for entry in inputs}
            problems += missing_parameter_problems(methods, parameters, own, base.label if base else None)
    labels = {entry.label for entry in inputs} | ({base.label} if base is not None else set())
    if tokenizer_source not in (None, "union", "base", *labels):
        problems.append(f"tokenizer_source '{tokenizer_source}' is not union, base or one of the inputs")
    return problems
