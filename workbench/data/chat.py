"""Chat-format datasets (`messages`, optional `tools`): validation with locations, never silent drops."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.data.chat_formats import as_messages, is_sharegpt
from workbench.data.records import ReadResult, Record, read_records
from workbench.data.tool_calls import has_tool_calls, lfm2_turn, tool_calls_problem

ROLES = {"system", "user", "assistant", "tool"}
SHOWN_LOCATIONS = 8

InvalidPolicy = Literal["error", "drop"]
"""Malformed records: stop the stage, or drop them (always reported)."""
OverlengthPolicy = Literal["drop", "truncate", "error"]
"""Records over max_length: drop, truncate the end, or stop (always reported)."""
OVERLENGTH = "longer than max_length"
"""How over-length records are named in a report (the truncate policy keeps these)."""
REPEATED_RECORD = "repeating an earlier record (same messages and tools)"
SHAREGPT_RECORD = "in ShareGPT form (read as messages)"


@dataclass
class DataReport:
    """What was found in a dataset: problem -> locations, and notes -> locations for records that are kept but
    worth knowing about (repeats). Used for printing and MLflow."""

    source: str
    unit: str
    total: int = 0
    problems: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    notes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, problem: str, location: int) -> None:
        self.problems[problem].append(location)

    def note(self, note: str, location: int) -> None:
        self.notes[note].append(location)

    def lines(self) -> list[str]:
        return self._lines(self.problems)

    def note_lines(self) -> list[str]:
        return self._lines(self.notes)

    def _lines(self, found: dict[str, list[int]]) -> list[str]:
        out = []
        for problem, where in sorted(found.items()):
            shown = ", ".join(map(str, where[:SHOWN_LOCATIONS])) + (", ..." if len(where) > SHOWN_LOCATIONS else "")
            plural = "s" if len(where) > 1 else ""
            out.append(f"{self.source}: {len(where)} record{plural} {problem} ({self.unit}{plural} {shown})")
        return out

    def bad_locations(self) -> set[int]:
        return {loc for where in self.problems.values() for loc in where}

    def metrics(self, prefix: str) -> dict[str, float]:
        metrics = {f"{prefix}/records": float(self.total)}
        for problem, where in (self.problems | self.notes).items():
            metrics[f"{prefix}/{metric_key(problem)}"] = float(len(where))
        return metrics


class Repeats:
    """Notes (does not drop) each record that would train exactly like an earlier one: a repeat may be deliberate
    upsampling or an export that wrote a record twice, and the user should see which."""

    def __init__(self, report: DataReport, note: str):
        self.report, self.note = report, note
        self._seen: set[bytes] = set()

    def check(self, location: int, trained: Any) -> None:
        """Note `location` if `trained` (what the record trains on, as JSON) was seen before."""
        key = hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).digest()
        if key in self._seen:
            self.report.note(self.note, location)
        self._seen.add(key)


def json_kind(value: Any) -> str:
    """What a JSON value is, for a reason: `a number`, `a list`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def content_problem(content: Any) -> str:
    """Why a non-text `content` is not text, as a phrase after 'whose 'content' is ...'."""
    if isinstance(content, list) and content and all(isinstance(part, dict) for part in content):
        kinds = sorted({str(part.get("type")) for part in content if part.get("type") != "text"})
        if kinds:
            return f"a list of parts with {', '.join(kinds)}, not text"
    return f"{json_kind(content)}, not text"


def unknown_role(role: Any) -> str | None:
    """`unknown role ("human", not one of assistant, system, tool, user)` for a role outside ROLES, else None."""
    if isinstance(role, str) and role in ROLES:
        return None
    shown = json.dumps(role, ensure_ascii=False)
    shown = shown if len(shown) <= 24 else shown[:23] + "…"
    return f"unknown role ({shown}, not one of {', '.join(sorted(ROLES))})"


def metric_key(problem: str) -> str:
    """A problem phrase as a metric name: `with an empty turn (...)` -> `with_an_empty_turn`."""
    return re.sub(r"[^0-9A-Za-z]+", "_", problem.split("(")[0]).strip("_")


def read_with_report(path: Path, source: str) -> tuple[list[Record], DataReport]:
    """Read a data file; the report starts with its total and every unreadable line."""
    result = read_records(path)
    return result.records, unreadable_report(result, source)


def unreadable_report(result: ReadResult, source: str) -> DataReport:
    """A report of a read's total and every unreadable line (where every data report starts)."""
    report = DataReport(source=source, unit=result.unit, total=len(result.records) + len(result.unreadable))
    for location, reason in result.unreadable:
        report.add(f"unreadable: {reason}", location)
    return report


def load_chat_records(path: Path, source: str) -> tuple[list[Record], DataReport]:
    """Read a chat dataset and check every record; returns all readable records and the report.

    Records are read as `messages` first (`as_messages`: ShareGPT conversations, OpenAI text parts; ShareGPT ones
    are noted). Records without problems come back with OpenAI `tool_calls` rewritten as LFM2 call blocks
    (`lfm2_chat`); those with the same messages and tools as an earlier one are kept and noted.
    """
    records, report = read_with_report(path, source)
    repeats = Repeats(report, REPEATED_RECORD)
    out = []
    for record in records:
        if is_sharegpt(record.data):
            report.note(SHAREGPT_RECORD, record.location)
        record = Record(record.location, as_messages(record.data))
        problems = chat_record_problems(record.data)
        for problem in problems:
            report.add(problem, record.location)
        if problems:
            out.append(record)
            continue
        checked = lfm2_chat(record.data)
        repeats.check(record.location, [checked["messages"], checked.get("tools")])
        out.append(Record(record.location, checked))
    return out, report


def lfm2_chat(data: dict) -> dict:
    """A checked chat record (no `chat_record_problems`) with each assistant turn's OpenAI `tool_calls` written
    into its content as an LFM2 call block, so any chat template renders it."""
    return {**data, "messages": [lfm2_turn(message) for message in data["messages"]]}


def chat_record_problems(data: dict) -> list[str]:
    """The problems of one chat record, as short phrases that read after 'N records ...'."""
    messages = data.get("messages")
    if not isinstance(messages, list):
        return ["without a 'messages' list"]
    if not messages:
        return ["with an empty 'messages' list"]
    problems = set()
    for message in messages:
        if not isinstance(message, dict):
            problems.add("with a message that is not a mapping")
            continue
        role = message.get("role")
        if role is None:
            problems.add("with a message missing its 'role'")
        elif unknown := unknown_role(role):
            problems.add(f"with an {unknown}")
        content = message.get("content")
        calls_problem = tool_calls_problem(message)
        if calls_problem:
            problems.add(calls_problem)
        if has_tool_calls(message) and (content is None or isinstance(content, str)):
            continue  # the calls are the turn (OpenAI writes `content: null` beside them)
        if content is None:
            problems.add("with a message missing its 'content' text")
        elif not isinstance(content, str):  # reported, not coerced: 42 may be a lost "42" or a broken export
            problems.add(f"with a message whose 'content' is {content_problem(content)}")
        elif not content.strip():
            problems.add("with an empty turn")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.add("with no assistant turn")
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        problems.add("with 'tools' that is not a list")
    return sorted(problems)
