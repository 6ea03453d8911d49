"""The tracking server killed in the middle of a training stage (a real `mlflow server` process, SIGKILLed and
started again on the same store): the stage finishes and is committed, what it could not log is kept in its folder,
the next stage stops with one line, and once the server is back every kept call reaches the run; `workbench sync`
sends a kept outbox too."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import MlflowServer, workbench_cli, write_tiny_project

pytestmark = pytest.mark.slow

STEPS = 160


def _sft_run(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`workbench.stage` = 'sft'") if found else []
    return runs[0] if runs else None


def _kept(root: Path) -> list[Path]:
    return sorted(root.glob("runs/tiny/**/tracking-outbox/*.json"))


@pytest.fixture
def server(tmp_path):
    """A real tracking server the test may kill and start again; stopped at the end whatever happened."""
    server = MlflowServer(tmp_path / "server")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()


def test_server_killed_mid_stage_loses_nothing(tmp_path, server):
    uri = server.uri
    recipe = write_tiny_project(
        tmp_path, {"max_steps": STEPS, "save_steps": 1000, "logging_steps": 1, "sample_count": 2}, tracking_uri=uri
    )
    spec = yaml.safe_load(recipe.read_text())
    spec["stages"].append({"name": "sft2", "kind": "sft", "from": "sft", "data": "data/train.jsonl",
                           "max_length": 192, "max_steps": 2, "batch_size": 8, "sample_count": 0})  # fmt: skip
    recipe.write_text(yaml.safe_dump(spec, sort_keys=False))
    client = MlflowClient(uri)
    run = subprocess.Popen(
        [*workbench_cli(), "run", str(recipe)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # the sft stage is training: its first loss points reached the server
            sft = _sft_run(client, "tiny")
            if sft is not None and len(client.get_metric_history(sft.info.run_id, "loss")) >= 3:
                break
            assert run.poll() is None, run.communicate()
            time.sleep(0.3)
        else:
            pytest.fail("the sft stage never logged a loss")
        sft_id = sft.info.run_id
        server.kill()
        out, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    # the stage finished and was committed; the next stage cannot open its run and stops with one line
    assert run.returncode == 1, out + err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert (
        len(errors) == 1
        and err.strip().endswith(errors[0])
        and errors[0].startswith(f"error: MLflow tracking server {uri} is not answering")
    ), err
    assert "Traceback" not in err, err[err.index("Traceback") - 500 :][:3000]
    assert "tracking calls are kept under" in errors[0]
    done = list((tmp_path / "runs/tiny/sft").glob("*/stage.json"))
    assert len(done) == 1, "sft is committed"
    info = json.loads(done[0].read_text())
    assert info["metrics"]["train/steps"] == STEPS
    kept = _kept(tmp_path)
    assert any(path.parent.parent.name == "sft" for path in kept), "the stage's calls are kept in its folder"
    assert not (tmp_path / "runs/tiny/sft2").exists() or not list((tmp_path / "runs/tiny/sft2").glob("*/stage.json"))

    # back: the next run sends everything kept first, takes sft from the cache and runs sft2
    server.start()
    try:
        again = subprocess.run([*workbench_cli(), "run", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "tracking calls kept while the server was away" in again.stdout
        assert "sft (sft) cached" in again.stdout and not _kept(tmp_path)
        finished = client.get_run(sft_id)
        assert finished.info.status == "FINISHED"
        steps = sorted(point.step for point in client.get_metric_history(sft_id, "loss"))
        assert steps == list(range(1, STEPS + 1)), "every loss point, before and after the kill"
        assert finished.data.metrics["train/loss"] == pytest.approx(info["metrics"]["train/loss"])
        artifacts = {item.path for item in client.list_artifacts(sft_id)}
        assert {"stage.json", "samples.json"} <= artifacts
        parents = client.search_runs(
            [finished.info.experiment_id], "tags.`workbench.recipe` = 'tiny'", order_by=["attributes.start_time ASC"]
        )
        first = next(p for p in parents if p.info.run_id == finished.data.tags["mlflow.parentRunId"])
        assert first.info.status == "FAILED" and "not answering" in first.data.tags["mlflow.note.content"]
    finally:
        server.stop()


def test_workbench_sync_sends_a_kept_outbox(tmp_path, server):
    """Calls kept by a client whose server died reach the run through `workbench sync` once it is back."""
    from workbench.tracking_outbox import ResilientClient

    uri = server.uri
    recipe = write_tiny_project(tmp_path, tracking_uri=uri)
    store = tmp_path / "runs" / "tiny"
    client = ResilientClient(MlflowClient(uri), uri, store)
    client.stage = "sft"
    experiment = client.create_experiment("kept")
    run_id = client.create_run(experiment).info.run_id
    report = tmp_path / "report.json"
    report.write_text('{"score": 1}')
    server.kill()
    try:
        started = time.monotonic()
        client.log_param(run_id, "lr", "0.1")
        client.log_metric(run_id, "loss", 2.5, step=7)
        client.log_artifact(run_id, str(report), "reports")
        client.set_terminated(run_id, "FINISHED")
        assert time.monotonic() - started < 60, "one failed request, then the rest is kept without waiting"
        report.unlink()  # the artifact was copied into the outbox: the original may be a temporary
        assert client.offline and client.queued == 4
        assert len(list((store / "sft" / "tracking-outbox").glob("*.json"))) == 4
        server.start()
        synced = subprocess.run([*workbench_cli(), "sync", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "sent 4 tracking calls" in synced.stdout
        got = MlflowClient(uri).get_run(run_id)
        assert got.data.params == {"lr": "0.1"} and got.data.metrics == {"loss": 2.5}
        assert got.info.status == "FINISHED"
        assert [a.path for a in MlflowClient(uri).list_artifacts(run_id, "reports")] == ["reports/report.json"]
        assert not list((store / "sft" / "tracking-outbox").glob("*.json"))
        nothing = subprocess.run([*workbench_cli(), "sync", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
        assert nothing.returncode == 0 and "nothing to send" in nothing.stdout
    finally:
        server.stop()


def test_the_client_sends_what_it_kept_as_soon_as_the_server_answers_again(tmp_path, server, monkeypatch):
    """Within one run: calls made while the server is away are kept; the first call after it answers its health
    check again sends them first, in order, then itself, and nothing is counted as kept any more."""
    import workbench.tracking_outbox as outbox
    from workbench.tracking_outbox import ResilientClient

    monkeypatch.setattr(outbox, "PROBE_SECONDS", 0.0)
    heard: list[str] = []
    client = ResilientClient(MlflowClient(server.uri), server.uri, tmp_path / "runs" / "r", heard.append)
    client.stage = "sft"
    run_id = client.create_run(client.create_experiment("live")).info.run_id
    server.kill()
    client.log_metric(run_id, "loss", 3.0, step=1)
    client.log_metric(run_id, "loss", 2.0, step=2)
    assert client.offline and client.queued == 2 and len(heard) == 1 and "not answering" in heard[0]
    server.start()
    client.log_metric(run_id, "loss", 1.0, step=3)
    assert not client.offline and client.queued == 0
    history = MlflowClient(server.uri).get_metric_history(run_id, "loss")
    assert [(point.step, point.value) for point in sorted(history, key=lambda p: p.step)] == [
        (1, 3.0),
        (2, 2.0),
        (3, 1.0),
    ]
    assert not list((tmp_path / "runs" / "r" / "sft" / "tracking-outbox").glob("*.json"))
