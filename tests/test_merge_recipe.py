"""The merge stage end to end through the runner: a sweep over a trained and an untrained model, each candidate a
nested MLflow run under the stage's run, the best by held-out loss becomes the stage output."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import write_tiny_project
from tests.test_merge import assert_same_weights
from workbench.recipe import load_recipe
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
    table = client.download_artifacts(stage_run.info.run_id, "merge/candidates.json", str(tmp_path))
    assert [row["selected"] for row in json.loads(open(table).read())] == [True, False, False]

    again = {o.name: o for o in run_recipe(load_recipe(path))}
    assert again["soup"].status == "cached"
