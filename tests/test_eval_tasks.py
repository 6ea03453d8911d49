"""The suites' lm-eval hooks: data loading (errors with lines) and per-sample scoring of hand-written outputs."""

from __future__ import annotations

import json
import math

import pytest

from workbench.errors import StageError
from workbench.evaluation.tasks import (
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


@pytest.mark.parametrize(
    ("category", "gold", "output", "correct"),
    [
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>', True),
        ("multiple", [PARIS], '<|tool_call_start|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|tool_call_end|>', True),
        ("multiple", [PARIS], '<|tool_call_start|>[get_time(city="Paris")]<|tool_call_end|>', False),
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city=7)]<|tool_call_end|>', False),
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city="Paris"), get_time(city="Paris")]<|tool_call_end|>', False),
        ("simple", [PARIS], "It is sunny in Paris.", False),
        ("simple", [PARIS], '<|tool_call_start|>[get_weather(city="Paris"]<|tool_call_end|>', False),
        ("parallel", [PARIS, ROME], '<|tool_call_start|>[get_weather(city="Rome"), get_weather(city="Paris")]<|tool_call_end|>', True),
        ("parallel", [PARIS, ROME], '<|tool_call_start|>[get_weather(city="Rome")]<|tool_call_end|>', False),
        ("irrelevance", [], "I cannot help with jokes using these tools.", True),
        ("irrelevance", [], '<|tool_call_start|>[get_time(city="Lima")]<|tool_call_end|>', False),
    ],
)  # fmt: skip
def test_tool_scoring_by_category(category, gold, output, correct):
    scored = process_tool_use(_tool_doc(category, gold), [output])
    assert scored["ast_accuracy"] is correct
    assert scored[f"{category}_accuracy"] is correct
    assert all(scored[f"{other}_accuracy"] is None for other in ("simple", "multiple", "parallel", "irrelevance")
               if other != category)  # fmt: skip


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


def test_shipped_suites_load():
    assert len(load_json_schema("data.jsonl")["test"]) == 50
    categories = [doc["category"] for doc in load_tool_use("data.jsonl")["test"]]
    assert set(categories) == {"simple", "multiple", "parallel", "irrelevance"}
