"""The runner end to end on a tiny model: caching, --force/--only, MLflow structure, data errors."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM

from workbench.errors import StageError, WorkbenchError
from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe
from workbench.runner.plan import make_plan

pytestmark = pytest.mark.slow


def run(path, **kwargs):
    return {o.name: o for o in run_recipe(load_recipe(path), **kwargs)}


def runs_by_parent(uri: str, experiment: str):
    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = {
        p.info.run_id: [r for r in found if r.data.tags.get("mlflow.parentRunId") == p.info.run_id] for p in parents
    }
    return client, found, parents, children


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny project shared by the read-only tests below."""
    import os

    from tests.conftest import write_tiny_project

    root = tmp_path_factory.mktemp("finished")
    write_tiny_project(root, {"max_length": 256, "max_steps": 6, "save_steps": 3})
    cwd = os.getcwd()
    os.chdir(root)
    try:
        first = run(root / "recipe.yaml")
        second = run(root / "recipe.yaml")
    finally:
        os.chdir(cwd)
    return root, first, second


def test_second_run_trains_nothing(finished):
    root, first, second = finished
    assert {n: o.status for n, o in first.items()} == {"base": "ran", "sft": "ran"}
    assert {n: o.status for n, o in second.items()} == {"base": "cached", "sft": "cached"}
    assert first["sft"].dir == second["sft"].dir
    assert not list(root.glob("runs/tiny/*/*.tmp")), "no temporary folder is left behind"


def test_stage_output_contract(finished):
    _, first, _ = finished
    info = json.loads((first["sft"].dir / "stage.json").read_text())
    assert info["name"] == "sft" and info["kind"] == "sft" and info["inputs"].keys() == {"base"}
    assert (first["sft"].dir / "model" / "config.json").is_file()
    assert (first["sft"].dir / "model" / "tokenizer.json").is_file()
    assert not (first["sft"].dir / "checkpoints").exists()


def test_sft_lowers_the_held_out_loss(finished):
    _, first, _ = finished
    metrics = json.loads((first["sft"].dir / "stage.json").read_text())["metrics"]
    assert metrics["eval/loss"] < metrics["eval/loss_before"] - 0.05


def test_mlflow_parent_and_one_child_per_stage(finished):
    root, first, _ = finished
    client, found, parents, children = runs_by_parent(f"sqlite:///{root}/runs/mlflow.db", "tiny")
    assert len(parents) == 2 and len(found) == 6, "no stray runs: 2 parents with 2 children each"
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert sorted(r.info.run_name for r in children[parent.info.run_id]) == ["base", "sft"]
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "recipe")}
        assert artifacts == {"recipe/recipe.yaml", "recipe/resolved.yaml"}
    sft_run_id = json.loads((first["sft"].dir / "stage.json").read_text())["mlflow_run_id"]
    sft = client.get_run(sft_run_id)
    assert len(client.get_metric_history(sft_run_id, "loss")) == 6, "the Trainer streamed a loss per step"
    assert sft.data.params["stage.learning_rate"] == "0.003"
    assert sft.data.tags["workbench.stage_hash"] == json.loads((first["sft"].dir / "stage.json").read_text())["hash"]
    assert "workbench.version.transformers" in sft.data.tags
    assert {a.path for a in client.list_artifacts(sft_run_id)} >= {"stage.json", "samples.json"}
    cached = [r for r in found if r.data.tags.get("workbench.cached") == "true" and r.info.run_name == "sft"]
    assert cached[0].data.metrics["eval/loss"] == sft.data.metrics["eval/loss"]


def test_plan_reports_cached(finished, monkeypatch):
    root, _, _ = finished
    monkeypatch.chdir(root)
    assert [s.status for s in make_plan(load_recipe(root / "recipe.yaml")).stages] == ["cached", "cached"]


def test_changing_data_invalidates_only_the_stage_that_reads_it(tiny_project):
    path = tiny_project()
    run(path)
    with open(tiny_project.root / "data/eval.jsonl", "a") as handle:
        handle.write(open(tiny_project.root / "data/train.jsonl").readline())
    assert [s.status for s in make_plan(load_recipe(path)).stages] == ["cached", "run"]


def test_force_reruns_a_stage_and_its_descendants(tiny_project):
    path = tiny_project()
    run(path)
    outcomes = run(path, force={"base"})
    assert {n: o.status for n, o in outcomes.items()} == {"base": "ran", "sft": "ran"}


def test_only_runs_one_stage_and_needs_finished_inputs(tiny_project):
    path = tiny_project()
    with pytest.raises(WorkbenchError, match="input stage 'base' has no finished output"):
        run(path, only={"sft"})
    assert set(run(path, only={"base"})) == {"base"}
    assert {n: o.status for n, o in run(path, only={"sft"}).items()} == {"sft": "ran"}


def test_real_mlflow_server(tiny_project, mlflow_server):
    path = tiny_project(tracking_uri=mlflow_server, name="served")
    run(path)
    client, found, parents, children = runs_by_parent(mlflow_server, "served")
    assert len(parents) == 1 and len(found) == 3
    (sft,) = [r for r in children[parents[0].info.run_id] if r.info.run_name == "sft"]
    assert len(client.get_metric_history(sft.info.run_id, "loss")) == 4
    assert "stage.json" in {a.path for a in client.list_artifacts(sft.info.run_id)}


def test_lora_stage_writes_a_plain_merged_model(tiny_project):
    path = tiny_project({"lora": {"r": 4, "alpha": 8}})
    outcome = run(path)["sft"]
    model = AutoModelForCausalLM.from_pretrained(outcome.dir / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (outcome.dir / "adapter" / "adapter_config.json").is_file()


def test_invalid_records_stop_the_stage_with_their_lines(tiny_project):
    data = tiny_project.root / "data/train.jsonl"
    lines = data.read_text().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]})
    lines[4] = "{not json"
    data.write_text("\n".join(lines) + "\n")
    path = tiny_project()
    with pytest.raises(StageError) as caught:
        run(path)
    message = str(caught.value)
    assert "data/train.jsonl: 1 record with an empty turn (line 3)" in message
    assert "data/train.jsonl: 1 record unreadable: invalid JSON" in message and "(line 5)" in message
    outcome = run(tiny_project({"invalid_records": "drop"}))["sft"]
    assert outcome.status == "ran"


def test_a_run_leaves_no_tracking_uri_behind(finished):
    """mlflow exports MLFLOW_TRACKING_URI when a URI is set; the next recipe run in this process (a notebook,
    this test suite) would then log to the previous run's store instead of its own."""
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_run_hashes_the_tokenizer_once_and_reviews_what_it_recorded(tiny_project, monkeypatch):
    """The pinned tokenizer is fingerprinted once per run however many stages run (and not at all when none
    does), and a stage's review sees the stage.json just written without reading it back; a later stage gets the
    stage.json of its inputs from the run (as written, or as the plan read it for a cached stage), never again."""
    import dataclasses

    from workbench.api import Review
    from workbench.modeling import tokenizer as tokenizer_module
    from workbench.runner import executor
    from workbench.runner.store import StageStore

    hashed, reads, planned, reviewed = [], [], [], {}
    fingerprint, read_info, make = tokenizer_module.tokenizer_fingerprint, StageStore.read_info, executor.make_plan

    def counted_fingerprint(folder):
        hashed.append(folder)
        return fingerprint(folder)

    def counted_read_info(self, stage, stage_hash):
        reads.append(stage)
        return read_info(self, stage, stage_hash)

    def plan_then_count(loaded):  # the plan's reads apart from those of running the stages
        plan = make(loaded)
        planned.append(list(reads))
        reads.clear()
        return plan

    def review(ctx):
        reviewed[ctx.info["name"]] = ctx.info, {name: given.info for name, given in ctx.inputs.items()}, list(reads)
        return Review()

    def load(path):
        loaded = load_recipe(path)
        for kind in ("init", "sft"):
            monkeypatch.setitem(
                loaded.catalog.kinds, kind, dataclasses.replace(loaded.catalog.kinds[kind], review=review)
            )
        return loaded

    monkeypatch.setattr(tokenizer_module, "tokenizer_fingerprint", counted_fingerprint)
    monkeypatch.setattr(StageStore, "read_info", counted_read_info)
    monkeypatch.setattr(executor, "make_plan", plan_then_count)
    path = tiny_project({"max_steps": 2, "save_steps": 2})

    outcomes = {o.name: o for o in run_recipe(load(path))}
    recorded = {name: json.loads((o.dir / "stage.json").read_text()) for name, o in outcomes.items()}
    assert [folder.parent.name for folder in hashed] == ["_tokenizer"], "one fingerprint for both stages"
    assert recorded["sft"]["tokenizer_fingerprint"] == fingerprint(hashed[0])
    assert reads == [], "no stage.json is read back, for a review or for the next stage's inputs"
    assert reviewed["base"] == (recorded["base"], {}, [])
    assert reviewed["sft"] == (recorded["sft"], {"base": recorded["base"]}, [])

    reviewed.clear()
    assert {o.status for o in run_recipe(load(path))} == {"cached"}
    assert len(hashed) == 1, "a run where every stage is cached hashes no tokenizer"
    assert planned[-1] == ["base", "sft"] and reads == [], "each cached stage.json is read once, by the plan"
    assert reviewed == {"base": (recorded["base"], {}, []), "sft": (recorded["sft"], {"base": recorded["base"]}, [])}


def test_a_gate_stops_the_run_and_its_scores_come_from_the_run(tiny_project, monkeypatch):
    """`workbench run` prints the evaluate stages' scores from what the run holds, when a gate stops it and when
    it passes: no second plan (which hashes every input again, and pulls argilla:// data) and no stage.json read
    back: a finished stage.json is read once, by the run's one plan."""
    import pathlib

    import yaml
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.runner import executor
    from workbench.runner import plan as plan_module

    path = tiny_project({"max_steps": 2, "save_steps": 2})
    recipe = yaml.safe_load(path.read_text())
    evaluate = {"name": "eval_sft", "kind": "evaluate", "from": "sft", "suites": ["json_schema"], "limit": 1}
    plans, reads = [], []
    make, read_text = plan_module.make_plan, pathlib.Path.read_text

    def counted_plan(loaded):
        plans.append(loaded.path)
        return make(loaded)

    def counted_read_text(self, *args, **kwargs):
        if self.name == "stage.json":
            reads.append(self.parent.parent.name)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(plan_module, "make_plan", counted_plan)
    monkeypatch.setattr(executor, "make_plan", counted_plan)
    monkeypatch.setattr(pathlib.Path, "read_text", counted_read_text)
    for gate, code in (("json_schema/parse_rate >= 2", 1), ("json_schema/parse_rate >= 0", 0)):
        recipe["stages"][2:] = [evaluate | {"gates": [gate]}]  # gates are not hashed: the second run is cached
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == code, result.output
        scores = result.output[result.output.index("evaluation scores by stage") :]
        assert "eval_sft" in scores and "json_schema/parse_rate" in scores
        assert ("1 of 1 gates failed" in scores) == (code == 1), "the scores are printed before the gate table"
    assert len(plans) == 2, "one plan per run"
    assert sorted(reads) == ["base", "eval_sft", "sft"], "by the second run's plan"


def test_path_prints_the_finished_folder_of_the_recipe_as_it_is_now(tiny_project):
    """Older hash folders stay beside the current one: `workbench path` names the one this recipe's inputs give."""
    from pathlib import Path

    import yaml
    from typer.testing import CliRunner

    from workbench.cli import app

    path = tiny_project({"max_steps": 2, "save_steps": 2})
    before = CliRunner().invoke(app, ["path", str(path), "sft"])
    assert before.exit_code == 1 and "stage 'sft' has no finished output" in before.output
    assert CliRunner().invoke(app, ["run", str(path)]).exit_code == 0
    first = Path(CliRunner().invoke(app, ["path", str(path), "sft"]).output.strip())
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"][1]["learning_rate"] = 1e-4  # a second sft folder, newer than the first
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert CliRunner().invoke(app, ["run", str(path)]).exit_code == 0
    second = Path(CliRunner().invoke(app, ["path", str(path), "sft"]).output.strip())
    assert first != second and first.parent == second.parent
    assert json.loads((second / "stage.json").read_text())["config"]["learning_rate"] == 1e-4
    recipe["stages"][1]["learning_rate"] = json.loads((first / "stage.json").read_text())["config"]["learning_rate"]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))  # back to the first inputs: the older folder again
    assert Path(CliRunner().invoke(app, ["path", str(path), "sft"]).output.strip()) == first
    unknown = CliRunner().invoke(app, ["path", str(path), "sfft"])
    assert unknown.exit_code == 1 and "no stage 'sfft' (did you mean 'sft'?)" in unknown.output
