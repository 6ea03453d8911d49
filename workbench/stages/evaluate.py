"""`evaluate`: score an earlier stage's model on evaluation suites through lm-eval, then apply gates.

Metrics go to the stage's MLflow child run as `<suite>/<metric>`, per-sample results as MLflow
tables (`samples/<suite>.json`), lm-eval's results as `eval/results.json`. Gate results are
reported in `stage.json`'s details; the runner stops the recipe when one failed. With
`register: true` and every gate passed, the model is registered in the MLflow model registry
with alias `candidate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from workbench.recipe.schema import StageConfig
from workbench.stages.registry import StageKind, register

if TYPE_CHECKING:
    from workbench.runner.context import StageContext, StageResult


class EvaluateStageConfig(StageConfig):
    """Evaluate an earlier stage's model on suites; gates decide whether the recipe goes on."""

    kind: Literal["evaluate"]
    """Stage kind."""

    from_: str | None = Field(default=None, alias="from")
    """The earlier stage whose model is evaluated."""

    model: str | None = None
    """Or: a model folder on disk to evaluate (hashed by content)."""

    suites: list[str] = Field(min_length=1)
    """Suites to run: `instruction_following`, `json_schema`, `tool_use` (from `evals/`), or any stock
    lm-eval task whose data is available locally."""

    data: dict[str, str] = {}
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

    compare: list[str] = []
    """Earlier evaluate stages that relative gates compare with."""

    register_model: bool = Field(default=False, alias="register")
    """When every gate passes, register the model in the MLflow model registry with alias `candidate`."""

    registered_model: str | None = None
    """Registered model name. Default: the recipe's name."""

    stage_ref_fields = ("from_", "compare")
    # Gates and registration stay in the hash: a cached stage's recorded gate results must match its config.

    def data_files(self) -> list[tuple[str, str]]:
        """The `data` overrides and our suites' definitions (task YAML, scoring code, data in `evals/`), so
        editing a suite re-runs the evaluations that used it."""
        from workbench.evaluation.tasks import REPO_EVALS

        ours = [("suites", str(REPO_EVALS / suite)) for suite in self.suites if (REPO_EVALS / suite).is_dir()]
        return [("data", path) for path in self.data.values()] + ours

    @field_validator("gates")
    @classmethod
    def _parse(cls, gates: list[str]) -> list[str]:
        from workbench.evaluation.gates import parse_gate

        for gate in gates:
            parse_gate(gate)
        return gates

    @model_validator(mode="after")
    def _gates_fit(self) -> EvaluateStageConfig:
        from workbench.evaluation.gates import parse_gate

        if (self.from_ is None) == (self.model is None):
            raise ValueError("give exactly one of 'from' (an earlier stage) or 'model' (a model folder)")
        for gate in map(parse_gate, self.gates):
            if gate.suite not in self.suites:
                raise ValueError(f"gate {gate.text!r} uses suite '{gate.suite}', which 'suites' does not list")
            if gate.stage is not None and gate.stage not in self.compare:
                raise ValueError(f"gate {gate.text!r} compares with stage '{gate.stage}': list it in 'compare'")
        unknown = sorted(set(self.data) - set(self.suites))
        if unknown:
            raise ValueError(f"'data' names suite '{unknown[0]}', which 'suites' does not list")
        return self


def run(ctx: StageContext) -> StageResult:
    from dataclasses import asdict

    from workbench.errors import StageError
    from workbench.evaluation.api import evaluate_model
    from workbench.evaluation.gates import check_gates, parse_gate
    from workbench.runner.context import StageResult

    config: EvaluateStageConfig = ctx.config
    data = {suite: ctx.resolve(path) for suite, path in config.data.items()}
    for suite, path in data.items():
        if not path.is_file():
            raise StageError(f"stage '{config.name}': data for suite '{suite}' not found: {path}")
    for name in config.compare:
        if ctx.inputs[name].info.get("kind") != "evaluate":
            raise StageError(f"stage '{config.name}': 'compare' names '{name}', which is not an evaluate stage")
    out = ctx.tmp_dir / "eval"
    report = evaluate_model(
        ctx.input_model(), config.suites, batch_size=config.batch_size, limit=config.limit,
        output_dir=out, data={suite: str(path) for suite, path in data.items()},
    )  # fmt: skip
    total = sum(report.counts.values())
    ctx.console.print(f"  evaluated {total} samples in {report.seconds:.1f}s")
    for metric, value in report.metrics.items():
        ctx.console.print(f"  {metric} = {value:.4f}")
    for metric in report.unmeasured:
        ctx.console.print(f"  [yellow]{metric}: no sample measured it[/]")
    _log_samples(ctx, report, out)
    others = {name: ctx.inputs[name].info.get("metrics", {}) for name in config.compare}
    gates = [asdict(result) for result in check_gates([parse_gate(g) for g in config.gates], report.metrics, others)]
    details = {"counts": report.counts, "unmeasured": report.unmeasured, "gates": gates}
    if config.register_model and all(gate["passed"] for gate in gates):
        details["registered"] = _register(ctx, config)
    metrics = report.metrics | {"eval/samples_per_second": total / max(report.seconds, 1e-9)}
    return StageResult(metrics=metrics, details=details)


def _log_samples(ctx: StageContext, report, out) -> None:
    """Per-sample rows as one MLflow table per suite, and lm-eval's results JSON as an artifact."""
    client, run_id = ctx.tracker.client, ctx.tracker.run_id
    for suite, rows in report.samples.items():
        columns = list(dict.fromkeys(key for row in rows for key in row))
        client.log_table(run_id, data={key: [row.get(key) for row in rows] for key in columns},
                         artifact_file=f"samples/{suite}.json")  # fmt: skip
    ctx.tracker.log_artifact(out / "results.json", "eval")


def _register(ctx: StageContext, config: EvaluateStageConfig) -> dict:
    from pathlib import Path

    from workbench.evaluation.registry import CANDIDATE, register_candidate

    client, run_id = ctx.tracker.client, ctx.tracker.run_id
    model_dir = Path(ctx.input_model())  # a local folder: evaluate_model has already read it
    client.log_artifacts(run_id, str(model_dir), "model")
    name = config.registered_model or ctx.loaded.recipe.name
    if config.from_ is not None:
        source = ctx.inputs[config.from_]
        tags = {"workbench.stage": config.name, "workbench.model_stage": source.name,
                "workbench.model_stage_hash": str(source.info.get("hash"))}  # fmt: skip
    else:
        tags = {"workbench.stage": config.name, "workbench.model_path": str(model_dir)}
    version = register_candidate(client, name, run_id, "model", tags)
    ctx.console.print(f"  registered {name} version {version} as '{CANDIDATE}'")
    return {"name": name, "version": version, "alias": CANDIDATE}


register(
    StageKind(
        name="evaluate",
        config=EvaluateStageConfig,
        run=run,
        summary="score a model on evaluation suites through lm-eval; gates stop the recipe or register the model",
    )
)
