"""`merge`: merge earlier stages' models (or folders / hub ids) with mergekit, optionally sweeping a grid of
methods and parameters and keeping the candidate that scores best."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from workbench.api import (
    DataFile,
    ModelPath,
    Named,
    RecipeView,
    StageConfig,
    StageContext,
    StageKind,
    StageName,
    StageRef,
    StageResult,
    StrictModel,
)

if TYPE_CHECKING:
    from workbench.merging.engine import ResolvedInput
    from workbench.merging.select import Scored
    from workbench.merging.sweep import Candidate
    from workbench.tracking import StageTracker


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

    data: DataFile | None = None
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

    models: list[StageName | MergeInput] = Field(min_length=1)
    """The models to merge: earlier stages by name, or `{from: stage | model: path, parameters: {...}}`."""

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

    seed: int | None = None
    """Seed for randomized methods (dare_*, della*). Default: the recipe's seed."""

    select: SelectSpec | None = None
    """How to score candidates and pick the output; required when anything is swept."""

    def model_inputs(self) -> list[MergeInput]:
        """`models:` with bare stage names as entries without parameters."""
        return [MergeInput(**{"from": e}) if isinstance(e, str) else e for e in self.models]

    def base_input(self) -> MergeInput | None:
        return MergeInput(**{"from": self.base}) if isinstance(self.base, str) else self.base

    @model_validator(mode="after")
    def _consistent(self) -> MergeStageConfig:
        from workbench.merging.sweep import sweep_problems

        if self.method is None and self.template is None:
            raise ValueError("give `method` (a mergekit merge method) or `template` (a file in merges/)")
        inputs = self.model_inputs()
        problems = sweep_problems(self.parameters, "parameters")
        for index, entry in enumerate(inputs):
            problems += sweep_problems(entry.parameters, f"models[{index}].parameters")
        if self.method is not None:
            problems += self._method_problems(inputs)
        labels = {entry.label for entry in inputs} | ({self.base_input().label} if self.base else set())
        if self.tokenizer_source not in (None, "union", "base", *labels):
            problems.append(f"tokenizer_source '{self.tokenizer_source}' is not union, base or one of the inputs")
        if problems:
            raise ValueError("; ".join(problems))
        count = self.candidate_count()
        if count > 1 and self.select is None:
            raise ValueError(f"this merge sweeps {count} candidates: add `select` to choose among them")
        return self

    def _method_problems(self, inputs: list[MergeInput]) -> list[str]:
        from workbench.merging.methods import base_problems, method_problems

        methods = self.method if isinstance(self.method, list) else [self.method]
        problems = method_problems(methods, self.parameters, {f"model '{e.label}'": e.parameters for e in inputs})
        if problems and problems[0].startswith("unknown merge method"):
            return problems
        return problems + base_problems(methods, self.base is not None)

    def check_recipe(self, recipe: RecipeView) -> None:
        from workbench.merging.checks import architecture_problems, selection_problems, template_fit_problems

        for path, message in template_fit_problems(self, recipe.root):
            recipe.problem(path, message)
        if self.select is not None:
            selection_problems(self.select, recipe)
        inputs = [*([self.base_input()] if self.base is not None else []), *self.model_inputs()]
        for message in architecture_problems([entry.from_ for entry in inputs if entry.from_], recipe):
            recipe.problem(("models",), message)

    def candidate_count(self) -> int:
        from workbench.merging.sweep import is_sweep

        count = len(self.method) if isinstance(self.method, list) else 1
        for params in [self.parameters, *(e.parameters for e in self.model_inputs())]:
            for value in params.values():
                count *= len(value["sweep"]) if is_sweep(value) else 1
        return count


def run(ctx: StageContext) -> StageResult:
    from workbench.errors import StageError
    from workbench.merging.compat import check_compatible, read_facts
    from workbench.merging.spec import load_template, resolve_spec
    from workbench.merging.sweep import expand_grid

    config: MergeStageConfig = ctx.config
    try:
        template = load_template(config.template, ctx.loaded.root) if config.template else {}
        settings = {key: getattr(config, key) for key in ("dtype", "out_dtype", "tokenizer_source", "chat_template")}
        spec = resolve_spec(template, config.method, config.parameters, settings)
        inputs = config.model_inputs()
        _check_methods(spec, inputs, config.base is not None)
        base = _resolve(ctx, config.base_input()) if config.base is not None else None
        models = [_resolve(ctx, entry) for entry in inputs]
        distinct = list({item.label: item for item in [*([base] if base else []), *models]}.values())
        check_compatible(
            [read_facts(item.label, item.path) for item in distinct],
            allow_tokenizer_mismatch=spec.settings["tokenizer_source"] is not None,
            allow_chat_template_mismatch=spec.settings["chat_template"] is not None,
        )
        candidates = expand_grid(
            spec.methods, spec.parameters, [e.parameters for e in inputs], [e.label for e in inputs]
        )
        # a template may sweep too: only now, with the template resolved, is the grid known
        if not candidates:
            raise StageError("the sweep is empty: every swept value needs at least one entry")
        if len(candidates) > 1 and config.select is None:
            raise StageError(f"{len(candidates)} candidates (the template sweeps): add 'select' to pick one")
        if config.select is not None:
            _check_select_data(ctx, config.select)
        ctx.console.print(f"  inputs compatible: {', '.join(item.label for item in distinct)}")
        outcome = _merge_candidates(ctx, candidates, spec, base, models, distinct)
    except StageError as error:
        raise StageError(f"stage '{config.name}': {error}") from None
    return StageResult(metrics=outcome["metrics"], details=outcome["details"])


def _check_methods(spec, inputs: list[MergeInput], has_base: bool) -> None:
    """Template-provided methods and parameters get the checks the recipe loader gives the stage's own."""
    from workbench.errors import StageError
    from workbench.merging.methods import base_problems, method_problems

    problems = method_problems(spec.methods, spec.parameters, {f"model '{e.label}'": e.parameters for e in inputs})
    problems = problems or base_problems(spec.methods, has_base)
    if problems:
        raise StageError(problems[0])


def _resolve(ctx: StageContext, entry: MergeInput) -> ResolvedInput:
    from workbench.merging.engine import ResolvedInput, resolve_model

    if entry.from_ is not None:
        source = ctx.inputs[entry.from_]
        return ResolvedInput(entry.from_, source.model_dir, source.info.get("hash"))
    return ResolvedInput(entry.model, resolve_model(entry.model, ctx.loaded.root))


def _check_select_data(ctx: StageContext, select: SelectSpec) -> None:
    from workbench.errors import StageError

    if select.data is not None and not ctx.resolve(select.data).exists():
        raise StageError(f"select.data: file not found: '{select.data}'")
    for name in select.compare:
        if ctx.inputs[name].info.get("kind") != "evaluate":
            raise StageError(f"select.compare names '{name}', which is not an evaluate stage")


def _compared_metrics(ctx: StageContext, select: SelectSpec) -> dict[str, dict[str, float]]:
    """The metrics of the stages in `select.compare`, from their stage.json."""
    return {name: ctx.inputs[name].info.get("metrics", {}) for name in select.compare}


def _merge_candidates(ctx, candidates: list[Candidate], spec, base, models, distinct) -> dict[str, Any]:
    """Merge each candidate (straight into the output when there is nothing to choose), score, pick, card."""
    from workbench.merging.card import input_rows, write_card

    config: MergeStageConfig = ctx.config
    select = config.select
    shutil.rmtree(ctx.tmp_dir / "candidates", ignore_errors=True)
    shutil.rmtree(ctx.model_dir, ignore_errors=True)
    merged = [_merge_one(ctx, candidate, spec, base, models) for candidate in candidates]
    metrics: dict[str, float] = {"merge/candidates": float(len(candidates))}
    chosen, selection = 0, None
    if select is not None:
        from workbench.merging.select import pick_best

        best = pick_best([m.scored for m in merged], select.metric, select.direction)
        chosen = best.index
        merged[chosen].folder.rename(ctx.model_dir)
        shutil.rmtree(ctx.tmp_dir / "candidates")
        metrics |= {f"select/{name}": value for name, value in best.metrics.items()}
        value = best.metrics[select.metric]
        ctx.console.print(f"  selected candidate {chosen}: {candidates[chosen].label} ({select.metric} {value:.4f})")
    rows = [m.row | {"selected": m.row["candidate"] == chosen} for m in merged]
    _log_table(ctx, rows)
    if select is not None:
        selection = (
            {"metric": select.metric} | select.model_dump(mode="json", exclude_defaults=True) | {"candidates": rows}
        )
    write_card(ctx.model_dir, config.name, merged[chosen].config, distinct, selection)
    details = {
        "method": candidates[chosen].method,
        "choices": candidates[chosen].choices,
        "selected_candidate": chosen,
        "candidates": rows,
        "inputs": input_rows(distinct),
    }
    return {"metrics": metrics, "details": details}


@dataclass
class _Merged:
    folder: Path
    config: dict[str, Any]
    """The mergekit config the candidate was merged with."""
    row: dict[str, Any]
    """Its line in the candidates table."""
    scored: Scored | None


def _merge_one(ctx: StageContext, candidate: Candidate, spec, base, models) -> _Merged:
    """Merge one candidate into its folder and, when selecting, score it; inside its nested MLflow run."""
    from workbench.merging.engine import mergekit_config, run_mergekit

    select = ctx.config.select
    folder = ctx.model_dir if select is None else ctx.tmp_dir / "candidates" / f"{candidate.index:03d}"
    shared, per_model, ignored = _applicable(candidate)
    config = mergekit_config(candidate.method, shared, list(zip(models, per_model, strict=True)), base, spec.settings)
    row = {"candidate": candidate.index, "method": candidate.method, **candidate.choices}
    if ignored:
        row["ignored_parameters"] = ", ".join(ignored)
        ctx.console.print(f"  [yellow]{candidate.method} does not take {', '.join(ignored)}: not passed[/]")
    ctx.console.print(f"  merging candidate {candidate.index}: {candidate.label}")
    scored = None
    with _candidate_run(ctx, candidate) as run:
        pruning = run_mergekit(config, folder, seed=ctx.seed)
        if pruning.index_order_ties:
            # Equal magnitudes straddled the pruning cut in a large tensor: kept by index, not mergekit's sort order.
            row["ties_kept_in_index_order"] = pruning.index_order_ties
            ctx.console.print(
                f"  {pruning.index_order_ties} pruned tensor(s) kept equal magnitudes at the cut in index order"
            )
        if select is not None:
            scored = _score(ctx, candidate.index, folder, select)
            row |= scored.metrics | {"violations": "; ".join(scored.violations)}
        if run is not None:
            run.log_params({"method": candidate.method} | {k: str(v) for k, v in candidate.choices.items()})
            run.log_metrics(scored.metrics if scored else {})
            run.log_dict(config, "mergekit_config.json")
    return _Merged(folder, config, row, scored)


def _applicable(candidate: Candidate) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The shared and per-model parameters this candidate's method takes, and the names left out: in a method
    sweep, a parameter only some of the methods take reaches only those (mergekit would ignore it silently)."""
    from workbench.merging.methods import merge_methods

    info = merge_methods()[candidate.method]
    shared = {k: v for k, v in candidate.parameters.items() if k in info.shared | info.per_model}
    per_model = [{k: v for k, v in own.items() if k in info.per_model} for own in candidate.model_parameters]
    ignored = set(candidate.parameters) - set(shared)
    for own, kept in zip(candidate.model_parameters, per_model, strict=True):
        ignored |= set(own) - set(kept)
    return shared, per_model, sorted(ignored)


def _score(ctx: StageContext, index: int, folder: Path, select: SelectSpec) -> Scored:
    from workbench.merging.select import Scored, gate_violations, held_out_loss, suite_metrics

    if select.metric == "eval_loss":
        loss, counts = held_out_loss(folder, ctx.resolve(select.data), select.data, select.max_length)
        metrics = {"eval_loss": loss} | counts
    else:
        metrics = suite_metrics(folder, select.suite, select.limit, select.batch_size)
    violations = gate_violations(select.constraints, metrics, _compared_metrics(ctx, select))
    if select.metric not in metrics:
        violations.append(f"{select.metric} was not reported by suite '{select.suite}'")
    ctx.console.print(f"  candidate {index}: {select.metric} = {metrics.get(select.metric, float('nan')):.4f}")
    return Scored(index, metrics, violations)


@contextmanager
def _candidate_run(ctx: StageContext, candidate: Candidate) -> Iterator[StageTracker | None]:
    """A nested MLflow run under the stage's run for one sweep candidate (none for a plain merge)."""
    from workbench.tracking import StageTracker

    config: MergeStageConfig = ctx.config
    if config.select is None:
        yield None
        return
    client, parent = ctx.tracker.client, ctx.tracker.run_id
    tags = {
        "mlflow.parentRunId": parent,
        "workbench.stage": config.name,
        "workbench.kind": "merge-candidate",
        "workbench.candidate": str(candidate.index),
    }
    experiment = client.get_run(parent).info.experiment_id
    run_id = client.create_run(experiment, run_name=f"{config.name}/candidate-{candidate.index}", tags=tags).info.run_id
    status = "FAILED"
    try:
        yield StageTracker(client, run_id)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status=status)


def _log_table(ctx: StageContext, rows: list[dict[str, Any]]) -> None:
    """The candidates and their scores as JSON and CSV artifacts of the stage run."""
    import csv
    import io

    ctx.tracker.log_dict(rows, "merge/candidates.json")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    ctx.tracker.log_text(buffer.getvalue(), "merge/candidates.csv")


KIND = StageKind(
    name="merge",
    config=MergeStageConfig,
    run=run,
    summary="merge models with mergekit (every method), with compatibility checks and scored sweeps",
)
