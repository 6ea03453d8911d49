"""Load a chat dataset for training: validate, apply the over-length policy, report every exclusion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console

from workbench.data.chat import DataReport, load_chat_records
from workbench.errors import StageError
from workbench.runner.context import StageContext

InvalidPolicy = Literal["error", "drop"]
OverlengthPolicy = Literal["drop", "truncate", "error"]


@dataclass
class ChatData:
    examples: list[dict[str, Any]]
    """Records as trl expects them: `messages`, and `tools` as a JSON string (or None)."""
    raw: list[dict[str, Any]]
    report: DataReport


def load_training_chats(
    ctx: StageContext,
    relative: str,
    tokenizer,
    max_length: int,
    invalid: InvalidPolicy,
    overlength: OverlengthPolicy,
    metric_prefix: str,
) -> ChatData:
    records, report = load_chat_records(ctx.resolve(relative), relative)
    bad = report.bad_locations()
    if bad and invalid == "error":
        raise StageError(
            "\n".join(report.lines()) + "\n(fix the data, or set invalid_records: drop to skip these records)"
        )
    kept = [r for r in records if r.location not in bad]
    long_locations = set()
    for record in kept:
        ids = tokenizer.apply_chat_template(record.data["messages"], tools=record.data.get("tools"), tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        if len(ids) > max_length:
            report.add(f"longer than max_length={max_length} tokens", record.location)
            long_locations.add(record.location)
    if long_locations and overlength == "error":
        raise StageError("\n".join(report.lines()) + "\n(raise max_length, or set overlength: drop or truncate)")
    if overlength == "drop":
        kept = [r for r in kept if r.location not in long_locations]
    _print_report(ctx.console, report, invalid, overlength, len(kept))
    ctx.tracker.log_metrics(report.metrics(metric_prefix) | {f"{metric_prefix}/used": float(len(kept))})
    if report.problems:
        ctx.tracker.log_text("\n".join(report.lines()) + "\n", f"data/{metric_prefix.replace('/', '_')}_report.txt")
    if not kept:
        raise StageError(f"{relative}: no usable records left")
    examples = [
        {"messages": r.data["messages"], "tools": json.dumps(r.data["tools"]) if r.data.get("tools") else None}
        for r in kept
    ]
    return ChatData(examples, [r.data for r in kept], report)


def _print_report(console: Console, report: DataReport, invalid: str, overlength: str, used: int) -> None:
    for line in report.lines():
        action = "truncated" if "max_length" in line and overlength == "truncate" else "dropped"
        console.print(f"  [yellow]data:[/] {line} — {action}")
    console.print(f"  data: {report.source}: using {used} of {report.total} records")
