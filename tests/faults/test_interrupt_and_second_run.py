"""A second `workbench run` of a recipe that is running is refused with one line, and leaves the first alone;
Ctrl-C (SIGINT) stops the first with one line, its MLflow runs end KILLED, and the next run resumes the stage."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import wait_for_checkpoint, workbench_cli, write_tiny_project

pytestmark = pytest.mark.slow

STEPS = 400


def test_second_run_refused_and_ctrl_c_keeps_everything(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = write_tiny_project(
        tmp_path, {"max_steps": STEPS, "save_steps": 20, "logging_steps": 50, "sample_count": 0}, tracking_uri=store
    )
    first = subprocess.Popen(
        [*workbench_cli(), "run", str(recipe)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a shell's background job (a CI runner's, say) ignores SIGINT and passes that on
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for_checkpoint(tmp_path, first, poll=0.05)
        second = subprocess.run([*workbench_cli(), "run", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
        assert second.returncode == 1, second.stdout + second.stderr
        refused = f"error: another workbench run is using {tmp_path}/runs/tiny; wait for it to finish"
        assert second.stderr.strip() == refused, second.stderr
        assert first.poll() is None, "the running one goes on"
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, out + err
    lines = [line for line in err.splitlines() if line.startswith(("error", "interrupted"))]
    assert lines == ["interrupted: finished stages are kept; the next run resumes the interrupted one"], err[-2000:]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("runs/tiny/sft/*/stage.json")), "nothing is marked done"
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    by_stage = {run.data.tags.get("workbench.stage", "parent"): run.info.status for run in runs}
    assert by_stage == {"parent": "KILLED", "base": "FINISHED", "sft": "KILLED"}, (by_stage, err[-2000:])

    again = subprocess.run([*workbench_cli(), "run", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from checkpoint-" in again.stdout
    [done] = tmp_path.glob("runs/tiny/sft/*/stage.json")
    assert json.loads(done.read_text())["metrics"]["train/steps"] == STEPS
