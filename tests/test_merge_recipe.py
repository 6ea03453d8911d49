"""The merge stage end to end through the runner: a sweep over a trained and an untrained model, each candidate a
nested MLflow run under the stage's run, the best by held-out loss becomes the stage output."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import write_tiny_project
from tests.test_merge import assert_same_weights
from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe

pytestmark = pytest.mark.slow

MERGE_STAGE = {
    "name": "soup",
    "kind": "merge",
    "method": "linear",
    "models": [
        {"from": "sft", "parameters": {"weight": 1.0}},
        {"from": "base", "parameters": {"weight": {"sweep": [0.0, 0.5, 2.0]}}},
    ],
    "dtype": "float32",
    "select": {"metric": "eval_loss", "data": "data/eval.jsonl", "max_length": 256},
}


def test_sweep_selects_the_lowest_held_out_loss_and_logs_each_candidate(tmp_path, monkeypatch, mlflow_server):
    monkeypatch.chdir(tmp_path)
    path = write_tiny_project(tmp_path, {"max_steps": 12, "max_length": 256}, tracking_uri=mlflow_server, name="merge")
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"].append(MERGE_STAGE)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))

    outcomes = {o.name: o for o in run_recipe(load_recipe(path))}
    stage_dir = outcomes["soup"].dir
    info = json.loads((stage_dir / "stage.json").read_text())
    rows = info["details"]["candidates"]
    losses = [row["eval_loss"] for row in rows]
    assert [row["base.weight"] for row in rows] == [0.0, 0.5, 2.0]
    # The SFT model learned the held-out domain; mixing in more of the random base only hurts.
    assert losses[0] < losses[1] < losses[2], losses
    assert info["details"]["selected_candidate"] == 0
    assert info["metrics"]["select/eval_loss"] == min(losses)
    # weight 0 on the base leaves the SFT model itself (linear merge with normalised weights).
    assert_same_weights(stage_dir / "model", outcomes["sft"].dir / "model")
    for name in ("config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json", "README.md"):
        assert (stage_dir / "model" / name).is_file(), name
    card = (stage_dir / "model" / "README.md").read_text()
    assert "**Linear** (`linear`)" in card and info["inputs"]["sft"] in card, "card records method and input hashes"
    assert not (stage_dir / "candidates").exists(), "losing candidates are removed"

    client = MlflowClient(mlflow_server)
    stage_run = client.get_run(info["mlflow_run_id"])
    experiment = stage_run.info.experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{stage_run.info.run_id}'")
    assert sorted(r.data.tags["workbench.candidate"] for r in children) == ["0", "1", "2"]
    by_index = {int(r.data.tags["workbench.candidate"]): r for r in children}
    for index, row in enumerate(rows):
        assert by_index[index].data.metrics["eval_loss"] == pytest.approx(row["eval_loss"])
        assert by_index[index].data.params["base.weight"] == str(row["base.weight"])
        assert by_index[index].info.status == "FINISHED"
        assert by_index[index].data.tags["workbench.pid"] == str(os.getpid()), "owned, so a kill is reaped"
    artifacts = {a.path for a in client.list_artifacts(stage_run.info.run_id, "merge")}
    assert artifacts == {"merge/candidates.json"}, "one table, no CSV"
    table = json.loads(
        open(client.download_artifacts(stage_run.info.run_id, "merge/candidates.json", str(tmp_path))).read()
    )
    columns = table["columns"]
    assert [dict(zip(columns, row, strict=True))["selected"] for row in table["data"]] == [True, False, False]
    assert [row[columns.index("eval_loss")] for row in table["data"]] == pytest.approx(losses)

    again = {o.name: o for o in run_recipe(load_recipe(path))}
    assert again["soup"].status == "cached"


def _constant_digit_model(source, target) -> None:
    """A copy of the model in `source` that answers every prompt with "1111...": a valid JSON number, so
    json_schema/strict_parse_rate is 1. Every block's output projection is zero (the residual stream keeps the
    input embedding), and every embedding row is the same unit vector, twice as long for the token "1"."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(source, target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    digit = AutoTokenizer.from_pretrained(target).convert_tokens_to_ids("1")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if "norm" in name else 0.0)
        for embedding in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
            embedding.weight[:, 0] = 1.0
            embedding.weight[digit, 0] = 2.0
    model.save_pretrained(target)


def test_a_candidate_that_breaks_a_relative_constraint_is_not_selected(tmp_path, monkeypatch, mlflow_server):
    """Selection minimises strict_parse_rate (so the random base would win) under the constraint that it stay at
    least 0.5 above what the evaluate stage `eval_base` measured on the base: only the digit model qualifies."""
    from workbench.runner.plan import make_plan

    monkeypatch.chdir(tmp_path)
    path = write_tiny_project(tmp_path, tracking_uri=mlflow_server, name="merge-relative")
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"] = recipe["stages"][:1]  # base only: the digit model is built from its output
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    base = {o.name: o for o in run_recipe(load_recipe(path))}["base"]
    _constant_digit_model(base.dir / "model", tmp_path / "digit")

    recipe["stages"] += [
        {"name": "eval_base", "kind": "evaluate", "from": "base", "suites": ["json_schema"], "limit": 2},
        {
            "name": "pick",
            "kind": "merge",
            "method": "slerp",
            "base": "base",
            "models": ["base", {"model": "digit"}],
            "parameters": {"t": {"sweep": [0.0, 1.0]}},  # t = 0: the base, t = 1: the digit model
            "dtype": "float32",
            "select": {
                "metric": "json_schema/strict_parse_rate", "suite": "json_schema", "mode": "min", "limit": 2,
                "batch_size": 2, "compare": ["eval_base"],
                "constraints": ["json_schema/strict_parse_rate >= eval_base + 0.5"],
            },
        },
    ]  # fmt: skip
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    loaded = load_recipe(path)
    plan = {p.name: p for p in make_plan(loaded).stages}
    assert plan["pick"].inputs["eval_base"] == plan["eval_base"].hash

    outcomes = {o.name: o for o in run_recipe(loaded)}
    reference = json.loads((outcomes["eval_base"].dir / "stage.json").read_text())["metrics"]
    assert reference["json_schema/strict_parse_rate"] == 0.0
    info = json.loads((outcomes["pick"].dir / "stage.json").read_text())
    rows = info["details"]["candidates"]
    assert [row["json_schema/strict_parse_rate"] for row in rows] == [0.0, 1.0]
    assert rows[0]["violations"] == "json_schema/strict_parse_rate >= eval_base + 0.5 (got 0, bound 0.5)"
    assert rows[1]["violations"] == ""
    assert info["details"]["selected_candidate"] == 1, "the lower score (the goal of mode min) broke the constraint"
    assert_same_weights(outcomes["pick"].dir / "model", tmp_path / "digit")


def test_a_template_that_sweeps_needs_select(tmp_path, monkeypatch):
    from workbench.errors import StageError

    monkeypatch.chdir(tmp_path)
    path = write_tiny_project(tmp_path, name="template-sweep")
    (tmp_path / "merges").mkdir()
    (tmp_path / "merges/sweepy.yaml").write_text("merge_method: linear\nparameters:\n  weight: {sweep: [0.5, 1.0]}\n")
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"] = [recipe["stages"][0], {"name": "soup", "kind": "merge", "template": "sweepy",
                                              "models": ["base", "base"]}]  # fmt: skip
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(StageError, match=r"stage 'soup': 2 candidates \(the template sweeps\): add 'select'"):
        run_recipe(load_recipe(path))
    assert not list(tmp_path.glob("runs/template-sweep/soup/*/model")), "nothing half-merged is kept as the output"
