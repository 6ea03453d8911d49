"""Read dataset files as records that remember where they came from (line or row number)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.errors import StageError

NOT_UTF8 = "not UTF-8"
INVALID_JSON = "invalid JSON"
"""Followed by the parser's message in parentheses: `invalid JSON (Expecting value)`."""
NOT_OBJECT = "not a JSON object"
NOT_MAPPING = "not a mapping"
EMPTY = "empty"
"""A blank JSONL line, reported only when the reader is asked to (`blank_lines="report"`)."""


@dataclass(frozen=True)
class Record:
    """One example and its location: a 1-based line for JSONL, a 1-based row otherwise."""

    location: int
    data: Any


@dataclass
class ReadResult:
    records: list[Record]
    unreadable: list[tuple[int, str]]
    """(location, reason) for lines that are not valid JSON objects (and rows that are not mappings), in order."""
    unit: str
    """'line' or 'row': how `Record.location` counts."""


def read_records(path: Path, blank_lines: Literal["skip", "report"] = "skip") -> ReadResult:
    """Load JSONL, JSON (a list), Parquet, or a saved Hugging Face dataset folder.

    Blank JSONL lines are skipped, or with `blank_lines="report"` listed as unreadable (`EMPTY`) with their line.
    """
    if not path.exists():
        raise StageError(f"{path}: file not found")
    if path.is_dir():
        return _rows(_load_hf_folder(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, report_blank=blank_lines == "report")
    if suffix == ".json":
        try:
            value = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StageError(f"{path}: not valid JSON: {error}") from None
        if not isinstance(value, list):
            raise StageError(f"{path}: a .json dataset must be a list of records")
        return _rows(value)
    if suffix == ".parquet":
        return _rows(read_parquet_rows(path))
    raise StageError(f"{path}: unsupported data format '{suffix}' (use .jsonl, .json, .parquet or a dataset folder)")


def _read_jsonl(path: Path, report_blank: bool) -> ReadResult:
    records, unreadable = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM, as Windows tools write: not part of line 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                unreadable.append((number, NOT_UTF8))
                continue
            if not text.strip():
                if report_blank:
                    unreadable.append((number, EMPTY))
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                unreadable.append((number, f"{INVALID_JSON} ({error.msg})"))
                continue
            if not isinstance(value, dict):
                unreadable.append((number, NOT_OBJECT))
                continue
            records.append(Record(number, value))
    return ReadResult(records, unreadable, "line")


def _rows(rows: list[Any]) -> ReadResult:
    records, unreadable = [], []
    for number, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            records.append(Record(number, row))
        else:
            unreadable.append((number, NOT_MAPPING))
    return ReadResult(records, unreadable, "row")


def _load_hf_folder(path: Path) -> list[dict]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise StageError(f"{path}: not a saved Hugging Face dataset ({error})") from None
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise StageError(f"{path}: dataset has splits {list(dataset)} but no 'train' split")
        dataset = dataset["train"]
    return dataset.to_list()


def iter_texts(path: Path):
    """Text for tokenizer training: message contents of chat records, `text` fields, or plain lines."""
    from workbench.data.tool_calls import has_tool_calls, lfm2_turn, tool_calls_problem

    if path.suffix.lower() == ".txt":
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            yield from (line.rstrip("\r\n") for line in handle)
        return
    for record in read_records(path).records:
        data = record.data
        if isinstance(data.get("text"), str):
            yield data["text"]
        for message in data.get("messages") or []:
            if isinstance(message, dict) and has_tool_calls(message) and tool_calls_problem(message) is None:
                message = lfm2_turn(message)  # OpenAI-style calls train the tokenizer as the LFM2 text they become
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                yield message["content"]
        if data.get("tools"):
            yield json.dumps(data["tools"])


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    """A Parquet file's rows as dicts; a corrupt or unreadable file is a one-line error naming it."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as error:
        raise StageError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
