"""Evaluate a model folder on workbench's suites (and stock lm-eval tasks) through lm-eval's Python API.

One call: the HF backend on the local folder, batched greedy generation, the model's own chat
template (the recipe pins it into every stage's model folder), our task definitions from `evals/`
through `TaskManager(include_path=...)`. Each workbench suite is an lm-eval group (`tool_use`: one task
per BFCL category); its metrics are the group's, averaged over all of the suite's samples
(`weight_by_size`), and its per-sample rows are gathered from its tasks. Metric names are stable,
`<suite>/<metric>` (`tool_use/ast_accuracy`), so runs chart side by side in MLflow.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import StageError
from workbench.evaluation.tasks import CATEGORIES, REPO_EVALS

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
    """Per suite, one row per sample: task (the suite's lm-eval task it came from), doc_id (within that task),
    prompt, output, expected, score and every per-sample metric."""
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
    from lm_eval.models.huggingface import HFLM

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise StageError(f"no model folder at {model_dir} (config.json missing)")
    manager = task_manager(suites, data)
    accelerator = _data_parallel()
    if accelerator is not None:
        device = str(accelerator.device)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = HFLM(pretrained=str(model_dir), batch_size=batch_size, device=device, dtype="float32",
                 trust_remote_code=False)  # fmt: skip
    if accelerator is not None:
        # lm-eval shards requests by `rank` and gathers answers and samples on rank 0, but sets up data parallelism
        # itself only on several GPUs of one node; give it the launched process group on any device, any node
        model.accelerator, model._rank, model._world_size = (
            accelerator,
            accelerator.process_index,
            accelerator.num_processes,
        )
    return evaluate_lm(model, suites, manager, limit=limit, output_dir=output_dir, data=data)


def _data_parallel():
    """The Accelerator of the process group a launcher set up (torchrun's WORLD_SIZE > 1), else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def evaluate_gguf(
    path: Path | str,
    suites: list[str],
    *,
    threads: int = 2,
    limit: int | None = None,
    output_dir: Path | None = None,
    data: dict[str, str] | None = None,
) -> EvalReport:
    """Run `suites` on a GGUF file through llama.cpp (`workbench.export.gguf_lm`): the same tasks, prompts, chat
    template and greedy decoding as `evaluate_model`, so the two reports compare metric by metric."""
    from workbench.export.gguf_lm import GGUFLM
    from workbench.export.stack import require

    require()
    manager = task_manager(suites, data)
    model = GGUFLM(path, threads=threads)
    try:
        return evaluate_lm(model, suites, manager, limit=limit, output_dir=output_dir, data=data)
    finally:
        model.close()


def task_manager(suites: list[str], data: dict[str, str] | None = None):
    """lm-eval's TaskManager over `evals/` (and the stock tasks) with the suites' data overrides;
    a name it does not know is an error."""
    manager = _indexed_tasks(tuple(sorted((data or {}).items())))
    unknown = [name for name in suites if name not in manager.all_tasks]
    if unknown:
        raise StageError(
            f"unknown evaluation suite or lm-eval task '{unknown[0]}' (workbench suites: {', '.join(SUITES)})"
        )
    return manager


@functools.cache
def _indexed_tasks(overrides: tuple[tuple[str, str], ...]):
    """TaskManager indexes every lm-eval task (~4 s); build it once per process and set of data overrides, so a
    merge sweep scoring several candidates, or a recipe with several evaluate stages, pays for it once."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(REPO_EVALS), metadata={"data_overrides": dict(overrides)})


def evaluate_lm(
    model,
    suites: list[str],
    manager,
    *,
    limit: int | None = None,
    output_dir: Path | None = None,
    data: dict[str, str] | None = None,
) -> EvalReport:
    """Run `suites` with any lm-eval LM (`evaluate_model` passes HFLM on a model folder) through
    `manager` (from `task_manager`, with the same `data`), prompts in the model's chat template."""
    from lm_eval import evaluator, simple_evaluate

    from workbench.evaluation.ifeval import ensure_punkt_tab

    ensure_punkt_tab()
    # lm-eval runs `git describe` with stderr inherited: outside a repository every evaluation would print
    # "fatal: not a git repository". Ask git quietly; the result (or None) is the same.
    evaluator.get_git_commit_hash = _quiet_git_commit
    for logger, noise in ((logging.getLogger("lm_eval.api.group"), _CATEGORY_FILTER),
                          (logging.getLogger("lm_eval.evaluator_utils"), _CATEGORY_FILTER),
                          (logging.getLogger("lm_eval.api.task"), _CUSTOM_KWARGS_FILTER)):  # fmt: skip
        if noise not in logger.filters:
            logger.addFilter(noise)
    specs, unmeasured = list(suites), []
    if "tool_use" in suites:
        specs[suites.index("tool_use")], unmeasured = _tool_use_group(manager, data)
    started = time.time()
    results = simple_evaluate(
        model=model, tasks=specs, task_manager=manager, limit=limit, apply_chat_template=True,
        log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
    )  # fmt: skip
    seconds = time.time() - started
    if results is None:  # a data-parallel rank other than 0: lm-eval gathered its answers on rank 0
        return EvalReport({}, {}, {}, seconds=seconds)
    report = _report(results, suites, seconds)
    report.unmeasured = sorted(report.unmeasured + unmeasured)
    if output_dir is not None:
        write_report(report, Path(output_dir))
    return report


def _quiet_git_commit() -> str | None:
    import subprocess

    try:
        found = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


class _CategoryMetricFilter:
    """Drops lm-eval's warnings that a `tool_use` metric is missing from some categories' tasks, or scored on fewer
    of a task's samples than the others: by design each category's accuracy comes from its own task, `call_rate`
    only from the tasks that expect calls and `parse_rate` only from the answers that attempted one (see
    evals/tool_use/_tool_use.yaml and docs/evaluation.md)."""

    metrics = (*(f"{c}_accuracy" for c in CATEGORIES), "call_rate", "parse_rate")
    expected = tuple(f"Group 'tool_use': metric '{m},none' is missing in" for m in metrics)

    def filter(self, record) -> bool:
        message = record.getMessage()
        if message.startswith("[tool_use_") and "Metrics were not scored on the same number" in message:
            return False
        return not message.startswith(self.expected)


_CATEGORY_FILTER = _CategoryMetricFilter()


class _CustomKwargsFilter:
    """Drops lm-eval's per-task advice on passing `--metadata` to a custom dataset loader: our suites load their
    data through `custom_dataset` by design, and the advice (two lines per task, every evaluation) is for lm-eval's
    command line, which workbench users do not run."""

    def filter(self, record) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


_CUSTOM_KWARGS_FILTER = _CustomKwargsFilter()


def _tool_use_group(manager, data: dict[str, str] | None) -> tuple[Any, list[str]]:
    """The `tool_use` group, or, when the suite's data lacks a BFCL category (a user's file), the group
    rebuilt from its YAML without that category's task (lm-eval cannot build a task with no samples);
    returns it with the metrics left unmeasured."""
    import yaml
    from lm_eval.api.group import Group

    from workbench.evaluation.tasks import load_tool_use

    present = set(load_tool_use("data.jsonl", data)["test"]["category"])
    missing = [f"{category}_accuracy" for category in CATEGORIES if category not in present]
    if not missing:
        return "tool_use", []
    config = yaml.safe_load((REPO_EVALS / "tool_use" / "_tool_use.yaml").read_text(encoding="utf-8"))
    config["task"] = [f"tool_use_{category}" for category in CATEGORIES if category in present]
    config["aggregate_metric_list"] = [a for a in config["aggregate_metric_list"] if a["metric"] not in missing]
    group = Group.from_config(config)
    for task in manager.load(config["task"])["tasks"].values():
        group.add(task)
    return group, [f"tool_use/{metric}" for metric in missing]


def _leaves(groups: dict[str, list[str]], name: str) -> list[str]:
    """The tasks under group `name` in lm-eval's `group_subtasks` (nested groups flattened)."""
    leaves = []
    for child in groups.get(name, []):
        leaves.extend(_leaves(groups, child) if groups.get(child) else [child])
    return leaves


def _suite_of(task: str) -> str | None:
    """The workbench suite a task belongs to (its own name, or a `<suite>_<part>` task of the suite's group)."""
    return next((suite for suite in SUITES if task == suite or task.startswith(f"{suite}_")), None)


def _report(results: dict, suites: list[str], seconds: float) -> EvalReport:
    from lm_eval.utils import handle_non_serializable

    groups = results.get("group_subtasks", {})
    # A requested workbench suite reports under its own name: the group's metrics, its tasks' samples.
    gathered = {task: suite for suite in SUITES if suite in suites for task in _leaves(groups, suite)}
    metrics, unmeasured = {}, []
    for task, values in results["results"].items():
        if task in gathered:
            continue  # the suite's group metrics already cover this task
        for key, value in values.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or name.endswith("_stderr") or not isinstance(value, int | float):
                continue
            metric = f"{task}/{name}" if filter_name == "none" else f"{task}/{name}_{filter_name}"
            if isinstance(value, float) and math.isnan(value):
                unmeasured.append(metric)
            else:
                metrics[metric] = float(value)
    samples: dict[str, list[dict[str, Any]]] = {}
    for task, logged in results.get("samples", {}).items():
        samples.setdefault(gathered.get(task, task), []).extend(_row(task, sample) for sample in logged)
    if "tool_use" in samples:
        _pool_over_attempts(metrics, samples["tool_use"])
    raw = json.loads(json.dumps({k: v for k, v in results.items() if k != "samples"}, default=handle_non_serializable))
    counts = {task: len(rows) for task, rows in samples.items()}
    return EvalReport(metrics, samples, raw, counts, sorted(unmeasured), seconds)


def _pool_over_attempts(metrics: dict[str, float], rows: list[dict[str, Any]]) -> None:
    """`tool_use/parse_rate` as the share over every answer that attempted a call, pooled across categories.

    lm-eval weighs a group's tasks by their sample counts, not by how many samples measured a metric, so its group
    value is exact only when every category attempts at the same rate; the per-sample rows give the exact share.
    With no attempt at all the metric is not reported (a gate on it fails as not measured)."""
    attempts = [float(row["parse_rate"]) for row in rows if row.get("parse_rate") is not None]
    if attempts:
        metrics["tool_use/parse_rate"] = sum(attempts) / len(attempts)
    else:
        metrics.pop("tool_use/parse_rate", None)


def _row(task: str, sample: dict) -> dict[str, Any]:
    doc, suite = sample["doc"], _suite_of(task)
    output = sample["filtered_resps"][0] if sample.get("filtered_resps") else ""
    fields = [name for name in EXPECTED_FIELDS.get(suite, ()) if name in doc]
    # Nested fields travel as JSON strings (see tasks.py); decode them so the table shows plain JSON.
    expected = {
        name.removesuffix("_json"): json.loads(doc[name]) if name.endswith("_json") else doc[name] for name in fields
    } or sample.get("target")
    row = {
        "task": task,
        "doc_id": sample["doc_id"],
        "prompt": sample["arguments"][0][0] if sample.get("arguments") else "",
        "output": output if isinstance(output, str) else json.dumps(output),
        "expected": json.dumps(expected, default=str),
    }
    for metric in sample.get("metrics", []):
        value = sample.get(metric)
        row[metric] = json.dumps(value) if isinstance(value, list) else value
    primary = PRIMARY_METRIC.get(suite)
    row["score"] = float(row[primary]) if primary and row.get(primary) is not None else None
    return row


def write_report(report: EvalReport, output_dir: Path) -> None:
    """`results.json` (lm-eval's results plus our metric names) and `samples_<suite>.jsonl`."""
    from workbench.fsio import write_json_atomic, write_jsonl_atomic

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "results.json", {"metrics": report.metrics, "lm_eval": report.raw})
    for suite, rows in report.samples.items():
        write_jsonl_atomic(output_dir / f"samples_{suite}.jsonl", rows)
