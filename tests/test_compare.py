"""What a reviewer reads: the summary on each parent run (read back with MlflowClient from a real MLflow server),
the figures, and `workbench compare` on two runs of a tiny recipe that differ in one stage."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from conftest import running_mlflow_server, workbench_cli, write_tiny_project

pytestmark = pytest.mark.slow

SUITES = ["json_schema", "tool_use"]


def _recipe(root, tracking_uri: str, learning_rate: float):
    recipe = yaml.safe_load((root / "recipe.yaml").read_text())
    recipe["description"] = "a tiny recipe a reviewer compares"
    recipe["stages"] = recipe["stages"][:2]
    recipe["stages"][1] |= {"learning_rate": learning_rate, "max_steps": 4}
    recipe["stages"].append(
        {"name": "eval_sft", "kind": "evaluate", "from": "sft", "suites": SUITES, "limit": 3, "batch_size": 3,
         "gates": ["tool_use/call_rate >= 0", "json_schema/valid_rate >= 0"], "register": True}
    )  # fmt: skip
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))


def _cli(*args, cwd):
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*workbench_cli(), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def review_server(tmp_path_factory):
    """A tracking server of this module's own: the runs, experiments and registered models made here must not show
    up in other tests that count what their server holds."""
    yield from running_mlflow_server(tmp_path_factory.mktemp("review-server"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, review_server):
    """A tiny project run twice against the real MLflow server, the second time with sft's learning rate changed
    (in its own experiment, `reviewed`); yields the project root."""
    root = tmp_path_factory.mktemp("reviewed")
    write_tiny_project(root, tracking_uri=review_server, name="reviewed")
    _recipe(root, review_server, 3e-3)
    first = _cli("run", "recipe.yaml", cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    _recipe(root, review_server, 1e-2)  # one stage changes: sft's learning rate
    second = _cli("run", "recipe.yaml", cwd=root)
    assert second.returncode == 0, second.stderr[-3000:]
    return root


def _parents(client, experiment):
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_parent_summaries_figures_and_compare(two_runs, review_server):
    from mlflow.tracking import MlflowClient

    from workbench.runner.compare import compare, find_run

    root = two_runs
    client = MlflowClient(review_server)
    experiment = client.get_experiment_by_name("reviewed")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    parents = _parents(client, experiment)
    assert len(parents) == 2 and parents[0].info.run_name != parents[1].info.run_name
    a, b = parents
    for run in parents:
        assert run.info.run_name.startswith("reviewed ")
        metrics = run.data.metrics
        assert {f"eval_sft/{m}" for m in ("tool_use/ast_accuracy", "json_schema/valid_rate")} <= set(metrics)
        assert metrics["eval_sft/gates_passed"] == 2 and metrics["eval_sft/gates_failed"] == 0
        assert metrics["run/seconds"] > 0
        assert set(run.data.params) == {"hash.base", "hash.sft", "hash.eval_sft"}
        assert run.data.tags["workbench.registered_model"] == "reviewed"
        assert "a tiny recipe a reviewer compares" in run.data.tags["mlflow.note.content"]
        assert "`tool_use/call_rate >= 0`" in run.data.tags["mlflow.note.content"]
        figures = {item.path for item in client.list_artifacts(run.info.run_id, "figures")}
        assert figures == {"figures/losses.png", "figures/suites.png"}
    assert a.data.metrics["run/stages_ran"] == 3 and b.data.metrics["run/stages_ran"] == 2
    assert b.data.metrics["run/stages_cached"] == 1 and b.data.tags["workbench.stages_cached"] == "base"
    assert (
        a.data.params["hash.base"] == b.data.params["hash.base"] != ""
        and a.data.params["hash.sft"] != b.data.params["hash.sft"]
    )

    comparison = compare(client, find_run(client, a.info.run_id), find_run(client, str(root / "recipe.yaml")))
    assert comparison.b.info.run_id == b.info.run_id  # a recipe file means its latest run
    changes = {c.stage: c for c in comparison.stages}
    assert comparison.changed == ["sft", "eval_sft"]
    assert changes["sft"].change == "config changed" and changes["sft"].fields == [("learning_rate", 3e-3, 1e-2)]
    assert changes["eval_sft"].change == "inputs changed" and changes["base"].change == "same"
    assert (changes["base"].status_a, changes["base"].status_b) == ("ran", "cached")
    for delta in comparison.metrics:
        assert delta.a == pytest.approx(a.data.metrics[f"{delta.stage}/{delta.metric}"])
        assert delta.b == pytest.approx(b.data.metrics[f"{delta.stage}/{delta.metric}"])
        assert delta.delta == pytest.approx(delta.b - delta.a)
    assert {g["gate"] for g in comparison.gates} == {"tool_use/call_rate >= 0", "json_schema/valid_rate >= 0"}
    assert all(g["passed"] and g["passed_a"] for g in comparison.gates)
    # the flipped samples are exactly those whose score differs between the two evaluations' logged tables
    scores = []
    for run in (a, b):
        (evaluation,) = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.run_name = 'eval_sft'",
        )
        table = {}
        for suite in SUITES:
            path = client.download_artifacts(
                evaluation.info.run_id, f"samples/{suite}.json", str(root / run.info.run_id)
            )
            logged = json.loads(open(path).read())
            for row in logged["data"]:
                cell = dict(zip(logged["columns"], row, strict=True))
                table[(suite, cell["task"], cell["doc_id"])] = cell["score"]
        scores.append(table)
    expected = {k for k, v in scores[1].items() if v is not None and scores[0].get(k) not in (None, v)}
    assert {(f.suite, f.task, f.doc_id) for f in comparison.flips} == expected

    shown = _cli("compare", a.info.run_id, b.info.run_id, "--tracking-uri", review_server, "--html", "cmp.html",
                 cwd=root)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "changed stages: sft, eval_sft" in shown.stdout and "learning_rate" in shown.stdout
    assert "Downloading artifacts" not in shown.stdout + shown.stderr, "one mlflow bar per downloaded file"
    page = (root / "cmp.html").read_text()
    assert "learning_rate" in page and page.count("data:image/png;base64,") == 4
    report = _cli("report", "recipe.yaml", cwd=root)
    assert "figures of the latest run:" in report.stdout and "suites.png" in report.stdout
    same = _cli("compare", "recipe.yaml", b.info.run_id, "--tracking-uri", review_server, cwd=root)
    assert same.returncode == 1 and "are the same run" in same.stderr, "the recipe's latest run is B"
    missing = _cli("compare", "0123456789abcdef", b.info.run_id, "--tracking-uri", review_server, cwd=root)
    assert missing.returncode == 1 and "no MLflow run '0123456789abcdef'" in missing.stderr


def test_a_failed_gate_still_prints_the_scores_and_names_the_failure(tiny_project, review_server):
    from mlflow.tracking import MlflowClient

    tiny_project(tracking_uri=review_server)
    root = tiny_project.root
    _recipe(root, review_server, 3e-3)
    recipe = yaml.safe_load((root / "recipe.yaml").read_text())
    recipe["stages"][2]["gates"] = ["tool_use/ast_accuracy >= 1.5"]
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    done = _cli("run", "recipe.yaml", cwd=root)
    assert done.returncode == 1
    assert "evaluation scores by stage" in done.stdout and "tool_use/ast_accuracy >= 1.5" in done.stderr
    client = MlflowClient(review_server)
    experiment = client.get_experiment_by_name("tiny")
    parent = next(r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["workbench.failure"].startswith("stage 'eval_sft': 1 of 1 gates failed")
    assert "**Failed**: stage 'eval_sft': 1 of 1 gates failed" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["eval_sft/gates_failed"] == 1


def test_a_reviewer_sees_the_summary_the_comparison_and_the_candidate_in_mlflow_ui(two_runs, review_server, tmp_path):
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    from test_annotate import chromium_driver

    client = MlflowClient(review_server)
    experiment = client.get_experiment_by_name("reviewed")
    a, b = _parents(client, experiment)
    browser = chromium_driver()
    wait = WebDriverWait(browser, 90)

    def page_shows(*texts: str) -> str:
        wait.until(lambda driver: all(text in driver.find_element(By.TAG_NAME, "body").text for text in texts))
        return browser.find_element(By.TAG_NAME, "body").text

    try:
        # MLflow 3 opens every experiment in its GenAI view unless the URL (or the user's toggle) asks for model
        # training: the link workbench prints does
        browser.get(f"{review_server}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning")
        page_shows(a.info.run_name, b.info.run_name, "Run Name")
        browser.save_screenshot(str(tmp_path / "runs-table.png"))

        browser.get(f"{review_server}/#/experiments/{experiment.experiment_id}/runs/{b.info.run_id}")
        page_shows("eval_sft/tool_use/ast_accuracy", "a tiny recipe a reviewer compares")
        browser.save_screenshot(str(tmp_path / "parent-run.png"))

        runs = f'["{a.info.run_id}","{b.info.run_id}"]'
        browser.get(f'{review_server}/#/compare-runs?runs={runs}&experiments=["{experiment.experiment_id}"]')
        page_shows("eval_sft/gates_passed", "Show diff only")
        # the Metrics section's "Show diff only": what differs between the two parents, side by side
        browser.find_elements(By.XPATH, "//*[normalize-space(text())='Show diff only']")[1].click()
        text = page_shows("run/stages_ran")
        browser.save_screenshot(str(tmp_path / "compare.png"))
        metrics = text.split("Metrics\nShow diff only", 1)[1].split("Artifacts", 1)[0].split()
        assert metrics[:3] == ["run/seconds", "run/stages_cached", "run/stages_ran"], metrics
        ran = [f"{a.data.metrics['run/stages_ran']:g}", f"{b.data.metrics['run/stages_ran']:g}"]
        assert metrics[-2:] == ran == ["3", "2"]

        browser.get(f"{review_server}/#/models/reviewed")
        page_shows("Aliases", "Version 2", "candidate")
        browser.save_screenshot(str(tmp_path / "registered-model.png"))
    finally:
        browser.quit()
    assert all((tmp_path / name).stat().st_size > 10_000 for name in
               ("runs-table.png", "parent-run.png", "compare.png", "registered-model.png"))  # fmt: skip


def test_lineage_datasets_logged_models_and_the_registered_version(two_runs, review_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(review_server)
    experiment = client.get_experiment_by_name("reviewed")
    a, b = _parents(client, experiment)
    # get_run: search_runs leaves out a run's model inputs
    children = {r.info.run_name: client.get_run(r.info.run_id) for r in client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{b.info.run_id}'")}  # fmt: skip
    sft = children["sft"]
    datasets = {d.dataset.name: d for d in sft.inputs.dataset_inputs}
    assert set(datasets) == {"train.jsonl", "eval.jsonl"}
    train = datasets["train.jsonl"]
    assert json.loads(train.dataset.profile)["num_rows"] == 96 and len(train.dataset.digest) == 32
    assert {t.key: t.value for t in train.tags}["mlflow.data.context"] == "data"
    assert json.loads(train.dataset.source)["uri"].endswith("data/train.jsonl")

    # each model-making stage's output is a READY logged model, uploaded to the server, with the stage's hash
    (output,) = sft.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.status.to_proto() == model.status.READY.to_proto() or str(model.status).endswith("READY")
    assert model.source_run_id == sft.info.run_id and model.tags["workbench.stage_hash"] == b.data.params["hash.sft"]
    assert model.tags["workbench.model_dir"].endswith("/model")
    assert {a.path for a in client.list_logged_model_artifacts(output.model_id)} >= {"config.json", "model.safetensors"}
    # the cached base stage's run shows the model its first run logged
    (base_output,) = children["base"].outputs.model_outputs
    assert client.get_logged_model(base_output.model_id).source_run_id != children["base"].info.run_id

    # the evaluate stage read that model, and its metrics are linked to it
    evaluation = children["eval_sft"]
    assert [m.model_id for m in evaluation.inputs.model_inputs] == [output.model_id]
    linked = {m.key for m in client.get_logged_model(output.model_id).metrics}
    assert {"tool_use/ast_accuracy", "json_schema/valid_rate"} <= linked
    # and the version registered from it points back at the logged model
    version = client.get_model_version("reviewed", b.data.tags["workbench.registered_version"])
    assert version.source == model.artifact_location and version.tags["workbench.logged_model_id"] == output.model_id
    assert version.model_id in (None, output.model_id)  # the REST API of mlflow 3.17 does not return it


def test_a_swept_stage_shows_its_candidates_statuses():
    from workbench.runner.compare import _stage_changes

    resolved = {"sft": {"hash": "h1", "learning_rate": {"sweep": [1e-3, 3e-3]}}}
    summaries = [
        {"stages": {"sft@learning_rate=0.001": "ran", "sft@learning_rate=0.003": "ran"}},
        {"stages": {"sft@learning_rate=0.001": "cached", "sft@learning_rate=0.003": "ran"}},
    ]
    (change,) = _stage_changes([resolved, resolved], summaries)
    assert (change.stage, change.change) == ("sft", "same")
    assert (change.status_a, change.status_b) == ("ran", "1 cached, 1 ran")
