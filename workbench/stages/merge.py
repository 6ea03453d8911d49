"""`merge`: merge earlier stages' models (or folders / hub ids) with mergekit, optionally sweeping a grid of
methods and parameters and keeping the candidate that scores best (the work is in `workbench.merging.candidates`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from workbench.api import Named, RecipeView, StageConfig, StageContext, StageKind, StageName, StageResult
from workbench.merging.config import CandidateInputs, MergeInput, SelectSpec


class MergeStageConfig(StageConfig):
    """Merge models with mergekit (every mergekit method); a grid of methods/parameters is a sweep."""

    kind: Literal["merge"]
    """Stage kind."""

    template: Annotated[str, Named("merge_template")] | None = None
    """A mergekit template in `merges/` by name (`merges/<name>.yaml`); the stage's own fields override it."""

    method: str | list[str] | None = None
    """mergekit merge method (linear, slerp, ties, dare_ties, della, model_stock, ...); a list sweeps them."""

    base: StageName | MergeInput | None = None
    """The base model (task-vector methods, slerp): an earlier stage's name, or `{model: path}`."""

    models: list[StageName | MergeInput] | CandidateInputs
    """The models to merge: earlier stages by name, or `{from: stage | model: path, parameters: {...}}`; or the
    candidates of a swept stage, `{candidates_of: sft}` (all of them) or `{candidates_of: sft, top_k: 2, by: {...}}`
    (the best two by a score)."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    """mergekit parameters for the whole merge (e.g. `t`, `density`, `normalize`); lists are mergekit layer
    gradients, `{sweep: [a, b]}` sweeps over values."""

    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """dtype the merge arithmetic runs in. Default: mergekit's (the inputs')."""

    out_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """dtype of the written weights. Default: `dtype`."""

    tokenizer_source: str | None = None
    """Allow inputs with different tokenizers, building the output's from `union`, `base` or one input (by
    its name); mergekit re-maps the embeddings. Unset: differing tokenizers are an error."""

    chat_template: str | None = None
    """Allow inputs with different chat templates and give the output's: `auto` (the most common), a
    mergekit built-in name, or a Jinja template. Unset: differing templates are an error."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Seed for randomized methods (dare_*, della*). Default: the recipe's seed."""

    select: SelectSpec | None = None
    """How to score candidates and pick the output; required when anything is swept."""

    def model_inputs(self) -> list[MergeInput]:
        """`models:` with bare stage names as entries without parameters; `candidates_of` as one entry standing for
        every candidate (what checks need: their parameters, their stage)."""
        if isinstance(self.models, CandidateInputs):
            return self.models.inputs([self.models.candidates_of])
        return [MergeInput(**{"from": e}) if isinstance(e, str) else e for e in self.models]

    def base_input(self) -> MergeInput | None:
        return MergeInput(**{"from": self.base}) if isinstance(self.base, str) else self.base

    @model_validator(mode="after")
    def _consistent(self) -> MergeStageConfig:
        from workbench.merging.config import input_problems

        if isinstance(self.models, list) and not self.models:
            raise ValueError("`models` needs at least one model")
        if self.method is None and self.template is None:
            raise ValueError("give `method` (a mergekit merge method) or `template` (a file in merges/)")
        methods = None if self.method is None else self.method if isinstance(self.method, list) else [self.method]
        problems = input_problems(
            methods, self.parameters, self.model_inputs(), self.base_input(), self.tokenizer_source
        )
        swept = self.models.candidates_of if isinstance(self.models, CandidateInputs) else None
        if swept is not None and self.tokenizer_source == swept:
            # which candidates are merged is known only once they are scored: none can be named up front
            problems.append(f"tokenizer_source '{swept}' stands for several candidates: use union or base")
        if problems:
            raise ValueError("; ".join(problems))
        count = self.candidate_count()
        if count > 1 and self.select is None:
            raise ValueError(f"this merge sweeps {count} candidates: add `select` to choose among them")
        return self

    def check_recipe(self, recipe: RecipeView) -> None:
        from workbench.merging.checks import architecture_problems, selection_problems, template_fit_problems

        for path, message in template_fit_problems(self, recipe.root):
            recipe.problem(path, message)
        if self.select is not None:
            selection_problems(self.select, recipe)
        inputs = [*([self.base_input()] if self.base is not None else []), *self.model_inputs()]
        stages = [entry.from_ for entry in inputs if entry.from_]
        if isinstance(self.models, CandidateInputs):
            candidates = recipe.candidates(self.models.candidates_of) or []
            stages = [
                name for stage in stages for name in (candidates if stage == self.models.candidates_of else [stage])
            ]
            if self.models.by is not None:
                selection_problems(self.models.by, recipe, ("models", "by"))
            if candidates and self.models.top_k is not None and self.models.top_k > len(candidates):
                recipe.problem(
                    ("models", "top_k"),
                    f"top_k {self.models.top_k}: '{self.models.candidates_of}' has {len(candidates)} candidates",
                )
        for message in architecture_problems(stages, recipe):
            recipe.problem(("models",), message)

    def candidate_count(self) -> int:
        """Candidates of the stage's own sweep (a template's sweep is known only when the stage runs)."""
        from workbench.merging.sweep import grid_size

        methods = self.method if isinstance(self.method, list) else [self.method]
        return grid_size(methods, [self.parameters, *(e.parameters for e in self.model_inputs())])


def run(ctx: StageContext) -> StageResult:
    from workbench.errors import StageError
    from workbench.merging.candidates import merge_candidates
    from workbench.merging.spec import SETTING_KEYS, load_template, resolve_spec

    config: MergeStageConfig = ctx.config
    try:
        template = load_template(config.template, ctx.project.root) if config.template else {}
        settings = {key: getattr(config, key) for key in SETTING_KEYS}
        spec = resolve_spec(template, config.method, config.parameters, settings)
        if not isinstance(config.models, CandidateInputs):
            return merge_candidates(ctx, spec, config.model_inputs(), config.base_input(), config.select)
        from workbench.merging.pick import pick_candidates

        picked = pick_candidates(ctx, config.models)
        result = merge_candidates(ctx, spec, picked.inputs, config.base_input(), config.select, picked.held_out)
        result.details["inputs_of"] = picked.details
        return result
    except StageError as error:
        raise StageError(f"stage '{config.name}': {error}") from None


KIND = StageKind(
    name="merge",
    config=MergeStageConfig,
    run=run,
    summary="merge models with mergekit (every method), with compatibility checks and scored sweeps",
)
