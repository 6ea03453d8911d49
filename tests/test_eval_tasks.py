"""The suites' lm-eval hooks: data loading (errors with lines) and per-sample scoring of hand-written outputs."""

from __future__ import annotations

import json
import math

import pytest
from lm_eval.api.model import LM

from workbench.errors import StageError
from workbench.evaluation.tasks import (
    REPO_EVALS,
    load_json_schema,
    load_tool_use,
    mean_of_present,
    process_json_schema,
    process_tool_use,
    tool_list_system,
)

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}  # fmt: skip
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"},
           "days": {"type": "integer"}}, "required": ["city"]}}  # fmt: skip
TIME = {"name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _json_doc(gold=None):
    return {"schema_json": json.dumps(SCHEMA), "gold_json": json.dumps(gold)}


def test_json_scoring_of_right_fenced_invalid_and_malformed_outputs():
    gold = {"name": "Ada", "age": 36}
    right = process_json_schema(_json_doc(gold), ['{"name": "Ada", "age": 36}'])
    assert right == {"parse_rate": True, "valid_rate": True, "field_accuracy": 1.0, "strict_parse_rate": True,
                     "strict_valid_rate": True}  # fmt: skip
    fenced = process_json_schema(_json_doc(gold), ['Here:\n```json\n{"name": "Ada", "age": 35}\n```'])
    assert fenced["valid_rate"] and not fenced["strict_parse_rate"] and fenced["field_accuracy"] == 0.5
    wrong_type = process_json_schema(_json_doc(gold), ['{"name": "Ada", "age": "36"}'])
    assert wrong_type["parse_rate"] and not wrong_type["valid_rate"]
    malformed = process_json_schema(_json_doc(gold), ['{"name": "Ada", "age": 36'])
    assert not malformed["parse_rate"] and not malformed["valid_rate"] and malformed["field_accuracy"] == 0.0
    no_gold = process_json_schema(_json_doc(), ['{"name": "Ada", "age": 36}'])
    assert no_gold["field_accuracy"] is None


def test_field_accuracy_averages_only_samples_with_gold():
    assert mean_of_present([1.0, None, 0.0, None]) == 0.5
    assert math.isnan(mean_of_present([None, None]))


def _tool_doc(category, calls, tools=(WEATHER, TIME)):
    return {"category": category, "calls_json": json.dumps(calls), "tools_json": json.dumps(list(tools))}


PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}
ROME = {"name": "get_weather", "arguments": {"city": "Rome"}}


BROKEN = '<|tool_call_start|>[get_weather(city="Paris"]<|tool_call_end|>'


# call: the answer's `call_rate` value (None: not reported, as on irrelevance items); parsed: its `parse_rate`
# value (None: not reported, as for an answer that attempts no call).
@pytest.mark.parametrize(
    ("category", "gold", "output", "correct", "call", "parsed"),
    [
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>', True, True, True),
        ("multiple", [PARIS], '<|tool_call_start|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|tool_call_end|>', True, True, True),
        ("multiple", [PARIS], '<|tool_call_start|>[get_time(city="Paris")]<|tool_call_end|>', False, True, True),
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city=7)]<|tool_call_end|>', False, True, True),
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city="Paris"), get_time(city="Paris")]<|tool_call_end|>', False, True, True),
        ("simple", [PARIS], "It is sunny in Paris.", False, False, None),
        ("simple", [PARIS], "", False, False, None),
        ("simple", [PARIS], "<|tool_call_start|>[]<|tool_call_end|>", False, False, None),
        ("simple", [PARIS], BROKEN, False, True, False),
        ("parallel", [PARIS, ROME], '<|tool_call_start|>[get_weather(city="Rome"), get_weather(city="Paris")]<|tool_call_end|>', True, True, True),
        ("parallel", [PARIS, ROME], '<|tool_call_start|>[get_weather(city="Rome")]<|tool_call_end|>', False, True, True),
        ("irrelevance", [], "I cannot help with jokes using these tools.", True, None, None),
        ("irrelevance", [], BROKEN, True, None, False),
        ("irrelevance", [], '<|tool_call_start|>[get_time(city="Lima")]<|tool_call_end|>', False, None, True),
    ],
)  # fmt: skip
def test_tool_scoring_by_category(category, gold, output, correct, call, parsed):
    scored = process_tool_use(_tool_doc(category, gold), [output])
    # Each category's task reports only its own category metric; the tool_use group gathers them. A metric the
    # answer does not measure is absent, so lm-eval averages it over the answers that do.
    expected = {"ast_accuracy": correct, f"{category}_accuracy": correct, "call_rate": call, "parse_rate": parsed}
    assert scored == {name: value for name, value in expected.items() if value is not None}


def test_an_answer_is_parsed_once_for_its_score_and_its_rates(monkeypatch):
    from workbench.evaluation import scorers
    from workbench.evaluation.scorers import tool_calls

    parsed, parse = [], tool_calls.parse_tool_calls
    counted = lambda text: parsed.append(text) or parse(text)  # noqa: E731
    monkeypatch.setattr(scorers, "parse_tool_calls", counted)
    monkeypatch.setattr(tool_calls, "parse_tool_calls", counted)
    answers = ['<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>', BROKEN, "Sunny."]
    scores = [process_tool_use(_tool_doc("simple", [PARIS]), [answer]) for answer in answers]
    assert [score["ast_accuracy"] for score in scores] == [True, False, False]
    assert parsed == answers


def test_tools_are_listed_in_the_system_turn_as_lfm2s_template_writes_them():
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["What is the weather in Paris?"], 300, LFM2_CHAT_TEMPLATE)
    user = [{"role": "user", "content": "Weather in Paris?"}]
    by_template = tokenizer.apply_chat_template(user, tools=[WEATHER], tokenize=False)
    ours = tokenizer.apply_chat_template([{"role": "system", "content": tool_list_system("", [WEATHER])}, *user],
                                         tokenize=False)  # fmt: skip
    assert ours == by_template


def test_bad_suite_records_are_errors_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "schema": SCHEMA}) + "\n" + "{not json\n")
    with pytest.raises(StageError, match=r"bad.jsonl:2: not valid JSON"):
        load_json_schema("x", {"json_schema": str(bad)})
    bad.write_text(json.dumps({"prompt": "p", "schema": {"type": "nope"}}) + "\n")
    with pytest.raises(StageError, match=r"bad.jsonl:1: invalid JSON schema"):
        load_json_schema("x", {"json_schema": str(bad)})
    bad.write_text(json.dumps({"prompt": "p", "tools": [], "category": "simple", "calls": []}) + "\n")
    with pytest.raises(StageError, match=r"bad.jsonl:1: 0 gold calls do not fit its category"):
        load_tool_use("x", {"tool_use": str(bad)})
    with pytest.raises(StageError, match="eval data file not found"):
        load_tool_use("x", {"tool_use": str(tmp_path / "missing.jsonl")})
    bad.write_text("\n")
    with pytest.raises(StageError, match=r"bad.jsonl: no records"):
        load_json_schema("x", {"json_schema": str(bad)})


def test_shipped_suites_load():
    assert len(load_json_schema("data.jsonl")["test"]) == 50
    categories = [doc["category"] for doc in load_tool_use("data.jsonl")["test"]]
    assert set(categories) == {"simple", "multiple", "parallel", "irrelevance"}
    parallel = load_tool_use("data.jsonl", category="parallel")["test"]
    assert len(parallel) == categories.count("parallel") and set(parallel["category"]) == {"parallel"}


def test_each_schema_is_checked_once_however_many_samples_use_it(tmp_path, monkeypatch):
    """Loading the suite checks a schema against the meta-schema; scoring its samples (lenient and strict) reuses
    that validator instead of checking the schema again."""
    import uuid

    from jsonschema import Draft202012Validator

    checks, check = [], Draft202012Validator.check_schema
    monkeypatch.setattr(Draft202012Validator, "check_schema",
                        classmethod(lambda cls, schema, **kw: checks.append(schema) or check(schema, **kw)))  # fmt: skip
    schema = SCHEMA | {"title": uuid.uuid4().hex}  # a schema no earlier test checked
    path = tmp_path / "schemas.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "schema": schema, "gold": {"name": "Ada"}}) + "\n"
                            for i in range(3)))  # fmt: skip
    docs = load_json_schema("x", {"json_schema": str(path)})["test"]
    scores = [process_json_schema(doc, ['{"name": "Ada", "age": 36}']) for doc in docs]
    assert scores == 3 * [{"parse_rate": True, "valid_rate": True, "field_accuracy": 1.0, "strict_parse_rate": True,
                           "strict_valid_rate": True}]  # fmt: skip
    assert checks == [schema], "one check for three samples, each scored lenient and strict"


def test_a_suite_file_is_read_once_per_evaluation_and_again_when_it_changes(tmp_path, monkeypatch):
    """lm-eval loads the tool_use data once per category task, and the group check once more: one reading serves
    them all, until the file changes."""
    import os

    from workbench.evaluation import tasks
    from workbench.evaluation.api import evaluate_lm, task_manager

    mine = tmp_path / "tools.jsonl"
    mine.write_text((REPO_EVALS / "tool_use/data.jsonl").read_text())
    os.utime(mine, ns=(10**18, 10**18))  # long settled: a file written a moment ago may change within its mtime
    reads, read = [], tasks.read_records
    monkeypatch.setattr(tasks, "read_records", lambda path: reads.append(path) or read(path))
    data = {"tool_use": str(mine)}
    report = evaluate_lm(AnswerKey(), ["tool_use"], task_manager(["tool_use"], data), data=data)
    assert report.counts == {"tool_use": 60}
    assert reads == [mine], "one reading for the four category tasks and the group's category check"

    simple = [line for line in mine.read_text().splitlines() if json.loads(line)["category"] == "simple"]
    mine.write_text("\n".join(simple) + "\n")
    os.utime(mine, ns=(10**18 + 1, 10**18 + 1))
    assert load_tool_use("x", data)["test"]["category"] == 16 * ["simple"], "a changed file is read again"
    assert len(load_tool_use("x", data, category="simple")["test"]) == 16 and reads == [mine, mine]
    mine.write_text("\n".join(simple[:4]) + "\n")  # just written: read every time, never kept
    assert [len(load_tool_use("x", data)["test"]) for _ in range(2)] == [4, 4] and len(reads) == 4


def test_each_record_is_checked_once_for_all_tasks_and_evaluations(tmp_path, monkeypatch):
    """The checked rows of a suite file are kept with its reading: the four tool_use tasks, the group's category
    check, and a second evaluation of the same file (a merge sweep's next candidate) check each record once."""
    import os

    from workbench.evaluation import tasks
    from workbench.evaluation.api import evaluate_lm, task_manager

    data = {}
    for suite in ("json_schema", "tool_use"):
        mine = tmp_path / f"{suite}.jsonl"
        mine.write_text((REPO_EVALS / suite / "data.jsonl").read_text())
        os.utime(mine, ns=(10**18, 10**18))  # long settled (see above)
        data[suite] = str(mine)
    checked, require = [], tasks._require
    monkeypatch.setattr(tasks, "_require", lambda path, record, *fields: checked.append(path.stem)
                        or require(path, record, *fields))  # fmt: skip
    suites = ["json_schema", "tool_use"]
    for _ in range(2):
        report = evaluate_lm(AnswerKey(), suites, task_manager(suites, data), limit=2, data=data)
        assert report.counts == {"json_schema": 2, "tool_use": 8}
    assert sorted(checked) == 50 * ["json_schema"] + 60 * ["tool_use"], "every record once, in two evaluations"


# ---- the suites as lm-eval groups, run through lm-eval's evaluator ----------------------------------------

GROUP_METRICS = {
    "instruction_following": {"prompt_strict_acc", "inst_strict_acc", "prompt_loose_acc", "inst_loose_acc"},
    "json_schema": {"parse_rate", "valid_rate", "field_accuracy", "strict_parse_rate", "strict_valid_rate"},
    "tool_use": {"ast_accuracy", "call_rate", "parse_rate", "simple_accuracy", "multiple_accuracy",
                 "parallel_accuracy", "irrelevance_accuracy"},
}  # fmt: skip


class AnswerKey(LM):
    """An lm-eval LM that answers from the docs themselves: right for every third doc of a task, otherwise wrong
    in one of two ways, so every metric lands strictly between 0 and 1 and categories differ in accuracy."""

    tokenizer_name = "answer-key"

    def chat_template(self, chat_template=False):
        return ""

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        return "\n".join(turn["content"] for turn in chat_history)

    def generate_until(self, requests):
        return [_answer(request.task_name, request.doc, request.doc_id) for request in requests]

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


def _answer(task: str, doc: dict, doc_id: int) -> str:
    kind = doc_id % 3  # 0: right, 1 and 2: two kinds of wrong
    if task.startswith("tool_use"):
        # Wrong: an unparsable call block (which, making no call, is right on irrelevance items), or the opposite of
        # what is expected: prose where a call is expected, a call where none is.
        calls = json.loads(doc["calls_json"])
        if kind == 0:
            return f"<|tool_call_start|>{json.dumps(calls)}<|tool_call_end|>" if calls else "No tool fits."
        if kind == 1:
            return "<|tool_call_start|>[broken(<|tool_call_end|>"
        return "I would rather not." if calls else "<|tool_call_start|>[x(a=1)]<|tool_call_end|>"
    if task.startswith("json_schema"):
        gold = doc["gold_json"]
        return gold if kind == 0 else f"```json\n{gold}\n```" if kind == 1 else gold[:-1]
    return doc["prompt"].upper() if kind == 0 else doc["prompt"].lower().replace(",", "")


def _mean(values) -> float:
    values = list(values)
    return sum(float(v) for v in values) / len(values)


def test_each_suite_is_an_lm_eval_group_of_tasks():
    from workbench.evaluation.api import SUITES, task_manager

    manager = task_manager(list(SUITES))
    assert set(SUITES) <= set(manager.all_groups)
    loaded = manager.load(list(SUITES))
    assert loaded["group_map"] == {
        "instruction_following": ["instruction_following_ifeval"],
        "json_schema": ["json_schema_requests"],
        "tool_use": ["tool_use_simple", "tool_use_multiple", "tool_use_parallel", "tool_use_irrelevance"],
    }
    assert {task: len(obj.eval_docs) for task, obj in loaded["tasks"].items() if task.startswith("tool_use")} == {
        "tool_use_simple": 16, "tool_use_multiple": 24, "tool_use_parallel": 10, "tool_use_irrelevance": 10,
    }  # fmt: skip


def test_group_metrics_are_the_micro_average_over_the_suites_samples(tmp_path):
    from workbench.evaluation.api import SUITES, evaluate_lm, task_manager

    report = evaluate_lm(AnswerKey(), list(SUITES), task_manager(list(SUITES)), output_dir=tmp_path)
    # Exactly the stable `<suite>/<metric>` names: no per-task metric leaks into the report.
    assert set(report.metrics) == {f"{suite}/{metric}" for suite, names in GROUP_METRICS.items() for metric in names}
    assert report.counts == {"instruction_following": 78, "json_schema": 50, "tool_use": 60}
    assert report.unmeasured == []

    rows = report.samples["tool_use"]
    assert {row["task"] for row in rows} == {f"tool_use_{c}" for c in ("simple", "multiple", "parallel", "irrelevance")}
    # ast_accuracy over every sample, call_rate over the samples where a call is expected (all but irrelevance).
    assert report.metrics["tool_use/ast_accuracy"] == pytest.approx(_mean(row["ast_accuracy"] for row in rows))
    expecting = [row for row in rows if row["task"] != "tool_use_irrelevance"]
    assert [row for row in rows if "call_rate" in row] == expecting
    call_rate = report.metrics["tool_use/call_rate"]
    assert call_rate == pytest.approx(_mean(row["call_rate"] for row in expecting)) and 0 < call_rate < 1
    # parse_rate: the share over every answer that attempted a call, pooled across categories (not lm-eval's
    # size-weighted mean of the categories' rates, which differs when categories attempt at different rates).
    attempted = [row["parse_rate"] for row in rows if row.get("parse_rate") is not None]
    parse_rate = report.metrics["tool_use/parse_rate"]
    assert parse_rate == pytest.approx(_mean(attempted)) and 0 < parse_rate < 1
    per_category = {}
    for category in ("simple", "multiple", "parallel", "irrelevance"):
        own = [row["ast_accuracy"] for row in rows if row["task"] == f"tool_use_{category}"]
        per_category[category] = report.metrics[f"tool_use/{category}_accuracy"]
        assert per_category[category] == pytest.approx(_mean(own)) and 0 < per_category[category] < 1
    # Weighted by size: the micro-average, not the mean of the categories (which differs for this key).
    assert abs(report.metrics["tool_use/ast_accuracy"] - _mean(per_category.values())) > 1e-3

    rows = report.samples["json_schema"]
    for metric in ("parse_rate", "valid_rate", "field_accuracy", "strict_parse_rate", "strict_valid_rate"):
        assert report.metrics[f"json_schema/{metric}"] == pytest.approx(_mean(row[metric] for row in rows))
        assert 0 < report.metrics[f"json_schema/{metric}"] < 1, metric

    rows = report.samples["instruction_following"]
    for level in ("strict", "loose"):
        prompt_level = report.metrics[f"instruction_following/prompt_{level}_acc"]
        assert prompt_level == pytest.approx(_mean(row[f"prompt_{level}_acc"] for row in rows)) and 0 < prompt_level < 1
        flat = [value for row in rows for value in json.loads(row[f"inst_{level}_acc"])]
        assert report.metrics[f"instruction_following/inst_{level}_acc"] == pytest.approx(_mean(flat))
    assert {path.name for path in tmp_path.iterdir()} == {"results.json"} | {f"samples_{s}.jsonl" for s in SUITES}


def test_tool_use_data_without_a_category_leaves_its_metric_unmeasured(tmp_path):
    from workbench.evaluation.api import evaluate_lm, task_manager

    mine = tmp_path / "tools.jsonl"
    records = [json.loads(line) for line in (REPO_EVALS / "tool_use/data.jsonl").read_text().splitlines()]
    mine.write_text("".join(json.dumps(r) + "\n" for r in records if r["category"] in ("simple", "irrelevance")))
    data = {"tool_use": str(mine)}
    report = evaluate_lm(AnswerKey(), ["tool_use"], task_manager(["tool_use"], data), data=data)
    assert report.unmeasured == ["tool_use/multiple_accuracy", "tool_use/parallel_accuracy"]
    assert set(report.metrics) == {f"tool_use/{m}" for m in ("ast_accuracy", "call_rate", "parse_rate",
                                                             "simple_accuracy", "irrelevance_accuracy")}  # fmt: skip
    assert report.counts == {"tool_use": 26}
