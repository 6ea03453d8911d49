"""MLflow tracking: one parent run per `workbench run`, one nested child run per stage (and per merge candidate).

Every run records the process that owns it (`process_tags`), so a later start marks KILLED the runs whose process
was killed (`Tracker.reap_dead_runs`). Trainers log through `workbench.training.tracking_callback`
into the stage's run by its id (never mlflow's fluent active run). Recording calls the server misses are kept on
disk and sent later (`workbench.tracking_outbox`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MAX_PARAM_LENGTH = 6000
# MLflow 3's UI opens an experiment by its kind: a model-training one on the runs table (a GenAI one on traces).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An HTTP tracking server must answer its health check within seconds: otherwise mlflow's client retries for
    minutes and then ends in a traceback, after the recipe has started. Other stores (sqlite, files) are local."""
    from workbench.tracking_outbox import health_problem

    reason = health_problem(uri, timeout)
    if reason is None:
        return
    from workbench.errors import WorkbenchError

    raise WorkbenchError(
        f"MLflow tracking server {uri} is not reachable ({reason}); start it, or point tracking.uri / "
        "MLFLOW_TRACKING_URI at one that runs (unset both for the local SQLite store)"
    )


def default_tracking_uri(recipe_uri: str | None, work_dir: Path) -> str:
    """The recipe's `tracking.uri`, else MLFLOW_TRACKING_URI, else a SQLite store in the work folder."""
    if recipe_uri:
        return recipe_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    work_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(work_dir / 'mlflow.db').resolve()}"


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': '1', 'c': '[1, 2]'}; values cut to MLflow's limit."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(value)[:MAX_PARAM_LENGTH]}


def key_safe(name: str) -> str:
    """`name` as MLflow takes it in a metric, param or tag key: characters it refuses (a candidate's `@` and `=`)
    become `_`."""
    return re.sub(r"[^\w.\- :/]", "_", name)


def model_name_safe(name: str) -> str:
    """`name` as MLflow takes it for a logged model: characters it refuses (`/ : . % " '`) become `_`."""
    return re.sub(r"[/:.%\"']", "_", name)


def process_tags() -> dict[str, str]:
    """Who owns a run, so a later start can tell whether its process is gone."""
    import psutil

    pid = os.getpid()
    return {
        "workbench.host": socket.gethostname(),
        "workbench.pid": str(pid),
        "workbench.pid_started": f"{psutil.Process(pid).create_time():.3f}",
    }


def environment_tags(project_root: Path) -> dict[str, str]:
    """Package versions and the git commit, when there is one."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {}
    for package in ("workbench", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "mlflow"):
        try:
            tags[f"workbench.version.{package}"] = version(package)
        except PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return tags


class StageTracker:
    """Logging into one stage's child run by its id (safe whatever run is active)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Metrics at `step`; with `model_id`, linked to the logged model they measured."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step or 0, model_id=model_id) for key, value in metrics.items()]
        for start in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 500])

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_dict(self, value: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, value, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table (shown in the UI's artifact view; a key missing from a row is empty there)."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        data = {key: [row.get(key) for row in rows] for key in columns}
        self.client.log_table(self.run_id, data=data, artifact_file=artifact_file)


class NullTracker(StageTracker):
    """What a distributed stage's non-main ranks log through: nothing (rank 0 logs once for all of them)."""

    def __init__(self, run_id: str = ""):
        super().__init__(None, run_id)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        pass

    def log_params(self, params: dict[str, str]) -> None:
        pass

    def log_dict(self, value: Any, artifact_file: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        pass


@contextlib.contextmanager
def _ending(end: Callable[[str], None]) -> Iterator[None]:
    """Call `end(status)` on the way out: FINISHED, KILLED on KeyboardInterrupt, FAILED on any other exception."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        end(status)


@contextlib.contextmanager
def child_run(client, parent_run_id: str, run_name: str, tags: dict[str, str]) -> Iterator[StageTracker]:
    """A run nested under `parent_run_id` (same experiment), owned by this process, ended FINISHED, FAILED, or
    KILLED on KeyboardInterrupt. A SIGKILL ends nothing: the run stays RUNNING until `Tracker.reap_dead_runs`
    finds its process gone. It does not become the active fluent run (`Tracker.stage_run` does that on top)."""
    from mlflow.tracking.context.registry import resolve_tags

    experiment = client.get_run(parent_run_id).info.experiment_id
    # resolve_tags adds what `mlflow.start_run` adds (user, source); ours win
    tags = resolve_tags(tags | process_tags() | {"mlflow.parentRunId": parent_run_id})
    run_id = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
    with _ending(lambda status: client.set_terminated(run_id, status=status)):
        yield StageTracker(client, run_id)


class Tracker:
    """Opens the parent run and the stage runs of one `workbench run`. Its client keeps recording calls in an outbox
    under `store_root` while the server is away (`workbench.tracking_outbox`); `on_queue` hears when that starts."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: Path | None,
        store_root: Path,
        on_queue: Callable[[str], None] | None = None,
    ):
        from mlflow.tracking import MlflowClient

        from workbench.tracking_outbox import ResilientClient

        self.uri = uri
        self.client = ResilientClient(MlflowClient(uri), uri, store_root, on_queue)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
            )
        else:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        self.parent_id: str | None = None

    def reap_dead_runs(self) -> list[str]:
        """Mark KILLED the RUNNING runs of this host whose process no longer exists."""
        import psutil

        host = socket.gethostname()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`workbench.host` = '{host}'",
            max_results=1000,
        )
        reaped = []
        for run in runs:
            pid = int(run.data.tags.get("workbench.pid", "0"))
            started = run.data.tags.get("workbench.pid_started")
            try:
                alive = f"{psutil.Process(pid).create_time():.3f}" == started
            except (psutil.NoSuchProcess, ValueError):
                alive = False
            if not alive:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                reaped.append(run.info.run_id)
        return reaped

    def start_parent(self, run_name: str, tags: dict[str, str]) -> StageTracker:
        """The recipe run's parent run. Runs are made through the client, never mlflow's fluent (process-global)
        active run: a notebook's or test's own active run is left alone, and nothing logs into ours by accident."""
        from mlflow.tracking.context.registry import resolve_tags

        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=resolve_tags(tags | process_tags()))
        self.parent_id = run.info.run_id
        return StageTracker(self.client, self.parent_id)

    def end_parent(self, status: str) -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    @contextlib.contextmanager
    def stage_run(self, stage: str, tags: dict[str, str], folder: str | None = None) -> Iterator[StageTracker]:
        """A child run of the parent run (`child_run`) named `stage`; tracking calls the server misses meanwhile are
        kept in the stage's folder (`folder`, default `stage`: a candidate's is its stage's). A server that went away
        during an earlier stage must be back before this one starts."""
        if self.parent_id is None:
            raise RuntimeError("start_parent before stage_run")
        self.client.ensure_online()
        self.client.stage = folder or stage
        try:
            with child_run(self.client, self.parent_id, stage, tags) as run:
                yield run
        finally:
            self.client.stage = None
