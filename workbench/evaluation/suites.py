"""The `suite` namespace: the suites recipes may name (ours in `evals/`, or any task in lm-eval's index), the
metric names each of ours reports, and the folder whose content defines it (hashed into the stages that use it)."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from workbench.api.kinds import Namespace
from workbench.evaluation import tasks


def our_suites(_root: Path | None = None) -> list[str]:
    """Suites defined in `evals/` (a folder with its group file `_<suite>.yaml`)."""
    return sorted(p.parent.name for p in tasks.REPO_EVALS.glob("*/_*.yaml") if p.stem == f"_{p.parent.name}")


@functools.cache
def suite_metrics(suite: str) -> list[str] | None:
    """`<suite>/<metric>` for each metric our suite's group reports; None for a stock lm-eval task."""
    group = tasks.REPO_EVALS / suite / f"_{suite}.yaml"
    if not group.is_file():
        return None
    data = yaml.safe_load(group.read_text(encoding="utf-8")) or {}
    return [f"{suite}/{entry['metric']}" for entry in data.get("aggregate_metric_list", []) if "metric" in entry]


def is_lm_eval_task(name: str) -> bool:
    """Whether lm-eval's task index (built once per process, a few seconds) knows `name`."""
    from workbench.evaluation.api import task_manager

    try:
        task_manager([name])
    except Exception:  # noqa: BLE001 (an unknown name or a broken index: either way not a usable task)
        return False
    return True


def _definition(suite: str, _root: Path) -> tuple[str, Path] | None:
    folder = tasks.REPO_EVALS / suite
    return (f"evals/{suite}", folder) if folder.is_dir() else None


SUITES = Namespace(
    name="suite",
    names=our_suites,
    contains=lambda name, _root: is_lm_eval_task(name),
    definition=_definition,
    members=lambda name, _root: suite_metrics(name),
)
