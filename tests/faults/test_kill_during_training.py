"""kill -9 in the middle of training: nothing is marked done, the next run resumes, MLflow says KILLED."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import wait_for_checkpoint, workbench_cli
from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

pytestmark = pytest.mark.slow


def test_killed_stage_resumes_and_is_never_marked_done_early(tiny_project):
    path = tiny_project({"max_steps": 30, "save_steps": 2, "logging_steps": 1})
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*workbench_cli(), "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, env=env,
    )  # fmt: skip
    wait_for_checkpoint(tiny_project.root, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    sft = {s.name: s for s in make_plan(load_recipe(path)).stages}["sft"]
    assert sft.status == "resume"
    assert not list(tiny_project.root.glob("runs/tiny/sft/*/stage.json")), "a killed stage is not marked done"

    second = subprocess.run([*workbench_cli(), "run", str(path)], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from checkpoint-" in second.stdout
    assert "marked MLflow run" in second.stdout and "KILLED" in second.stdout
    (done,) = tiny_project.root.glob("runs/tiny/sft/*/stage.json")
    info = json.loads(done.read_text())
    assert info["resumed"] is True and info["metrics"]["train/steps"] == 30.0
    # the metrics of a resumed stage are those of a run never interrupted (trl's own loss would average only the
    # steps after the checkpoint; the held-out "before" was measured by the killed run, before any step)
    fresh = subprocess.run([*workbench_cli(), "run", str(path), "--force", "sft"], capture_output=True, text=True,
                           env=env)  # fmt: skip
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (again,) = tiny_project.root.glob("runs/tiny/sft/*/stage.json")
    whole = json.loads(again.read_text())["metrics"]
    assert info["metrics"]["train/loss"] == pytest.approx(whole["train/loss"], rel=1e-3)
    assert info["metrics"]["eval/loss_before"] == pytest.approx(whole["eval/loss_before"], rel=1e-6)

    client = MlflowClient(f"sqlite:///{tiny_project.root}/runs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    statuses = sorted((r.info.run_name.split(" ")[0], r.info.status) for r in runs)  # parents: "tiny <digest> <time>"
    assert ("sft", "KILLED") in statuses and ("tiny", "KILLED") in statuses
    assert not [r for r in runs if r.info.status == "RUNNING"]
