"""The evaluate stage end to end: real lm-eval on a tiny trained model, gates, registry and promotion."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from conftest import workbench_cli

SUITES = ["instruction_following", "json_schema", "tool_use"]


def _with_eval_stages(recipe_path, gates: list[str]) -> None:
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["stages"] = recipe["stages"][:2] + [
        {"name": "eval_base", "kind": "evaluate", "from": "base", "suites": SUITES, "limit": 3, "batch_size": 3},
        {"name": "eval_sft", "kind": "evaluate", "from": "sft", "suites": SUITES, "limit": 3, "batch_size": 3,
         "compare": ["eval_base"], "gates": gates, "register": True},
    ]  # fmt: skip
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def _run(*args: str, cwd) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([*workbench_cli(), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _stage_info(root, stage: str) -> dict:
    # Gates are part of the stage's hash: the newest finished folder is the latest run's.
    done = [p for p in (root / "runs" / "tiny" / stage).iterdir() if (p / "stage.json").is_file()]
    folder = max(done, key=lambda p: p.stat().st_mtime)
    return json.loads((folder / "stage.json").read_text())


@pytest.mark.slow
def test_failed_gate_stops_the_recipe_and_passing_gates_register_a_candidate(tiny_project, mlflow_server):
    from mlflow.tracking import MlflowClient

    recipe = tiny_project(tracking_uri=mlflow_server)
    root = tiny_project.root
    _with_eval_stages(recipe, ["tool_use/ast_accuracy >= 0.99", "json_schema/valid_rate >= eval_base - 0.02"])
    failed = _run("run", str(recipe), cwd=root)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "stage 'eval_sft': 1 of 2 gates failed" in failed.stderr
    assert "tool_use/ast_accuracy >= 0.99" in failed.stderr and "FAIL" in failed.stderr and "PASS" in failed.stderr
    client = MlflowClient(mlflow_server)
    assert client.search_registered_models(filter_string="name = 'tiny'") == []

    # The failed evaluation's metrics are on its child run with stable names, with tables and lm-eval's JSON.
    info = _stage_info(root, "eval_sft")
    run = client.get_run(info["mlflow_run_id"])
    assert {"tool_use/ast_accuracy", "json_schema/valid_rate", "instruction_following/prompt_strict_acc"} <= set(
        run.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert artifacts == {f"samples/{suite}.json" for suite in SUITES}
    downloaded = client.download_artifacts(run.info.run_id, "samples/tool_use.json", str(root))
    table = json.loads(open(downloaded).read())
    # `limit` applies to each of the suite's lm-eval tasks: 3 samples from each BFCL category's task.
    assert set(table["columns"]) >= {"task", "prompt", "output", "expected", "score"} and len(table["data"]) == 12
    tasks = [row[table["columns"].index("task")] for row in table["data"]]
    assert sorted(set(tasks)) == ["tool_use_irrelevance", "tool_use_multiple", "tool_use_parallel", "tool_use_simple"]
    assert client.list_artifacts(run.info.run_id, "eval")[0].path == "eval/results.json"

    # Loosen the gates: gates are not part of the hash, so nothing re-evaluates; the cached eval_sft is re-checked,
    # passes, and registers the SFT model as `candidate`.
    _with_eval_stages(recipe, ["tool_use/call_rate >= 0.0", "json_schema/valid_rate >= eval_base - 0.02"])
    passed = _run("run", str(recipe), cwd=root)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "eval_base cached" in passed.stdout and "eval_sft cached" in passed.stdout
    assert "stage 'eval_sft': 0 of 2 gates failed" in passed.stdout
    # The run ends with both evaluate stages' scores side by side; `workbench report` prints the same table.
    report = _run("report", str(recipe), cwd=root)
    assert report.returncode == 0, report.stderr
    row = next(line for line in report.stdout.splitlines() if "json_schema/valid_rate" in line)
    expected = [
        f"{_stage_info(root, name)['metrics']['json_schema/valid_rate']:.4f}" for name in ("eval_base", "eval_sft")
    ]
    assert row.replace("│", " ").split()[-2:] == expected and "evaluation scores by stage" in passed.stdout
    info = _stage_info(root, "eval_sft")
    candidate = client.get_model_version_by_alias("tiny", "candidate")
    assert candidate.tags["workbench.evaluate_hash"] == info["hash"]
    review_run = client.get_run(candidate.run_id)
    assert review_run.data.tags["workbench.stage"] == "eval_sft" and review_run.data.tags["workbench.cached"] == "true"
    review = json.loads(open(client.download_artifacts(candidate.run_id, "review.json", str(root))).read())
    assert review["registered"]["version"] == candidate.version and all(g["passed"] for g in review["gates"])
    # the version is made from sft's logged model, whose folder was uploaded to the server (lineage)
    logged = client.get_logged_model(candidate.tags["workbench.logged_model_id"])
    assert candidate.source == logged.artifact_location and logged.tags["workbench.stage"] == "sft"
    assert {a.path for a in client.list_logged_model_artifacts(logged.model_id)} >= {"config.json"}
    # Re-checking the same evaluation again registers nothing new.
    again = _run("run", str(recipe), cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(client.search_model_versions("name = 'tiny'")) == 1

    # the recipe file names the registered model and its tracking store (here the server, not runs/mlflow.db)
    promoted = _run("promote", str(recipe), cwd=root)
    assert promoted.returncode == 0, promoted.stderr
    assert client.get_model_version_by_alias("tiny", "champion").version == candidate.version
    missing = _run("promote", "no-such-model", "--tracking-uri", mlflow_server, cwd=root)
    assert missing.returncode == 1
    assert "no registered model 'no-such-model' (registered models: tiny)" in missing.stderr


def test_editing_a_suite_changes_the_evaluate_stage_hash(tmp_path, monkeypatch):
    import shutil

    import workbench.evaluation.tasks as tasks
    from workbench.runner import load_recipe
    from workbench.runner.plan import make_plan

    evals = tmp_path / "evals"
    shutil.copytree(tasks.REPO_EVALS, evals)
    monkeypatch.setattr(tasks, "REPO_EVALS", evals)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # validate wants a loadable-looking model folder
    (tmp_path / "model" / "tokenizer.json").write_text("{}")
    (tmp_path / "recipe.yaml").write_text(
        "name: h\ntokenizer: {path: model}\nstages:\n"
        "  - {name: ev, kind: evaluate, model: model, suites: [json_schema, tool_use]}\n"
    )
    monkeypatch.chdir(tmp_path)

    def stage_hash() -> str:
        return make_plan(load_recipe(tmp_path / "recipe.yaml")).stages[0].hash

    before = stage_hash()
    assert stage_hash() == before
    with open(evals / "json_schema" / "data.jsonl", "a") as handle:
        handle.write("\n")
    assert stage_hash() != before, "new suite data must re-run the evaluation"
