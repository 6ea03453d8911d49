"""Read dataset files as records that remember where they came from (line or row number)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
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
NOT_UNICODE = "not valid Unicode (a lone surrogate escape such as \\ud83d)"
"""A JSON line whose escapes decode to half of a surrogate pair, as a cut emoji leaves it: no tokenizer takes it."""
MAX_LINE_BYTES = 8 * 2**20
"""Longer lines are reported (`line_too_long`), not read: a conversation that long is far beyond any context, and a
file without line ends (a binary, a one-line JSON array) must not be read into memory whole."""
_SKIP_CHUNK = 2**20
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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


def read_records(
    path: Path, blank_lines: Literal["skip", "report"] = "skip", max_line_bytes: int = MAX_LINE_BYTES
) -> ReadResult:
    """Load JSONL, JSON (a list), Parquet, or a saved Hugging Face dataset folder.

    Blank JSONL lines are skipped, or with `blank_lines="report"` listed as unreadable (`EMPTY`) with their line;
    lines over `max_line_bytes` are listed as unreadable without being read.
    """
    if not path.exists():
        raise StageError(f"{path}: file not found")
    if path.is_dir():
        return _rows(without_arrow_nulls(_load_hf_folder(path)))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, blank_lines == "report", max_line_bytes)
    if suffix == ".json":
        raw = path.read_bytes()
        try:
            value = json.loads(raw.decode("utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StageError(f"{path}: not valid JSON: {error}") from None
        if not isinstance(value, list):
            raise StageError(f"{path}: a .json dataset must be a list of records")
        return _rows(value, check_unicode=_SURROGATE_ESCAPE.search(raw) is not None)
    if suffix == ".parquet":
        return _rows(without_arrow_nulls(read_parquet_rows(path)))
    raise StageError(f"{path}: unsupported data format '{suffix}' (use .jsonl, .json, .parquet or a dataset folder)")


def line_too_long(limit: int) -> str:
    """The reason for a line over `limit` bytes: `line longer than 8 MiB`."""
    return f"line longer than {limit // 2**20} MiB" if limit % 2**20 == 0 else f"line longer than {limit} bytes"


def iter_lines(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, the line's bytes with its line end) for each line; None for a line longer than
    `max_line_bytes` (line end not counted), which is skipped in chunks, never held whole. A UTF-8 BOM, as Windows
    tools write it, is not part of line 1."""
    limit = max_line_bytes + 5  # room for the longest line, a BOM and "\r\n"
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(limit):
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):  # cut off: the rest of the line is not read
                while (rest := handle.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
                continue
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            yield number, None if len(raw.removesuffix(b"\n").removesuffix(b"\r")) > max_line_bytes else raw


def _read_jsonl(path: Path, report_blank: bool, max_line_bytes: int) -> ReadResult:
    records, unreadable = [], []
    for number, raw in iter_lines(path, max_line_bytes):
        if raw is None:
            unreadable.append((number, line_too_long(max_line_bytes)))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            unreadable.append((number, NOT_UTF8))
            continue
        if not text.strip():
            if report_blank:
                unreadable.append((number, EMPTY))
            continue
        try:  # without its line end, a line cut inside a string reads "Unterminated string", not "Invalid control"
            value = json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as error:
            unreadable.append((number, f"{INVALID_JSON} ({error.msg})"))
            continue
        if not isinstance(value, dict):
            unreadable.append((number, NOT_OBJECT))
            continue
        if _SURROGATE_ESCAPE.search(raw) and not _is_unicode(value):
            unreadable.append((number, NOT_UNICODE))
            continue
        records.append(Record(number, value))
    return ReadResult(records, unreadable, "line")


def _is_unicode(value: Any) -> bool:
    """Whether every string in a parsed JSON value encodes as UTF-8 (escaped surrogate pairs do, lone halves not)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def without_arrow_nulls(rows: list[Any]) -> list[Any]:
    """Rows read from Arrow (Parquet, a saved dataset) without the keys Arrow filled with null.

    Arrow gives every row of a column one struct type, the union of the keys all rows have: a tool's parameters
    gain the other tools' properties as null and a tool call the other calls' arguments (`set_timer(city=None,
    minutes=5)`), a record the columns only other records have. A key whose value is null is dropped at every
    depth (a null inside a list is kept). Arrow cannot tell such a key from one written null on purpose (a tool
    argument `unit: null`, a schema's `default: null`): those are dropped too, where JSONL would keep them."""
    return [_dropped_nulls(row) for row in rows]


def _dropped_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _dropped_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_dropped_nulls(item) for item in value]
    return value


def _rows(rows: list[Any], check_unicode: bool = False) -> ReadResult:
    records, unreadable = [], []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            unreadable.append((number, NOT_MAPPING))
        elif check_unicode and not _is_unicode(row):
            unreadable.append((number, NOT_UNICODE))
        else:
            records.append(Record(number, row))
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


def iter_texts(path: Path, on_unreadable: Callable[[ReadResult], None] | None = None):
    """Text for tokenizer training: message roles and contents of chat records (ShareGPT and OpenAI text parts
    read as messages first; the role names are in every rendered turn, so they become single tokens), tool lists
    as the template writes them, `text` fields, or plain lines. Unreadable lines are left out; `on_unreadable`
    hears of them (with the whole read) first."""
    from workbench.data.chat_formats import as_messages
    from workbench.data.tool_calls import has_tool_calls, lfm2_turn, tool_calls_problem

    if path.suffix.lower() == ".txt":
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            yield from (line.rstrip("\r\n") for line in handle)
        return
    read = read_records(path)
    if read.unreadable and on_unreadable is not None:
        on_unreadable(read)
    for record in read.records:
        data = as_messages(record.data)
        if isinstance(data.get("text"), str):
            yield data["text"]
        for message in data.get("messages") or []:
            if isinstance(message, dict) and has_tool_calls(message) and tool_calls_problem(message) is None:
                message = lfm2_turn(message)  # OpenAI-style calls train the tokenizer as the LFM2 text they become
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                if isinstance(message.get("role"), str):
                    yield message["role"]
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
