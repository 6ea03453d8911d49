"""Text corpora for pretraining: read with line numbers, tokenized once with the recipe's tokenizer, packed into
fixed-length blocks and cached under `<work_dir>/_corpus/<key>/` (key: corpus bytes, tokenizer, block length).

A corpus is plain text (one document per line), JSONL with a text field, or Parquet with a text column. Empty,
undecodable and over-long lines are never dropped silently: they are counted and reported with their line numbers.
Documents that repeat an earlier one are kept and reported too.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.data.chat import DataReport, Repeats, json_kind, metric_key
from workbench.data.records import EMPTY, MAX_LINE_BYTES, NOT_UTF8, iter_lines, line_too_long, read_records
from workbench.data.report import publish_problems
from workbench.errors import StageError
from workbench.fsio import build_new_folder

if TYPE_CHECKING:
    from workbench.api.context import StageContext
    from workbench.distill.fields import CorpusFields

CORPUS_FORMAT = "workbench-corpus/2"
"""/2: `info.json` lists repeated documents (`notes`); a /1 build, which does not, is rebuilt."""
REPEATED_DOCUMENT = "repeating an earlier document (same text)"


@dataclass
class CorpusBlocks:
    """A tokenized corpus cut into `[blocks, seq_len]` token ids (read-only memory map)."""

    blocks: np.ndarray
    difficulty: np.ndarray | None
    """Per block: the token-weighted mean difficulty of the documents in it; None unless every document has one."""
    info: dict[str, Any]

    @property
    def digest(self) -> str:
        """sha256 of the token ids: a teacher cache is valid only for these exact blocks."""
        return self.info["digest"]


def load_corpus(ctx: StageContext, fields: CorpusFields, relative: str, tokenizer, metric_prefix: str) -> CorpusBlocks:
    """The blocks of one corpus file, tokenized and packed on first use and memory-mapped afterwards."""
    from workbench.hashing import digest_json, file_digest
    from workbench.modeling.tokenizer import pinned_fingerprint

    path = ctx.resolve(relative)
    if not path.is_file():
        raise StageError(f"stage '{ctx.config.name}': corpus '{relative}' not found")
    key = digest_json(
        {
            "format": CORPUS_FORMAT,
            "file": file_digest(path),
            "tokenizer": pinned_fingerprint(ctx),
            "seq_len": fields.seq_len,
            "text_field": fields.text_field,
            "difficulty_field": fields.difficulty_field,
        }
    )
    folder = ctx.project.work_root / "_corpus" / key[:16]
    if not (folder / "info.json").is_file():
        if folder.exists():  # left half-written by an older, non-atomic workbench
            shutil.rmtree(folder, ignore_errors=True)
        _build(folder, path, relative, fields, tokenizer)
    corpus = open_corpus(folder)
    _report(ctx, corpus.info, fields, metric_prefix)
    return corpus


def open_corpus(folder: Path) -> CorpusBlocks:
    info = json.loads((folder / "info.json").read_text())
    blocks = np.load(folder / "blocks.npy", mmap_mode="r")
    difficulty = np.load(folder / "difficulty.npy") if (folder / "difficulty.npy").is_file() else None
    return CorpusBlocks(blocks, difficulty, info)


def _report(ctx: StageContext, info: dict, fields: CorpusFields, prefix: str) -> None:
    lines = info["problems"]
    if lines and fields.invalid_lines == "error":
        raise StageError("\n".join(lines) + "\n(fix the corpus, or set invalid_lines: drop to skip these lines)")
    summary = (
        f"{info['source']}: {info['documents']} of {info['lines']} {info['unit']}s used, "
        f"{info['blocks']} blocks of {info['seq_len']} tokens ({info['tail_tokens']} tail tokens dropped)"
    )
    metrics = {f"{prefix}/{name}": float(info[name]) for name in ("lines", "documents", "blocks", "tail_tokens")}
    skipped = {f"{prefix}/skipped_{metric_key(k)}": float(v) for k, v in info["problem_counts"].items()}
    noted = {f"{prefix}/{metric_key(k)}": float(v) for k, v in info["note_counts"].items()}
    publish_problems(ctx, lines, summary, metrics | skipped | noted, prefix, notes=info["notes"])


def read_documents(
    path: Path, source: str, text_field: str, difficulty_field: str
) -> tuple[list[tuple[int, str, float | None]], DataReport]:
    """(location, text, difficulty) for every usable document, and a report of the lines that are not (and of
    the documents that repeat an earlier one, which are used)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        entries, unit = _text_lines(path, text_field), "line"
    elif suffix in (".jsonl", ".parquet"):
        read = read_records(path, blank_lines="report")
        unusable = [(location, None, reason) for location, reason in read.unreadable]
        usable = [(record.location, record.data, None) for record in read.records]
        entries, unit = sorted(unusable + usable, key=lambda entry: entry[0]), read.unit
    else:
        raise StageError(f"{source}: unsupported corpus format '{suffix}' (use .txt, .jsonl or .parquet)")
    report = DataReport(source=source, unit=unit)
    repeats = Repeats(report, REPEATED_DOCUMENT)
    documents = []
    for location, row, problem in entries:
        report.total += 1
        if problem is None:
            text, difficulty, problem = _document(row, text_field, difficulty_field)
        if problem:
            report.add(problem, location)
        else:
            repeats.check(location, text)
            documents.append((location, text, difficulty))
    return documents, report


def _text_lines(path: Path, text_field: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record, problem) for each line of a plain-text corpus: one document a line."""
    for number, raw in iter_lines(path):
        if raw is None:
            yield number, None, line_too_long(MAX_LINE_BYTES)
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield number, None, NOT_UTF8
            continue
        if text.strip():
            yield number, {text_field: text}, None
        else:
            yield number, None, EMPTY


def _document(row: dict, text_field: str, difficulty_field: str) -> tuple[str, float | None, str | None]:
    text = row.get(text_field)
    if text is None:
        return "", None, f"without a string '{text_field}'"
    if not isinstance(text, str):  # reported, not coerced: a number is no document
        return "", None, f"with a '{text_field}' that is {json_kind(text)}, not a string"
    if not text.strip():
        return "", None, f"with an empty '{text_field}'"
    difficulty = row.get(difficulty_field)
    numeric = isinstance(difficulty, int | float) and not isinstance(difficulty, bool) and math.isfinite(difficulty)
    return text, float(difficulty) if numeric else None, None


def _build(folder: Path, path: Path, source: str, fields: CorpusFields, tokenizer) -> None:
    """Tokenize and pack; built in a temporary folder and published whole (`fsio.build_new_folder`), so a half-built
    corpus is never read and an older build stays in place until the new one replaces it."""
    documents, report = read_documents(path, source, fields.text_field, fields.difficulty_field)
    if not documents:
        raise StageError("\n".join([*report.lines(), f"{source}: no usable documents"]))
    encoded = tokenizer([text for _, text, _ in documents], add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = np.fromiter((t for doc in encoded for t in [*doc, eos]), dtype=np.int64)
    lengths = np.array([len(doc) + 1 for doc in encoded])
    count = len(ids) // fields.seq_len
    if count == 0:
        raise StageError(f"{source}: {len(ids)} tokens, fewer than one block of seq_len={fields.seq_len}")
    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    blocks = ids[: count * fields.seq_len].astype(dtype).reshape(count, fields.seq_len)
    scores = [d for _, _, d in documents]
    missing = [loc for loc, _, d in documents if d is None]
    info = {
        "format": CORPUS_FORMAT,
        "source": source,
        "unit": report.unit,
        "lines": report.total,
        "documents": len(documents),
        "blocks": count,
        "seq_len": fields.seq_len,
        "tokens": int(blocks.size),
        "tail_tokens": int(len(ids) - blocks.size),
        "dtype": np.dtype(dtype).name,
        "digest": hashlib.sha256(blocks.tobytes()).hexdigest(),
        "problems": report.lines(),
        "problem_counts": {problem: len(where) for problem, where in report.problems.items()},
        "notes": report.note_lines(),
        "note_counts": {note: len(where) for note, where in report.notes.items()},
        "missing_difficulty": missing[:20],
        "missing_difficulty_count": len(missing),
    }

    def write(tmp: Path) -> None:
        np.save(tmp / "blocks.npy", blocks)
        if not missing:
            per_token = np.repeat(np.array(scores, dtype=np.float64), lengths)[: count * fields.seq_len]
            np.save(tmp / "difficulty.npy", per_token.reshape(count, fields.seq_len).mean(axis=1).astype(np.float32))
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")

    # content-addressed and shared by every recipe of the project: two runs may build it at once, first one wins
    build_new_folder(folder, write)
