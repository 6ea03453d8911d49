"""Tool-call scorer: LFM2 call parsing (never eval) and BFCL-style AST matching per category."""

import pytest

from workbench.evaluation.scorers.tool_calls import (
    ANY_OF,
    ToolCall,
    parse_tool_calls,
    score_tool_calls,
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
        ("[f(a=(1, 2))]", "argument 'a': only"),
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


def test_optional_argument_at_its_default_may_be_omitted_or_given():
    expected = [gold("get_weather", city="Paris", unit="celsius")]
    assert score(wrap('[get_weather(city="Paris")]'), expected, tools=[WEATHER]).correct
    assert score(
        wrap('[get_weather(city="Paris", unit="celsius")]'), [gold("get_weather", city="Paris")], tools=[WEATHER]
    ).correct
    fahrenheit = [gold("get_weather", city="Paris", unit="fahrenheit")]
    assert score(wrap('[get_weather(city="Paris")]'), fahrenheit, tools=[WEATHER]).reason == "missing argument 'unit'"


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
    result = score(wrap('[get_weather(city="Paris")]'), [], "irrelevance", [WEATHER])
    assert (result.correct, result.reason) == (False, "extra call")


def test_gold_must_fit_the_category():
    with pytest.raises(ValueError, match="does not allow 0 gold calls"):
        score("", [], "simple")
    with pytest.raises(ValueError):
        score("", [], "no-such-category")
    with pytest.raises(TypeError, match="gold call must be"):
        score("", [{"name": "f"}])
