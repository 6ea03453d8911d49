"""Load a chat dataset for training: validate, apply the over-length policy, report every exclusion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workbench.api.context import StageContext
from workbench.data.chat import OVERLENGTH, DataReport, InvalidPolicy, OverlengthPolicy, load_chat_records
from workbench.data.report import publish_report
from workbench.errors import StageError


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
            report.add(f"{OVERLENGTH}={max_length} tokens", record.location)
            long_locations.add(record.location)
    if long_locations and overlength == "error":
        raise StageError("\n".join(report.lines()) + "\n(raise max_length, or set overlength: drop or truncate)")
    if overlength == "drop":
        kept = [r for r in kept if r.location not in long_locations]
    publish_report(ctx, report, len(kept), overlength, metric_prefix)
    if not kept:
        raise StageError(f"{relative}: no usable records left")
    examples = [
        {"messages": r.data["messages"], "tools": json.dumps(r.data["tools"]) if r.data.get("tools") else None}
        for r in kept
    ]
    return ChatData(examples, [r.data for r in kept], report)
