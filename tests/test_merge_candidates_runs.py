"""MLflow child runs (merge candidates, stages) on a real SQLite store: each records its process, ends with the
right status, and is marked KILLED by the next start once its process was killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from workbench.tracking import Tracker, child_run

CANDIDATE_PROCESS = textwrap.dedent(
    """
    import sys, time
    from mlflow.tracking import MlflowClient
    from workbench.tracking import child_run

    client = MlflowClient(sys.argv[1])
    tags = {"workbench.stage": "soup", "workbench.kind": "merge-candidate", "workbench.candidate": "0"}
    with child_run(client, sys.argv[2], "soup/candidate-0", tags) as run:
        print(run.run_id, flush=True)
        time.sleep(600)  # merging, until SIGKILL
    """
)


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "merge-runs", tmp_path / "artifacts", tmp_path / "runs")


def _parent(tracker: Tracker) -> str:
    return tracker.client.create_run(tracker.experiment_id, run_name="recipe").info.run_id


def test_a_killed_candidate_run_is_reaped(tracker, tmp_path):
    uri, parent = f"sqlite:///{tmp_path / 'mlflow.db'}", _parent(tracker)
    process = subprocess.Popen(
        [sys.executable, "-c", CANDIDATE_PROCESS, uri, parent],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, process.stderr.read() if process.poll() is not None else "no run id"
        assert tracker.reap_dead_runs() == [], "a candidate whose process is alive is left alone"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "RUNNING", "SIGKILL ends nothing"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["workbench.pid"] == str(process.pid)

    assert tracker.reap_dead_runs() == [run_id]
    assert tracker.client.get_run(run_id).info.status == "KILLED"
    assert tracker.client.get_run(parent).info.status == "RUNNING", "a run with no owner process is not touched"


@pytest.mark.parametrize(
    ("raised", "status"), [(None, "FINISHED"), (ValueError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_a_child_run_ends_with_the_status_of_its_body(tracker, raised, status):
    parent = _parent(tracker)
    expected = pytest.raises(raised) if raised else contextlib.nullcontext()
    with expected, child_run(tracker.client, parent, "soup/candidate-1", {"workbench.candidate": "1"}) as run:
        run.log_metrics({"eval_loss": 1.5})
        if raised:
            raise raised
    got = tracker.client.get_run(run.run_id)
    assert got.info.status == status
    assert got.info.run_name == "soup/candidate-1"
    assert got.data.metrics == {"eval_loss": 1.5}
    assert got.data.tags["mlflow.parentRunId"] == parent and got.data.tags["workbench.candidate"] == "1"
    assert got.data.tags["workbench.pid"] == str(os.getpid())


def test_a_stage_run_is_a_child_run_ended_with_its_status_and_no_fluent_run_is_touched(tracker, monkeypatch):
    """Stage runs are children of the parent run, FINISHED or FAILED as their stage; mlflow's process-global active
    run is never started or ended (a notebook's own run stays active, nothing logs into ours by accident)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.uri)
    users = mlflow.start_run(experiment_id=tracker.experiment_id, run_name="the user's own")
    parent = tracker.start_parent("recipe", {})
    try:
        with tracker.stage_run("sft", {"workbench.kind": "sft"}) as run:
            assert tracker.client.stage == "sft", "calls the server misses go to the stage's outbox"
            run.log_metrics({"train/loss": 2.0})
        with pytest.raises(ValueError), tracker.stage_run("dpo", {"workbench.kind": "preference"}) as failed:
            raise ValueError("diverged")
        assert tracker.client.stage is None and mlflow.active_run().info.run_id == users.info.run_id
    finally:
        tracker.end_parent("FINISHED")
        mlflow.end_run()
    finished, failed = (tracker.client.get_run(r.run_id) for r in (run, failed))
    assert (finished.info.status, failed.info.status) == ("FINISHED", "FAILED")
    assert finished.data.metrics == {"train/loss": 2.0}
    for got, name in ((finished, "sft"), (failed, "dpo")):
        assert got.info.run_name == name
        assert got.data.tags["mlflow.parentRunId"] == parent.run_id
        assert got.data.tags["workbench.pid"] == str(os.getpid()) and "workbench.pid_started" in got.data.tags
        assert "mlflow.user" in got.data.tags, "the tags mlflow.start_run would add"
