"""Evaluate a model folder on workbench's suites (and stock lm-eval tasks) through lm-eval's Python API.

One call: the HF backend on the local folder, batched greedy generation, the model's own chat
template (the recipe pins it into every stage's model folder), our task definitions from `evals/`
through `TaskManager(include_path=...)`. Metric names are stable, `<suite>/<metric>`
(`tool_use/ast_accuracy`), so runs chart side by side in MLflow.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import StageError
from workbench.evaluation.tasks import REPO_EVALS

SUITES = ("instruction_following", "json_schema", "tool_use")
# The metric each suite's per-sample `score` column shows.
PRIMARY_METRIC = {"instruction_following": "prompt_strict_acc", "json_schema": "valid_rate", "tool_use": "ast_accuracy"}
# Fields of a suite's lm-eval doc that make up the `expected` column of its per-sample table.
EXPECTED_FIELDS = {
    "instruction_following": ("instruction_id_list", "kwargs_json"),
    "json_schema": ("gold_json", "schema_json"),
    "tool_use": ("category", "calls_json"),
}


@dataclass
class EvalReport:
    """What one evaluation produced."""

    metrics: dict[str, float]
    """`<suite>/<metric>` -> value, e.g. `json_schema/valid_rate`. Metrics no sample measured are left out."""
    samples: dict[str, list[dict[str, Any]]]
    """Per suite, one row per sample: doc_id, prompt, output, expected, score and every per-sample metric."""
    raw: dict[str, Any]
    """lm-eval's results dict (JSON-serialisable; per-sample logs are in `samples`)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Samples evaluated per suite."""
    unmeasured: list[str] = field(default_factory=list)
    """Metrics with no applicable sample (e.g. a BFCL category cut off by `limit`)."""
    seconds: float = 0.0
    """Wall time of the evaluation."""


def evaluate_model(
    model_dir: Path | str,
    suites: list[str],
    *,
    batch_size: int = 8,
    limit: int | None = None,
    output_dir: Path | None = None,
    data: dict[str, str] | None = None,
    device: str | None = None,
) -> EvalReport:
    """Run `suites` (workbench suites or stock lm-eval task names) on the model in `model_dir`.

    `data` maps a suite to a JSONL file used instead of its shipped data (e.g. the original IFEval
    JSONL for `instruction_following`). With `output_dir`, writes `results.json` and one
    `samples_<suite>.jsonl` per suite there (atomically).
    """
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from workbench.evaluation.ifeval import ensure_punkt_tab

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise StageError(f"no model folder at {model_dir} (config.json missing)")
    ensure_punkt_tab()
    manager = TaskManager(include_path=str(REPO_EVALS), metadata={"data_overrides": dict(data or {})})
    unknown = [name for name in suites if name not in manager.all_tasks]
    if unknown:
        raise StageError(f"unknown evaluation suite or lm-eval task '{unknown[0]}' (workbench suites: {', '.join(SUITES)})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = HFLM(pretrained=str(model_dir), batch_size=batch_size, device=device, dtype="float32",
                 trust_remote_code=False)  # fmt: skip
    started = time.time()
    results = simple_evaluate(
        model=model, tasks=list(suites), task_manager=manager, limit=limit, apply_chat_template=True,
        log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
    )  # fmt: skip
    seconds = time.time() - started
    report = _report(results, suites, seconds)
    if output_dir is not None:
        write_report(report, Path(output_dir))
    return report


def _report(results: dict, suites: list[str], seconds: float) -> EvalReport:
    from lm_eval.utils import handle_non_serializable

    metrics, unmeasured = {}, []
    for task, values in results["results"].items():
        for key, value in values.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or name.endswith("_stderr") or not isinstance(value, int | float):
                continue
            metric = f"{task}/{name}" if filter_name == "none" else f"{task}/{name}_{filter_name}"
            if isinstance(value, float) and math.isnan(value):
                unmeasured.append(metric)
            else:
                metrics[metric] = float(value)
    samples = {task: [_row(task, sample) for sample in logged] for task, logged in results.get("samples", {}).items()}
    raw = json.loads(json.dumps({k: v for k, v in results.items() if k != "samples"}, default=handle_non_serializable))
    counts = {task: len(rows) for task, rows in samples.items()}
    return EvalReport(metrics, samples, raw, counts, sorted(unmeasured), seconds)


def _row(task: str, sample: dict) -> dict[str, Any]:
    doc = sample["doc"]
    output = sample["filtered_resps"][0] if sample.get("filtered_resps") else ""
    fields = [name for name in EXPECTED_FIELDS.get(task, ()) if name in doc]
    # Nested fields travel as JSON strings (see tasks.py); decode them so the table shows plain JSON.
    expected = {
        name.removesuffix("_json"): json.loads(doc[name]) if name.endswith("_json") else doc[name] for name in fields
    } or sample.get("target")
    row = {
        "doc_id": sample["doc_id"],
        "prompt": sample["arguments"][0][0] if sample.get("arguments") else "",
        "output": output if isinstance(output, str) else json.dumps(output),
        "expected": json.dumps(expected, default=str),
    }
    for metric in sample.get("metrics", []):
        value = sample.get(metric)
        row[metric] = json.dumps(value) if isinstance(value, list) else value
    primary = PRIMARY_METRIC.get(task)
    row["score"] = float(row[primary]) if primary and row.get(primary) is not None else None
    return row


def write_report(report: EvalReport, output_dir: Path) -> None:
    """`results.json` (lm-eval's results plus our metric names) and `samples_<suite>.jsonl`."""
    from workbench.runner.store import write_json_atomic

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "results.json", {"metrics": report.metrics, "lm_eval": report.raw})
    for suite, rows in report.samples.items():
        tmp = output_dir / f".samples_{suite}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows), encoding="utf-8")
        tmp.replace(output_dir / f"samples_{suite}.jsonl")
