"""Tool-call scorer: LFM2 call parsing (never eval) and AST matching per category by BFCL's checker rules."""

import json

import pytest

from workbench.evaluation.scorers.tool_calls import (
    ANY_OF,
    OMITTED,
    ToolCall,
    parse_tool_calls,
    score_tool_calls,
    standardize_string,
)

WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "default": "celsius"},
        },
        "required": ["city"],
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}
AREA = {
    "name": "area",
    "parameters": {"type": "object", "properties": {"radius": {"type": "number"}}, "required": ["radius"]},
}


def wrap(calls: str) -> str:
    return f"Let me check.<|tool_call_start|>{calls}<|tool_call_end|>Done."


def gold(name: str, **arguments: object) -> dict:
    return {"name": name, "arguments": arguments}


def score(output: str, expected: list[dict], category: str = "simple", tools: list[dict] | None = None):
    return score_tool_calls(output, expected, tools, category=category)


def test_parses_pythonic_call_list_with_text_around():
    result = parse_tool_calls(wrap('[get_weather(city="Paris", days=3), get_time(tz="UTC")]'))
    assert result.error is None
    assert result.calls == [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("get_time", {"tz": "UTC"})]


def test_parses_json_call_list():
    result = parse_tool_calls(wrap('[{"name": "get_weather", "arguments": {"city": "Paris"}}]'))
    assert result.calls == [ToolCall("get_weather", {"city": "Paris"})]


def test_no_markers_means_no_call():
    assert parse_tool_calls('get_weather(city="Paris")') == parse_tool_calls("")
    assert parse_tool_calls("plain answer").calls == []


@pytest.mark.parametrize(
    ("calls", "error"),
    [
        ('[get_weather(city="Paris"', "invalid call syntax"),
        ('[get_weather("Paris")]', "positional arguments in call to 'get_weather'"),
        ("[f(a=1, a=2)]", "repeated argument 'a'"),
        ("[f(a={1, 2})]", "argument 'a': only"),
        ('get_weather(city="Paris")', "expected a list of calls"),
        ('[{"name": "f"}, 3]', "a JSON call must be"),
    ],
)
def test_malformed_calls_are_parse_errors(calls: str, error: str):
    assert error in parse_tool_calls(wrap(calls)).error


def test_unterminated_block_is_a_parse_error():
    assert parse_tool_calls("<|tool_call_start|>[f(a=1)]").error == "missing <|tool_call_end|>"


@pytest.mark.parametrize(
    "calls",
    [
        "[f(cmd=__import__('os').system('x'))]",
        "[__import__('os').system('x')]",
        "__import__('os').system('x')",
    ],
)
def test_code_injection_is_a_parse_error_and_never_runs(calls: str, monkeypatch: pytest.MonkeyPatch):
    import os

    ran = []
    monkeypatch.setattr(os, "system", ran.append)
    result = score(wrap(calls), [gold("f", cmd="x")])
    assert not result.correct and result.reason.startswith("parse error:")
    assert ran == []


def test_correct_simple_call():
    output = wrap('[get_weather(city="Paris")]')
    expected = [gold("get_weather", city="Paris")]
    assert score(output, expected).correct
    assert score(output, expected, tools=[WEATHER]).reason == "ok"


def test_json_call_form_scores_like_pythonic():
    output = wrap('[{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}]')
    assert score(output, [gold("get_weather", city="Paris", days=2)], tools=[WEATHER]).reason == "ok"


@pytest.mark.parametrize(
    ("calls", "reason"),
    [
        ('[get_time(city="Paris")]', "wrong function name"),
        ("[get_weather(days=2)]", "missing argument 'city'"),
        ('[get_weather(city="Paris", days=2, mood="sunny")]', "unexpected argument 'mood'"),
        ('[get_weather(city="Paris", days="2")]', "argument 'days': expected integer, got string"),
        ('[get_weather(city="Paris", days=True)]', "argument 'days': expected integer, got boolean"),
        ('[get_weather(city="Rome", days=2)]', "argument 'city': expected 'Paris', got 'Rome'"),
    ],
)
def test_simple_mismatches_with_tool_schema(calls: str, reason: str):
    result = score(wrap(calls), [gold("get_weather", city="Paris", days=2)], tools=[WEATHER])
    assert (result.correct, result.reason) == (False, reason)


def test_types_matter_without_schema_too():
    result = score(wrap('[get_weather(city="Paris", days="3")]'), [gold("get_weather", city="Paris", days=3)])
    assert result.reason == "argument 'days': expected 3, got '3'"
    assert not score(wrap("[f(flag=1)]"), [gold("f", flag=True)]).correct


def test_extra_argument_without_schema_is_a_mismatch():
    result = score(wrap('[get_weather(city="Paris", unit="celsius")]'), [gold("get_weather", city="Paris")])
    assert result.reason == "unexpected argument 'unit'"


def test_int_matches_float_only_for_number_parameters():
    assert score(wrap("[area(radius=2)]"), [gold("area", radius=2.0)], tools=[AREA]).correct
    assert not score(wrap("[area(radius=2)]"), [gold("area", radius=2.0)]).correct


def test_any_of_gold_accepts_each_alternative():
    expected = [gold("get_weather", city={ANY_OF: ["Paris", "paris"]})]
    assert score(wrap('[get_weather(city="paris")]'), expected).correct
    result = score(wrap('[get_weather(city="Lyon")]'), expected)
    assert result.reason == "argument 'city': expected one of ['Paris', 'paris'], got 'Lyon'"


def test_extra_call_and_no_call():
    expected = [gold("get_weather", city="Paris")]
    two = wrap('[get_weather(city="Paris"), get_time(tz="UTC")]')
    assert score(two, expected).reason == "extra call"
    assert score("It is sunny in Paris.", expected).reason == "no call"


def test_multiple_category_needs_the_right_tool_among_several():
    tools = [WEATHER, TIME]
    expected = [gold("get_time", tz="UTC")]
    assert score(wrap('[get_time(tz="UTC")]'), expected, "multiple", tools).correct
    assert score(wrap('[get_weather(city="UTC")]'), expected, "multiple", tools).reason == "wrong function name"


def test_parallel_is_order_insensitive():
    expected = [gold("get_weather", city="Paris"), gold("get_weather", city="Rome"), gold("get_time", tz="UTC")]
    output = wrap('[get_time(tz="UTC"), get_weather(city="Rome"), get_weather(city="Paris")]')
    assert score(output, expected, "parallel", [WEATHER, TIME]).correct


def test_parallel_reports_the_unmatched_call():
    expected = [gold("get_weather", city="Paris"), gold("get_weather", city="Rome")]
    output = wrap('[get_weather(city="Paris"), get_weather(city="Paris")]')
    assert score(output, expected, "parallel").reason == "argument 'city': expected 'Rome', got 'Paris'"
    assert score(wrap('[get_weather(city="Paris")]'), expected, "parallel").reason == "missing call"


def test_irrelevance_is_correct_only_without_a_call():
    assert score("I can't look that up with these tools.", [], "irrelevance").correct
    assert score("", [], "irrelevance").correct
    assert score("<|tool_call_start|>[]<|tool_call_end|>", [], "irrelevance").correct  # an empty list: no call
    result = score(wrap('[get_weather(city="Paris")]'), [], "irrelevance", [WEATHER])
    assert (result.correct, result.reason) == (False, "extra call")
    # A call to a tool nobody offered is still a call.
    assert not score(wrap('[{"name": "tell_joke", "arguments": {}}]'), [], "irrelevance", [WEATHER]).correct


@pytest.mark.parametrize(
    "broken", [wrap('[get_weather(city="Paris"'), "<|tool_call_start|>[get_weather(city='Paris')]"]
)
def test_an_unparsable_call_on_an_irrelevance_item_is_no_call(broken: str):
    """BFCL's irrelevance check: an answer whose calls do not decode makes no call (it still counts against
    parse_rate, see the suite metrics below)."""
    assert parse_tool_calls(broken).error is not None
    assert score(broken, [], "irrelevance", [WEATHER]) == score("No tool fits.", [], "irrelevance", [WEATHER])
    assert score(broken, [gold("get_weather", city="Paris")], "simple", [WEATHER]).reason.startswith("parse error:")


# ---- what an answer attempts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "attempted", "made_call"),
    [
        (wrap('[get_weather(city="Paris")]'), True, True),
        (wrap('[{"name": "get_weather", "arguments": {"city": "Paris"}}]'), True, True),
        ("It is sunny in Paris.", False, False),
        ("", False, False),
        ('get_weather(city="Paris")', False, False),  # no markers: prose, not a call
        ("<|tool_call_start|>[]<|tool_call_end|>", False, False),  # an empty call list, as BFCL reads it
        (wrap('[get_weather(city="Paris"'), True, False),  # attempted but unparsable
        ("<|tool_call_start|>[get_weather(city='Paris')]", True, False),  # no end marker
    ],
)
def test_an_answer_attempts_a_call_when_it_holds_a_call_or_a_broken_call_block(output, attempted, made_call):
    parsed = parse_tool_calls(output)
    assert (parsed.attempted, parsed.made_call) == (attempted, made_call)


# ---- BFCL's AST checker rules ------------------------------------------------------------------------------

UNITS = {
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "default": "celsius"},
            "filters": {"type": "dict"},
        },
        "required": ["city"],
    },
}


def test_an_optional_argument_may_be_left_out_only_when_gold_lists_omitted():
    optional = [gold("get_weather", city="Paris", unit={ANY_OF: ["celsius", OMITTED]})]
    assert OMITTED == ""  # BFCL's marker in its possible answers
    assert score(wrap('[get_weather(city="Paris")]'), optional, tools=[UNITS]).correct
    assert score(wrap('[get_weather(city="Paris", unit="celsius")]'), optional, tools=[UNITS]).correct
    wrong = score(wrap('[get_weather(city="Paris", unit="fahrenheit")]'), optional, tools=[UNITS])
    assert wrong.reason == "argument 'unit': expected one of ['celsius', ''], got 'fahrenheit'"
    assert score(wrap('[get_weather(city="Paris")]'), [gold("get_weather", city="Paris", unit="")]).correct
    # Without the marker the argument is expected, even at the schema's default; and an argument gold does not
    # name is unexpected, even at its default (BFCL: every parameter it accepts is in the possible answers).
    celsius = [gold("get_weather", city="Paris", unit="celsius")]
    assert score(wrap('[get_weather(city="Paris")]'), celsius, tools=[UNITS]).reason == "missing argument 'unit'"
    extra = score(
        wrap('[get_weather(city="Paris", unit="celsius")]'), [gold("get_weather", city="Paris")], tools=[UNITS]
    )
    assert extra.reason == "unexpected argument 'unit'"


def test_a_dict_argument_may_leave_out_the_keys_gold_marks_omitted():
    expected = [gold("get_weather", city="Paris", filters={"wind": True, "rain": {ANY_OF: [False, OMITTED]}})]
    assert score(wrap('[get_weather(city="Paris", filters={"wind": True})]'), expected, tools=[UNITS]).correct
    assert score(wrap('[get_weather(city="Paris", filters={"wind": True, "rain": False})]'), expected).correct
    assert not score(wrap('[get_weather(city="Paris", filters={"rain": False})]'), expected).correct
    assert not score(wrap('[get_weather(city="Paris", filters={"wind": True, "snow": 1})]'), expected).correct


def test_standardize_string_is_bfcls():
    assert standardize_string("New York, N.Y. / 1-2_3*4^5") == "newyorkny12345"
    assert standardize_string("it's") == 'it"s'


@pytest.mark.parametrize(
    ("given", "correct"),
    [
        ("new york", True),
        ("NEW-YORK", True),
        ("New_York.", True),
        ("NewYork", True),
        ("New Yorkshire", False),
        ("Newark", False),
    ],
)
def test_strings_compare_after_bfcl_normalization(given: str, correct: bool):
    expected = [gold("get_weather", city="New York")]
    assert score(wrap(f"[get_weather(city={given!r})]"), expected, tools=[WEATHER]).correct is correct


def test_normalization_applies_inside_lists_and_dicts():
    expected = [gold("f", cities=["New York", "Los Angeles"], where={"date": "April 1, 2024"})]
    output = wrap('[f(cities=["new york", "LOS-ANGELES"], where={"date": "april 1 2024"})]')
    assert score(output, expected).correct
    assert not score(wrap('[f(cities=["Los Angeles", "New York"], where={"date": "April 1, 2024"})]'), expected).correct


POINT = {
    "name": "plot",
    "parameters": {
        "type": "object",
        "properties": {
            "point": {"type": "tuple", "items": {"type": "float"}},
            "sizes": {"type": "array", "items": {"type": "integer"}},
            "label": {"type": "string"},
        },
        "required": ["point"],
    },
}


def test_tuple_literals_are_arrays():
    parsed = parse_tool_calls(wrap("[plot(point=(1.5, 2.0), sizes=(1, (2, 3)))]"))
    assert parsed.calls == [ToolCall("plot", {"point": [1.5, 2.0], "sizes": [1, [2, 3]]})]
    expected = [gold("plot", point=[1.5, 2.0], sizes=[3, 4])]
    assert score(wrap("[plot(point=(1.5, 2.0), sizes=(3, 4))]"), expected, tools=[POINT]).correct
    assert score(wrap("[plot(point=[1.5, 2.0], sizes=[3, 4])]"), expected, tools=[POINT]).correct
    label = score(wrap('[plot(point=(1.5, 2.0), label=("a", "b"))]'), [gold("plot", point=[1.5, 2.0], label="a")],
                  tools=[POINT])  # fmt: skip
    assert label.reason == "argument 'label': expected string, got array"


@pytest.mark.parametrize(
    ("calls", "reason"),
    [
        ("[plot(point=(1.5, 2.0), sizes=[3, 4])]", "ok"),
        ("[plot(point=(1.5, 2), sizes=[3, 4])]", "argument 'point': item 1: expected float, got integer"),
        ("[plot(point=(1.5, 2.0), sizes=[3, 4.0])]", "argument 'sizes': item 1: expected integer, got number"),
        ("[plot(point=(1.5, 2.0), sizes=[3, True])]", "argument 'sizes': item 1: expected integer, got boolean"),
        ('[plot(point=(1.5, 2.0), sizes=[3, "4"])]', "argument 'sizes': item 1: expected integer, got string"),
        ("[plot(point=2.0, sizes=[3, 4])]", "argument 'point': expected tuple, got number"),
    ],
)
def test_array_items_have_exactly_their_declared_type(calls: str, reason: str):
    """BFCL's type_checker checks each item's type one level deep, with no int-to-float conversion there."""
    assert score(wrap(calls), [gold("plot", point=[1.5, 2.0], sizes=[3, 4])], tools=[POINT]).reason == reason


def test_a_whole_int_passes_for_a_float_parameter_but_not_a_float_for_an_int():
    scale = {
        "name": "scale",
        "parameters": {"type": "object", "properties": {"by": {"type": "float"}, "times": {"type": "integer"}}},
    }
    assert score(wrap("[scale(by=2)]"), [gold("scale", by=2.0)], tools=[scale]).correct
    by = score(wrap("[scale(by=2)]"), [gold("scale", by=2.5)], tools=[scale])
    assert by.reason == "argument 'by': expected 2.5, got 2"
    times = score(wrap("[scale(times=2.0)]"), [gold("scale", times=2)], tools=[scale])
    assert times.reason == "argument 'times': expected integer, got number"


def test_an_explicit_none_passes_only_where_gold_lists_none():
    nullable = [gold("get_weather", city="Paris", unit={ANY_OF: [None, "celsius"]})]
    assert score(wrap('[get_weather(city="Paris", unit=None)]'), nullable, tools=[UNITS]).correct
    assert score(wrap('[{"name": "get_weather", "arguments": {"city": "Paris", "unit": null}}]'), nullable).correct
    omittable = [gold("get_weather", city="Paris", unit={ANY_OF: ["celsius", OMITTED]})]
    result = score(wrap('[get_weather(city="Paris", unit=None)]'), omittable, tools=[UNITS])
    assert result.reason == "argument 'unit': expected string, got null"
    assert not score(wrap('[get_weather(city="Paris", unit=None)]'), omittable).correct


def test_gold_must_fit_the_category():
    with pytest.raises(ValueError, match="does not allow 0 gold calls"):
        score("", [], "simple")
    with pytest.raises(ValueError):
        score("", [], "no-such-category")
    with pytest.raises(TypeError, match="gold call must be"):
        score("", [{"name": "f"}])


# ---- the suite's metrics on the shipped data, through lm-eval, and the gates on them -------------------------


def _scripted_lm(answer):
    """An lm-eval LM that answers every item with `answer(doc)`."""
    from lm_eval.api.model import LM

    class Scripted(LM):
        tokenizer_name = "scripted"

        def chat_template(self, chat_template=False):
            return ""

        def apply_chat_template(self, chat_history, add_generation_prompt=True):
            return "\n".join(turn["content"] for turn in chat_history)

        def generate_until(self, requests):
            return [answer(request.doc) for request in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return Scripted()


def _tool_use_metrics(answer) -> dict[str, float]:
    from workbench.evaluation.api import evaluate_lm, task_manager

    report = evaluate_lm(_scripted_lm(answer), ["tool_use"], task_manager(["tool_use"]))
    assert report.counts == {"tool_use": 60}
    return report.metrics


def _right(doc: dict) -> str:
    calls = json.loads(doc["calls_json"])
    return f"<|tool_call_start|>{json.dumps(calls)}<|tool_call_end|>" if calls else "No tool fits."


def _gates(metrics: dict[str, float], *texts: str) -> list[bool]:
    from workbench.evaluation.gates import check_gates, parse_gate

    return [result.passed for result in check_gates([parse_gate(text) for text in texts], metrics, {})]


@pytest.mark.parametrize("reply", ["", "The weather in Paris is sunny and mild today."])
def test_a_model_that_never_calls_a_tool_fails_the_call_rate_gate(reply: str):
    metrics = _tool_use_metrics(lambda doc: reply)
    assert metrics["tool_use/call_rate"] == 0.0
    assert [metrics[f"tool_use/{c}_accuracy"] for c in ("simple", "multiple", "parallel")] == [0.0, 0.0, 0.0]
    # Making no call is right on the 10 irrelevance items only: that is all of ast_accuracy.
    assert metrics["tool_use/irrelevance_accuracy"] == 1.0
    assert metrics["tool_use/ast_accuracy"] == pytest.approx(10 / 60)
    # No answer attempted a call, so parse_rate is not measured (not a vacuous 1.0), and a gate on it fails too.
    assert "tool_use/parse_rate" not in metrics
    assert _gates(metrics, "tool_use/call_rate >= 0.5", "tool_use/parse_rate >= 0.9") == [False, False]


def test_a_model_that_calls_right_passes_the_call_rate_gate():
    metrics = _tool_use_metrics(_right)
    assert {name: metrics[f"tool_use/{name}"] for name in ("call_rate", "parse_rate", "ast_accuracy")} == {
        "call_rate": 1.0, "parse_rate": 1.0, "ast_accuracy": 1.0,
    }  # fmt: skip
    assert _gates(metrics, "tool_use/call_rate >= 0.5", "tool_use/parse_rate >= 0.9") == [True, True]


def test_suite_metrics_count_attempts_and_parses_by_their_definitions():
    """simple: right calls (16 items); multiple: broken call blocks (24); parallel: prose (10); irrelevance: broken
    call blocks (10), which make no call there."""
    broken = '<|tool_call_start|>[get_weather(city="Paris"<|tool_call_end|>'
    replies = {"simple": _right, "multiple": lambda doc: broken, "parallel": lambda doc: "Sure.",
               "irrelevance": lambda doc: broken}  # fmt: skip
    metrics = _tool_use_metrics(lambda doc: replies[doc["category"]](doc))
    assert metrics["tool_use/call_rate"] == pytest.approx((16 + 24) / 50)  # over the 50 items expecting a call
    assert metrics["tool_use/parse_rate"] == pytest.approx(16 / (16 + 24 + 10))  # over the 50 answers attempting one
    assert metrics["tool_use/ast_accuracy"] == pytest.approx((16 + 10) / 60)
    accuracies = [metrics[f"tool_use/{c}_accuracy"] for c in ("simple", "multiple", "parallel", "irrelevance")]
    assert accuracies == [1.0, 0.0, 0.0, 1.0]
