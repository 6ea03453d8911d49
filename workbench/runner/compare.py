"""`workbench compare A B`: what changed between two recipe runs, and did it help.

A and B are MLflow parent runs (ids) or recipe files (their latest run). Read from what every run logs: its
resolved recipe (each stage's config and hash), its `summary.json` (what ran or was cached, each evaluate stage's
metrics, each gate's result) and the evaluate stages' per-sample tables (`samples/<suite>.json`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import WorkbenchError


@dataclass
class StageChange:
    stage: str
    change: str
    """'config changed', 'inputs changed' (same config, an upstream stage changed), 'added', 'removed', 'same'."""
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)
    """(field, A's value, B's value) for each config field that differs."""
    status_a: str = "-"
    status_b: str = "-"
    """ran, resumed, cached, or - when the run did not reach the stage."""


@dataclass
class MetricDelta:
    stage: str
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass
class Flip:
    stage: str
    suite: str
    task: str
    doc_id: int
    a: float
    b: float
    prompt: str


@dataclass
class Comparison:
    a: Any
    b: Any
    """The two MLflow parent runs."""
    stages: list[StageChange]
    metrics: list[MetricDelta]
    gates: list[dict[str, Any]]
    """B's gates, each with A's verdict on the same gate (`passed_a`; None when A did not check it)."""
    flips: list[Flip]
    figures: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """Per run ('A', 'B'), the PNG figures logged on it."""

    @property
    def changed(self) -> list[str]:
        return [s.stage for s in self.stages if s.change != "same"]


def find_run(client, reference: str, experiment: str | None = None):
    """A parent run by id, or the latest parent run of a recipe file's experiment."""
    from mlflow.exceptions import MlflowException

    path = Path(reference)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise WorkbenchError(f"{reference}: recipe file not found")
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        name = recipe.get("name")
        found = client.get_experiment_by_name((recipe.get("tracking") or {}).get("experiment") or name)
        runs = [] if found is None else client.search_runs(
            [found.experiment_id], filter_string=f"tags.`workbench.recipe` = '{name}'",
            order_by=["attributes.start_time DESC"], max_results=50,
        )  # fmt: skip
        parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
        if not parents:
            raise WorkbenchError(f"{reference}: no run of recipe '{name}' in this tracking store yet")
        return parents[0]
    try:
        run = client.get_run(reference)
    except MlflowException:
        raise WorkbenchError(f"no MLflow run '{reference}' (give a run id or a recipe file)") from None
    if "mlflow.parentRunId" in run.data.tags:
        raise WorkbenchError(f"run '{reference}' is a stage's run; give the recipe run (its parent)")
    return run


def compare(client, a, b) -> Comparison:
    with tempfile.TemporaryDirectory() as tmp, _no_download_bars():
        summaries = [_artifact_json(client, run, "summary.json", Path(tmp)) for run in (a, b)]
        resolved = [_resolved_stages(client, run, Path(tmp)) for run in (a, b)]
        figures = {label: _figures(client, run, Path(tmp)) for label, run in (("A", a), ("B", b))}
        flips = _flips(client, summaries, Path(tmp))
    return Comparison(a, b, _stage_changes(resolved, summaries), _metric_deltas(summaries), _gates(summaries),
                      flips, figures)  # fmt: skip


@contextmanager
def _no_download_bars() -> Iterator[None]:
    """mlflow draws a progress bar per downloaded artifact: dozens of small JSON files would print dozens of
    bars before the comparison; the variable is read at each download and restored after."""
    previous = os.environ.get(_BARS)
    os.environ[_BARS] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_BARS, None)
        else:
            os.environ[_BARS] = previous


_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def _artifact_json(client, run, path: str, tmp: Path) -> dict:
    try:
        local = client.download_artifacts(run.info.run_id, path, str(tmp / run.info.run_id))
    except Exception:  # noqa: BLE001 (a run from before summaries existed, or a killed one)
        return {}
    return json.loads(Path(local).read_text(encoding="utf-8"))


def _resolved_stages(client, run, tmp: Path) -> dict[str, dict]:
    try:
        local = client.download_artifacts(run.info.run_id, "recipe/resolved.yaml", str(tmp / run.info.run_id))
    except Exception:  # noqa: BLE001
        raise WorkbenchError(
            f"run '{run.info.run_id}' has no recipe/resolved.yaml: not a workbench recipe run"
        ) from None
    recipe = yaml.safe_load(Path(local).read_text(encoding="utf-8"))
    return {stage["name"]: stage for stage in recipe.get("stages", [])}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def _stage_changes(resolved: list[dict[str, dict]], summaries: list[dict]) -> list[StageChange]:
    a, b = resolved
    names = list(b) + [name for name in a if name not in b]
    changes = []
    for name in names:
        statuses = [_status(s.get("stages", {}), name) for s in summaries]
        if name not in a or name not in b:
            changes.append(StageChange(name, "added" if name not in a else "removed", [], *statuses))
            continue
        if a[name]["hash"] == b[name]["hash"]:
            changes.append(StageChange(name, "same", [], *statuses))
            continue
        flat_a = _flatten({k: v for k, v in a[name].items() if k != "hash"})
        flat_b = _flatten({k: v for k, v in b[name].items() if k != "hash"})
        fields = [(key, flat_a.get(key), flat_b.get(key)) for key in sorted(set(flat_a) | set(flat_b))
                  if flat_a.get(key) != flat_b.get(key)]  # fmt: skip
        changes.append(StageChange(name, "config changed" if fields else "inputs changed", fields, *statuses))
    return changes


def _status(statuses: dict[str, str], name: str) -> str:
    """A stage's status in a run; a swept stage's from its candidates' (`ran` when all ran, else `1 ran, 2 cached`)."""
    from workbench.api.sweeps import stage_of

    if name in statuses:
        return statuses[name]
    counts: dict[str, int] = {}
    for candidate, status in statuses.items():
        if stage_of(candidate) == name:
            counts[status] = counts.get(status, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{count} {status}" for status, count in counts.items()) or "-"


def _metric_deltas(summaries: list[dict]) -> list[MetricDelta]:
    a, b = (s.get("metrics", {}) for s in summaries)
    deltas = []
    for stage in list(b) + [s for s in a if s not in b]:
        names = sorted(set(a.get(stage, {})) | set(b.get(stage, {})))
        deltas += [MetricDelta(stage, name, a.get(stage, {}).get(name), b.get(stage, {}).get(name)) for name in names]
    return deltas


def _gates(summaries: list[dict]) -> list[dict[str, Any]]:
    a, b = (s.get("gates", {}) for s in summaries)
    rows = []
    for stage, results in b.items():
        before = {r["gate"]: r["passed"] for r in a.get(stage, [])}
        rows += [r | {"stage": stage, "passed_a": before.get(r["gate"])} for r in results]
    return rows


def _flips(client, summaries: list[dict], tmp: Path) -> list[Flip]:
    """Samples of an evaluate stage both runs scored whose score differs between them."""
    a, b = summaries
    flips = []
    for stage in b.get("metrics", {}):
        runs = [s.get("runs", {}).get(stage) for s in summaries]
        if stage not in a.get("metrics", {}) or None in runs or runs[0] == runs[1]:
            continue  # not in both, or the same (cached) evaluation: nothing can have flipped
        suites = sorted({name.split("/")[0] for name in b["metrics"][stage] if "/" in name})
        for suite in suites:
            tables = [_samples(client, run_id, suite, tmp) for run_id in runs]
            for key, (score_b, prompt) in tables[1].items():
                score_a = tables[0].get(key, (None, ""))[0]
                if score_a is not None and score_b is not None and score_a != score_b:
                    flips.append(Flip(stage, suite, key[0], key[1], score_a, score_b, prompt))
    return flips


def _samples(client, run_id: str, suite: str, tmp: Path) -> dict[tuple[str, int], tuple[float | None, str]]:
    try:
        local = client.download_artifacts(run_id, f"samples/{suite}.json", str(tmp / run_id))
    except Exception:  # noqa: BLE001 (a stock task without a table, or a run without samples)
        return {}
    table = json.loads(Path(local).read_text(encoding="utf-8"))
    columns = table["columns"]
    rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
    return {(str(r.get("task")), int(r.get("doc_id", -1))): (r.get("score"), str(r.get("prompt", ""))) for r in rows}


def _figures(client, run, tmp: Path) -> dict[str, bytes]:
    found = {}
    try:
        listed = client.list_artifacts(run.info.run_id, "figures")
    except Exception:  # noqa: BLE001
        return found
    for item in listed:
        if item.path.endswith(".png"):
            local = client.download_artifacts(run.info.run_id, item.path, str(tmp / run.info.run_id))
            found[Path(item.path).name] = Path(local).read_bytes()
    return found
