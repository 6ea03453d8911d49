"""What a reviewer sees on a recipe run's MLflow parent run: one place that says what ran, what it scored, which
gates passed, what was registered and, for a failed run, why.

The parent run gets a distinguishing name (recipe, a short digest of its stage hashes, the start time), each
evaluate stage's metrics as `<stage>/<suite>/<metric>`, gate counts, run-wide figures (`run/seconds`,
`run/stages_ran`, `run/stages_cached`), every stage's hash as a param, tags naming what ran, was cached and
registered, a description (the recipe's own and the gate tables) and `summary.json`, everything at once, which
`workbench compare` reads.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.runner.plan import Plan

NOTE_TAG = "mlflow.note.content"  # what MLflow's UI shows as the run's description


def runs_table_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in MLflow's UI: MLflow 3 opens experiments in its GenAI view (traces) unless the
    URL asks for model training."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_name(recipe_name: str, plan: Plan, started: float) -> str:
    """`<recipe> <digest of the stage hashes> <month-day hour:minute>`: two runs of one configuration share the
    digest, a changed stage changes it, and the time tells runs of one configuration apart."""
    digest = hashlib.sha256(",".join(s.hash for s in plan.stages).encode()).hexdigest()[:6]
    return f"{recipe_name} {digest} {time.strftime('%m-%d %H:%M', time.localtime(started))}"


@dataclass
class RunSummary:
    """Collected while the recipe runs; `log` writes it onto the parent run at the end, whatever the outcome."""

    recipe_name: str
    description: str
    hashes: dict[str, str]
    started: float = field(default_factory=time.time)
    statuses: dict[str, str] = field(default_factory=dict)
    """Each stage that was reached: ran, resumed or cached."""
    kinds: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    """Each stage's MLflow run with its metric histories (for a cached stage, the run that made it)."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each evaluate stage's recorded metrics."""
    gates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    registered: dict[str, Any] | None = None
    failure: str | None = None
    status: str = "RUNNING"

    def stage_done(self, name: str, kind: str, status: str, info: dict[str, Any], scores: bool = False) -> None:
        """Record a finished stage; `scores`: its metrics are suite scores (the kind's `scores`)."""
        self.statuses[name] = status
        self.kinds[name] = kind
        if info.get("mlflow_run_id"):
            self.runs[name] = str(info["mlflow_run_id"])
        if scores:
            self.metrics[name] = {k: float(v) for k, v in info.get("metrics", {}).items() if not k.startswith("eval/")}

    def reviewed(self, name: str, details: dict[str, Any]) -> None:
        if details.get("gates"):
            self.gates[name] = details["gates"]
        if details.get("registered"):
            self.registered = details["registered"] | {"stage": name}

    def as_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe_name,
            "status": self.status,
            "failure": self.failure,
            "seconds": round(time.time() - self.started, 3),
            "hashes": self.hashes,
            "stages": self.statuses,
            "kinds": self.kinds,
            "runs": self.runs,
            "metrics": self.metrics,
            "gates": self.gates,
            "registered": self.registered,
        }

    def parent_metrics(self) -> dict[str, float]:
        metrics = {f"{stage}/{name}": value for stage, values in self.metrics.items() for name, value in values.items()}
        for stage, results in self.gates.items():
            metrics[f"{stage}/gates_passed"] = float(sum(r["passed"] for r in results))
            metrics[f"{stage}/gates_failed"] = float(sum(not r["passed"] for r in results))
        metrics["run/seconds"] = time.time() - self.started
        metrics["run/stages_ran"] = float(sum(s != "cached" for s in self.statuses.values()))
        metrics["run/stages_cached"] = float(sum(s == "cached" for s in self.statuses.values()))
        return metrics

    def tags(self) -> dict[str, str]:
        tags = {
            "workbench.stages_ran": ", ".join(n for n, s in self.statuses.items() if s != "cached") or "-",
            "workbench.stages_cached": ", ".join(n for n, s in self.statuses.items() if s == "cached") or "-",
            NOTE_TAG: self.note(),
        }
        if self.registered:
            tags["workbench.registered_model"] = str(self.registered.get("name"))
            tags["workbench.registered_version"] = str(self.registered.get("version"))
        if self.failure:
            tags["workbench.failure"] = self.failure[:5000]
        return tags

    def note(self) -> str:
        """The run's description in MLflow's UI (Markdown): the recipe's description, the outcome, the gates."""
        lines = [self.description or f"Recipe `{self.recipe_name}`.", ""]
        if self.failure:
            lines += [f"**Failed**: {self.failure.splitlines()[0]}", ""]
        ran = [n for n, s in self.statuses.items() if s != "cached"]
        cached = [n for n, s in self.statuses.items() if s == "cached"]
        lines.append(f"Ran: {', '.join(ran) or 'nothing'}. Cached: {', '.join(cached) or 'nothing'}.")
        if self.registered:
            lines.append(f"Registered: {self.registered.get('name')} version {self.registered.get('version')}.")
        for stage, results in self.gates.items():
            lines += ["", f"Gates of `{stage}`:", "", "| gate | value | bound | result |", "| --- | --- | --- | --- |"]
            for r in results:
                value = "not measured" if r["value"] is None else f"{r['value']:.4f}"
                bound = "not measured" if r["bound"] is None else f"{r['bound']:.4f}"
                lines.append(f"| `{r['gate']}` | {value} | {bound} | {'PASS' if r['passed'] else 'FAIL'} |")
        return "\n".join(lines)

    def log(self, client, run_id: str) -> None:
        """Everything onto the parent run (metrics, stage hashes as params, tags, description, summary.json)."""
        from mlflow.entities import Metric, Param, RunTag

        from workbench.tracking import key_safe

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, 0) for key, value in self.parent_metrics().items()]
        params = [Param(f"hash.{key_safe(stage)}", value) for stage, value in self.hashes.items()]
        tags = [RunTag(key, value) for key, value in self.tags().items()]
        for start in range(0, max(len(metrics), len(params), len(tags)), 100):
            client.log_batch(run_id, metrics=metrics[start : start + 100], params=params[start : start + 100],
                             tags=tags[start : start + 100])  # fmt: skip
        client.log_dict(run_id, self.as_json(), "summary.json")
