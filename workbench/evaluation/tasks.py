"""The lm-eval side of workbench's suites: dataset loaders, per-sample scoring and aggregations.

Each suite in `evals/<suite>/` is an lm-eval group of tasks (`tool_use`: one task per BFCL category)
whose YAML points here through its `utils.py` (`custom_dataset`, `process_results`, `aggregation`). Nested fields (kwargs, schemas, tools, gold
calls) are stored in the lm-eval dataset as JSON strings: Arrow would otherwise merge the differing
shapes of schemas and kwargs into one struct padded with nulls, and the scorers need them verbatim.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.data.records import INVALID_JSON, NOT_MAPPING, NOT_OBJECT, read_records
from workbench.errors import StageError

REPO_EVALS = Path(__file__).resolve().parents[2] / "evals"

# A suite's data file is read and checked once per process and version: lm-eval loads it once per task of the group
# (tool_use: four), `workbench.evaluation.api` once more to find the categories present, and a merge sweep selecting
# by a suite once per candidate.
_ROWS: dict[tuple, tuple[dict, ...]] = {}
# A file modified this recently may still change within the same mtime (timestamps are coarse): not cached.
_SETTLED_NS = 2_000_000_000


def _rows(path: Path, make_rows: Callable[[Path, list[dict]], list[dict]]) -> list[dict]:
    """`make_rows(path, records)`: the suite's rows, checked and built from the file's records (JSONL, or any format
    `read_records` reads; each with its `_line`, an unreadable line an error naming the file and line, never
    skipped). Made once per (path, mtime, size) and `make_rows`; shared, not to be modified."""
    if not path.is_file():
        raise StageError(f"eval data file not found: {path}")
    stat = path.stat()
    version = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    key = (make_rows.__qualname__, version)
    if key not in _ROWS:
        rows = tuple(make_rows(path, _records(path)))
        if time.time_ns() - stat.st_mtime_ns < _SETTLED_NS:
            return list(rows)
        for older in [other for other in _ROWS if other[0] == key[0] and other[1][0] == version[0]]:
            del _ROWS[older]  # one version per file is kept
        _ROWS[key] = rows
    return list(_ROWS[key])


def _records(path: Path) -> list[dict]:
    read = read_records(path)
    if read.unreadable:
        number, reason = read.unreadable[0]
        raise StageError(f"{path}:{number}: {_in_suite_words(reason)}")
    if not read.records:
        raise StageError(f"{path}: no records")
    return [record.data | {"_line": record.location} for record in read.records]


def _in_suite_words(reason: str) -> str:
    """`read_records`' reason as the suites word it: `not valid JSON (...)`, `a record must be a JSON object`."""
    if reason.startswith(INVALID_JSON):
        return "not valid JSON" + reason.removeprefix(INVALID_JSON)
    if reason in (NOT_OBJECT, NOT_MAPPING):
        return "a record must be a JSON object"
    return reason


def _require(path: Path, record: dict, *fields: str) -> None:
    missing = [field for field in fields if field not in record]
    if missing:
        raise StageError(f"{path}:{record['_line']}: missing field '{missing[0]}'")


def data_path(suite: str, default: str, overrides: dict[str, str] | None) -> Path:
    """The suite's own data file, or the user's file given for it (`data:` in the evaluate stage)."""
    given = (overrides or {}).get(suite)
    return Path(given).resolve() if given else REPO_EVALS / suite / default


def _dataset(rows: list[dict]):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


# ---- instruction following (IFEval format) ------------------------------------------------------------------


def load_instruction_following(data_file: str, data_overrides: dict | None = None, **_: Any):
    """IFEval records (`prompt`, `instruction_id_list`, `kwargs`; `key` optional) as lm-eval docs.

    The original IFEval JSONL loads unchanged. Unknown instruction ids are errors with their line.
    """
    return _dataset(_rows(data_path("instruction_following", data_file, data_overrides), _instruction_rows))


def _instruction_rows(path: Path, records: list[dict]) -> list[dict]:
    from workbench.evaluation.ifeval import instruction_registry

    known = instruction_registry().INSTRUCTION_DICT
    rows = []
    for record in records:
        _require(path, record, "prompt", "instruction_id_list", "kwargs")
        unknown = [i for i in record["instruction_id_list"] if i not in known]
        if unknown:
            raise StageError(f"{path}:{record['_line']}: unknown IFEval instruction id '{unknown[0]}'")
        if len(record["kwargs"]) != len(record["instruction_id_list"]):
            raise StageError(f"{path}:{record['_line']}: kwargs must have one entry per instruction id")
        rows.append(
            {
                "key": int(record.get("key", record["_line"])),
                "prompt": record["prompt"],
                "instruction_id_list": record["instruction_id_list"],
                "kwargs_json": json.dumps(record["kwargs"]),
            }
        )
    return rows


def process_instruction_following(doc: dict, results: list[str]) -> dict:
    from workbench.evaluation.ifeval import check_instructions

    checked = check_instructions(doc["prompt"], results[0], doc["instruction_id_list"], json.loads(doc["kwargs_json"]))
    return {
        "prompt_strict_acc": checked["prompt_strict"],
        "inst_strict_acc": checked["inst_strict"],
        "prompt_loose_acc": checked["prompt_loose"],
        "inst_loose_acc": checked["inst_loose"],
    }


def instruction_level_mean(items: list[list[bool]]) -> float:
    """Mean over every instruction of every prompt (lm-eval's `agg_inst_level_acc`)."""
    flat = [value for per_prompt in items for value in per_prompt]
    return sum(flat) / len(flat) if flat else math.nan


# ---- JSON schema -------------------------------------------------------------------------------------------


def load_json_schema(data_file: str, data_overrides: dict | None = None, **_: Any):
    """Records `prompt`, `schema` (JSON Schema, Draft 2020-12), optional `gold` and `system`."""
    return _dataset(_rows(data_path("json_schema", data_file, data_overrides), _json_schema_rows))


def _json_schema_rows(path: Path, records: list[dict]) -> list[dict]:
    from jsonschema import SchemaError

    from workbench.evaluation.scorers import schema_validator

    rows = []
    for record in records:
        _require(path, record, "prompt", "schema")
        try:
            schema_validator(record["schema"])  # checked once per schema: scoring its samples reuses the validator
        except SchemaError as error:
            raise StageError(f"{path}:{record['_line']}: invalid JSON schema: {error.message}") from None
        rows.append(
            {
                "id": str(record.get("id", record["_line"])),
                "system": record.get("system", ""),
                "prompt": record["prompt"],
                "schema_json": json.dumps(record["schema"]),
                "gold_json": json.dumps(record.get("gold")),
            }
        )
    return rows


def process_json_schema(doc: dict, results: list[str]) -> dict:
    from workbench.evaluation.scorers import score_json

    schema, gold = json.loads(doc["schema_json"]), json.loads(doc["gold_json"])
    lenient = score_json(results[0], schema, gold)
    strict = score_json(results[0], schema, gold, strict=True)
    return {
        "parse_rate": lenient.parsed,
        "valid_rate": lenient.valid,
        "field_accuracy": lenient.field_accuracy,
        "strict_parse_rate": strict.parsed,
        "strict_valid_rate": strict.valid,
    }


def mean_of_present(items: list[float | bool | None]) -> float:
    """Mean over the samples the metric applies to (None: not applicable); NaN when none does."""
    present = [float(item) for item in items if item is not None]
    return sum(present) / len(present) if present else math.nan


# ---- tool use (LFM2 format, BFCL categories) ---------------------------------------------------------------

CATEGORIES = ("simple", "multiple", "parallel", "irrelevance")


def tool_list_system(system: str, tools: list[dict]) -> str:
    """The system turn LFM2's chat template writes for `tools`: JSON specs between the tool-list tokens."""
    listed = "List of tools: <|tool_list_start|>[" + ", ".join(json.dumps(t) for t in tools) + "]<|tool_list_end|>"
    return f"{system}\n{listed}" if system else listed


def load_tool_use(data_file: str, data_overrides: dict | None = None, category: str | None = None, **_: Any):
    """Records `prompt`, `tools`, `category` and gold `calls` (`[]` for irrelevance); with `category`, only
    that category's records (each of the suite's tasks holds one category). Every record is checked."""
    rows = _rows(data_path("tool_use", data_file, data_overrides), _tool_use_rows)
    return _dataset([row for row in rows if category is None or row["category"] == category])


def _tool_use_rows(path: Path, records: list[dict]) -> list[dict]:
    from workbench.evaluation.scorers import Category

    rows = []
    for record in records:
        _require(path, record, "prompt", "tools", "category", "calls")
        if record["category"] not in CATEGORIES:
            raise StageError(f"{path}:{record['_line']}: category must be one of {', '.join(CATEGORIES)}")
        if not Category(record["category"]).allows_gold_calls(len(record["calls"])):
            raise StageError(f"{path}:{record['_line']}: {len(record['calls'])} gold calls do not fit its category")
        rows.append(
            {
                "id": str(record.get("id", record["_line"])),
                "system": tool_list_system(record.get("system", ""), record["tools"]),
                "prompt": record["prompt"],
                "category": record["category"],
                "tools_json": json.dumps(record["tools"]),
                "calls_json": json.dumps(record["calls"]),
            }
        )
    return rows


def process_tool_use(doc: dict, results: list[str]) -> dict:
    """One answer's tool-use metrics (see docs/evaluation.md): `ast_accuracy` and its category's `<category>_accuracy`
    always; `call_rate` (whether it attempts a call) only where a call is expected (not `irrelevance`);
    `parse_rate` (whether its call blocks parse) only when it attempts a call. A metric an answer does not
    measure is left out of its dict, so lm-eval averages each over the answers that measure it."""
    from workbench.evaluation.scorers import parse_tool_calls, score_tool_calls

    parsed = parse_tool_calls(results[0])  # once: the score and the rates below read it
    calls, tools = json.loads(doc["calls_json"]), json.loads(doc["tools_json"])
    score = score_tool_calls(results[0], calls, tools, category=doc["category"], parsed=parsed)
    # The category's own metric too, which the `tool_use` group aggregates from this category's task alone.
    metrics: dict[str, bool] = {"ast_accuracy": score.correct, f"{doc['category']}_accuracy": score.correct}
    if doc["category"] != "irrelevance":
        metrics["call_rate"] = parsed.attempted
    if parsed.attempted:
        metrics["parse_rate"] = parsed.error is None
    return metrics
