"""Publishing what a data check found: each problem printed with what happened to its records, a summary line,
the counts logged as metrics and the problem list kept as a text artifact of the stage's run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from workbench.data.chat import OVERLENGTH, DataReport, OverlengthPolicy

if TYPE_CHECKING:
    from workbench.api.context import StageContext


def report_artifact(key: str) -> str:
    """Where the problem list of the data logged under metric prefix `key` is kept in the stage's run."""
    return f"data/{key.replace('/', '_')}_report.txt"


def publish_problems(
    ctx: StageContext,
    lines: list[str],
    summary: str,
    metrics: dict[str, float],
    key: str,
    action: Callable[[str], str] = lambda line: "dropped",
    notes: list[str] | None = None,
) -> None:
    """Print every problem line with `action(line)` (what happened to those records), every note line (records
    kept, such as repeats) and the summary; log the metrics and, when there is anything to say, the lines as the
    artifact `report_artifact(key)`."""
    for line in lines:
        ctx.console.print(f"  [yellow]data:[/] {line} — {action(line)}")
    kept = [f"{line} — kept" for line in notes or []]
    for line in kept:
        ctx.console.print(f"  data: {line}")
    ctx.console.print(f"  data: {summary}")
    ctx.tracker.log_metrics(metrics)
    if lines or kept:
        ctx.tracker.log_text("\n".join(lines + kept) + "\n", report_artifact(key))


def publish_report(
    ctx: StageContext, report: DataReport, used: int, overlength: OverlengthPolicy, key: str, noun: str = "records"
) -> None:
    """Print each problem with what happened to those records and how many are used; log the counts as
    `<key>/...` metrics and the report itself as an artifact of the stage's run."""
    publish_problems(
        ctx,
        report.lines(),
        f"{report.source}: using {used} of {report.total} {noun}",
        report.metrics(key) | {f"{key}/used": float(used)},
        key,
        action=lambda line: "truncated" if OVERLENGTH in line and overlength == "truncate" else "dropped",
        notes=report.note_lines(),
    )
