"""`evaluate`: score an earlier stage's model on evaluation suites through lm-eval; gates decide whether the
recipe goes on.

Metrics go to the stage's MLflow child run as `<suite>/<metric>`, per-sample results as MLflow tables
(`samples/<suite>.json`), lm-eval's results as `eval/results.json`. Gates are checked by the kind's `review`
against the recorded metrics, for a fresh and a cached stage alike, so they stay out of the stage's hash: changing
a threshold re-checks, it does not re-evaluate. With `register: true` and every gate passed, the model is
registered in the MLflow model registry with alias `candidate` (once per evaluated output).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from workbench.api import (
    DataFile,
    ModelPath,
    ModelSource,
    Named,
    RecipeView,
    Review,
    ReviewContext,
    StageConfig,
    StageContext,
    StageKind,
    StageRef,
    StageResult,
)
from workbench.errors import article
from workbench.export.deploy import DeploySettings

SuiteName = Annotated[str, Named("suite")]


class EvaluateStageConfig(StageConfig, ModelSource):
    """Evaluate an earlier stage's model on suites; gates decide whether the recipe goes on."""

    kind: Literal["evaluate"]
    """Stage kind."""

    from_: Annotated[str, StageRef(also=("export",))] | None = Field(default=None, alias="from")
    """The earlier stage whose model this stage evaluates: a stage that makes a model, or an export stage, whose
    GGUF file is scored through llama.cpp with the same prompts, chat template and greedy decoding."""

    model: Annotated[str, ModelPath(hash_prefix="model:", hub=False)] | None = None
    """Or: a model folder on disk to evaluate (hashed by content)."""

    suites: list[SuiteName] = []
    """Suites to run: `instruction_following`, `json_schema`, `tool_use` (from `evals/`), or any stock
    lm-eval task whose data is available locally."""

    deploy: DeploySettings | None = None
    """Measure the exported file's deploy metrics on this CPU (`deploy/decode_tokens_per_s`, `deploy/peak_rss_mb`,
    ...; see docs/export.md) with these settings; `from` must name an export stage."""

    data: dict[str, DataFile] = {}
    """Per suite, a JSONL file to use instead of the shipped data (e.g. the original IFEval JSONL for
    `instruction_following`)."""

    limit: int | None = Field(default=None, ge=1)
    """Evaluate only the first N samples of each of the suites' lm-eval tasks (for `tool_use`: of each
    BFCL category)."""

    batch_size: int = Field(default=16, ge=1)
    """Prompts generated together (left-padded batches)."""

    gates: list[str] = []
    """Conditions on this stage's metrics, e.g. `tool_use/ast_accuracy >= 0.8` or
    `json_schema/valid_rate >= eval_sft - 0.02` (no regression against another evaluate stage,
    which must be listed in `compare`). A failed gate stops the recipe."""

    compare: list[Annotated[str, StageRef(kinds=("evaluate",), hashed=False)]] = []
    """Earlier evaluate stages that relative gates compare with."""

    register_model: bool = Field(default=False, alias="register")
    """When every gate passes, register the model in the MLflow model registry with alias `candidate`."""

    registered_model: str | None = None
    """Registered model name. Default: the recipe's name."""

    # Gates, comparisons and registration act on the recorded metrics; they do not change what is measured.
    unhashed_fields = StageConfig.unhashed_fields | {"gates", "compare", "register_model", "registered_model"}
    hashed_when_set = frozenset({"deploy"})

    @model_validator(mode="after")
    def _measures_something(self) -> EvaluateStageConfig:
        if not self.suites and self.deploy is None:
            raise ValueError("give `suites` to score, `deploy` to measure an exported file, or both")
        return self

    def measured_groups(self) -> dict[str, list[str] | None]:
        """What the stage measures beyond lm-eval's suites, by gate prefix: `deploy` and its metric names."""
        from workbench.export.deploy import DEPLOY_METRICS

        return {"deploy": list(DEPLOY_METRICS)} if self.deploy is not None else {}

    @field_validator("gates")
    @classmethod
    def _parse(cls, gates: list[str]) -> list[str]:
        from workbench.evaluation.gates import parse_gate

        for gate in gates:
            parse_gate(gate)
        return gates

    def check_recipe(self, recipe: RecipeView) -> None:
        from workbench.evaluation.gates import gate_problems

        gate_problems(self.gates, self.suites, self.compare, recipe, extra=self.measured_groups())
        kind = recipe.kind_of(self.from_) if self.from_ is not None else None
        if self.deploy is not None and kind not in (None, "export"):
            recipe.problem(
                ("deploy",),
                f"deploy metrics measure a GGUF file through llama.cpp, and '{self.from_}' is "
                f"{article(kind)} {kind} stage: evaluate an export stage (kind: export, from: {self.from_})",
            )
        elif self.deploy is not None and self.model is not None:
            recipe.problem(("deploy",), "deploy metrics measure a GGUF file: take `from` an export stage, not `model`")
        for suite in self.data:
            if suite not in self.suites:
                recipe.problem(("data", suite), f"'data' names suite '{suite}', which 'suites' does not list")
            elif recipe.members("suite", suite) is None:
                ours = ", ".join(recipe.names("suite"))
                recipe.problem(
                    ("data", suite), f"'data' replaces the data of workbench's suites ({ours}), not of '{suite}'"
                )


def run(ctx: StageContext) -> StageResult:
    from workbench.evaluation.api import evaluate_gguf, evaluate_model
    from workbench.export.layout import gguf_file

    config: EvaluateStageConfig = ctx.config
    out = ctx.tmp_dir / "eval"
    data = {suite: str(ctx.resolve(path)) for suite, path in config.data.items()}
    gguf = gguf_file(ctx.inputs[config.from_]) if config.from_ is not None else None
    if gguf is not None and not ctx.is_main:
        return StageResult()  # llama.cpp scores and times the file in one process (rank 0)
    metrics: dict[str, float] = {}
    details: dict = {}
    if config.suites:
        if gguf is not None:
            ctx.console.print(f"  scoring {gguf.name} through llama.cpp")
            report = evaluate_gguf(gguf, config.suites, limit=config.limit, output_dir=out, data=data)
        else:
            report = evaluate_model(ctx.input_model(), config.suites, batch_size=config.batch_size,
                                    limit=config.limit, output_dir=out, data=data)  # fmt: skip
        if not ctx.is_main:
            return StageResult()  # rank 0 reports for every rank
        total = sum(report.counts.values())
        ctx.console.print(f"  evaluated {total} samples in {report.seconds:.1f}s")
        for metric, value in report.metrics.items():
            ctx.console.print(f"  {metric} = {value:.4f}")
        for metric in report.unmeasured:
            ctx.console.print(f"  [yellow]{metric}: no sample measured it[/]")
        _log_samples(ctx, report, out)
        details = {"counts": report.counts, "unmeasured": report.unmeasured}
        metrics = report.metrics | {"eval/samples_per_second": total / max(report.seconds, 1e-9)}
    if config.deploy is not None:
        metrics |= _measure_deploy(ctx, config, gguf)
    return StageResult(metrics=metrics, details=details)


def _measure_deploy(ctx: StageContext, config: EvaluateStageConfig, gguf) -> dict[str, float]:
    from workbench.errors import StageError
    from workbench.export.deploy import measure

    if gguf is None:
        raise StageError(f"stage '{config.name}': deploy metrics need `from` an export stage (a GGUF file)")
    settings = config.deploy
    ctx.console.print(
        f"  measuring {gguf.name} with llama.cpp on {settings.threads} threads: {settings.prompt_tokens}-token "
        f"prompt, {settings.decode_tokens} decoded tokens, median of {settings.repeats}"
    )
    measured = measure(gguf, settings)
    for metric, value in measured.items():
        ctx.console.print(f"  {metric} = {value:.2f}")
    return measured


def review(ctx: ReviewContext) -> Review:
    """Check the gates against the recorded metrics (and the compared stages'); register the model on a pass."""
    from dataclasses import asdict

    from workbench.evaluation.gates import check_gates, gate_table, parse_gate

    config: EvaluateStageConfig = ctx.config
    if not config.gates and not config.register_model:
        return Review()
    others = {name: ctx.inputs[name].metrics for name in config.compare}
    results = [asdict(r) for r in check_gates([parse_gate(g) for g in config.gates], ctx.info["metrics"], others)]
    table = gate_table(config.name, results) if results else ""
    passed = all(result["passed"] for result in results)
    details: dict = {"gates": results}
    if passed and config.register_model:
        details["registered"] = _register(ctx, config)
    return Review(report=table, halt=None if passed else table, details=details)


def _log_samples(ctx: StageContext, report, out) -> None:
    """Per-sample rows as one MLflow table per suite, and lm-eval's results JSON as an artifact."""
    client, run_id = ctx.tracker.client, ctx.tracker.run_id
    for suite, rows in report.samples.items():
        columns = list(dict.fromkeys(key for row in rows for key in row))
        client.log_table(run_id, data={key: [row.get(key) for row in rows] for key in columns},
                         artifact_file=f"samples/{suite}.json")  # fmt: skip
    ctx.tracker.log_artifact(out / "results.json", "eval")


def _register(ctx: ReviewContext, config: EvaluateStageConfig) -> dict:
    """Register the evaluated model as `candidate`, once per evaluated output (a cached stage re-checked with
    new thresholds registers only if it never was)."""
    from workbench.evaluation.registry import CANDIDATE, find_version, register_candidate

    client, run_id = ctx.tracker.client, ctx.tracker.run_id
    name = config.registered_model or ctx.project.recipe_name
    evaluated = ctx.info["hash"]
    existing = find_version(client, name, {"workbench.evaluate_hash": evaluated})
    if existing is not None:
        ctx.console.print(f"  {name} version {existing} is this evaluation's registration")
        return {"name": name, "version": existing, "alias": CANDIDATE, "existing": True}
    if config.from_ is not None:
        from workbench.export.layout import gguf_file

        source = ctx.inputs[config.from_]
        gguf = gguf_file(source)
        model_dir = gguf.parent if gguf is not None else source.model_dir
        tags = {"workbench.stage": config.name, "workbench.model_stage": source.name,
                "workbench.model_stage_hash": str(source.info.get("hash"))}  # fmt: skip
    else:
        model_dir = ctx.project.resolve(config.model)
        tags = {"workbench.stage": config.name, "workbench.model_path": str(model_dir)}
    model_id = ctx.inputs[config.from_].info.get("mlflow_model_id") if config.from_ is not None else None
    tags |= {"workbench.evaluate_hash": evaluated} | ({"workbench.logged_model_id": model_id} if model_id else {})
    version = register_candidate(client, name, run_id, str(model_dir), tags, model_id=model_id)
    ctx.console.print(f"  registered {name} version {version} as '{CANDIDATE}'")
    return {"name": name, "version": version, "alias": CANDIDATE}


KIND = StageKind(
    name="evaluate",
    config=EvaluateStageConfig,
    run=run,
    makes_model=False,
    distributed=True,
    same_on_any_world_size=True,
    scores=True,
    review=review,
    summary="score a model on evaluation suites through lm-eval; gates stop the recipe or register the model",
)
