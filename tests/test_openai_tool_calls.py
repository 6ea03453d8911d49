"""OpenAI-style assistant `tool_calls` become LFM2 call blocks when chat records and preference pairs are read."""

import json

import pytest

from tests.conftest import write_jsonl
from workbench.data.chat import load_chat_records
from workbench.data.tool_calls import ToolCallsError, openai_tool_calls_to_lfm2
from workbench.evaluation.scorers.tool_calls import parse_tool_calls
from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
from workbench.modeling.tokenizer import train_bpe_tokenizer
from workbench.preference.data import normalize_pair


def call(name, arguments, call_id="c1"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


ARGUMENTS = [
    {"city": "Paris"},
    {"text": 'say "hi"\\n\tand\nbye \u00e9\u4e2d', "empty": ""},
    {"count": 3, "big": 2**70, "neg": -1, "ratio": 0.25, "tiny": 1e-300, "whole": 2.0},
    {"on": True, "off": False, "nothing": None},
    {"items": [1, "two", [3.5, None]], "nested": {"a": {"b": [True]}, "with space": "x"}},
    {},
]


@pytest.mark.parametrize("arguments", ARGUMENTS)
@pytest.mark.parametrize("as_string", [True, False], ids=["json-string", "object"])
def test_round_trip_through_parse_tool_calls(arguments, as_string):
    given = json.dumps(arguments) if as_string else arguments
    block = openai_tool_calls_to_lfm2([call("get_weather", given), call("tools.lookup", {"q": "x"}, "c2")])
    parsed = parse_tool_calls(block)
    assert parsed.error is None
    assert [(c.name, c.arguments) for c in parsed.calls] == [("get_weather", arguments), ("tools.lookup", {"q": "x"})]
    # Same types too: booleans stay booleans, floats stay floats.
    assert json.dumps(parsed.calls[0].arguments) == json.dumps(arguments)


def test_lfm2_syntax():
    block = openai_tool_calls_to_lfm2([call("get_weather", '{"city": "Paris"}')])
    assert block == '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>'
    flags = openai_tool_calls_to_lfm2([call("f", {"a": True, "b": None, "c": [1, 2.5]})])
    assert flags == "<|tool_call_start|>[f(a=True, b=None, c=[1, 2.5])]<|tool_call_end|>"


@pytest.mark.parametrize(
    ("tool_calls", "reason"),
    [
        ({"function": {"name": "f"}}, "not a list"),
        ([{"type": "function"}], "a call without a 'function' object"),
        ([{"function": {"arguments": "{}"}}], "a call without a function name"),
        ([call("f", '{"city": ')], "arguments that are not valid JSON"),
        ([call("f", "[1, 2]")], "arguments that are not a JSON object"),
        ([call("f", '{"x": NaN}')], "an argument value NaN, which is not a literal"),
        ([call("get-weather", "{}")], "a function name that is not a Python name"),
        ([call("f", {"class": 1})], "an argument name that is not a Python name"),
    ],
)
def test_malformed_tool_calls_raise(tool_calls, reason):
    with pytest.raises(ToolCallsError, match=f"^{reason}$".replace("(", r"\(").replace(")", r"\)")):
        openai_tool_calls_to_lfm2(tool_calls)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
OPENAI_CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                call("get_weather", '{"city": "Paris"}'),
                call("get_weather", {"city": "Oslo"}, "c2"),
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": '{"condition": "sunny"}'},
        {"role": "tool", "tool_call_id": "c2", "name": "get_weather", "content": '{"condition": "rainy"}'},
        {
            "role": "assistant",
            "content": "Let me check the week too.",
            "tool_calls": [call("get_weather", '{"city": "Paris", "days": 7}', "c3")],
        },
        {"role": "tool", "tool_call_id": "c3", "content": "sunny all week"},
        {"role": "assistant", "content": "Sunny in Paris, rainy in Oslo.", "tool_calls": []},
    ],
    "tools": [WEATHER],
}


def test_openai_chat_file_renders_through_the_chat_template(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [OPENAI_CHAT])
    records, report = load_chat_records(path, "chats.jsonl")
    assert not report.problems
    messages = records[0].data["messages"]
    assert all("tool_calls" not in message for message in messages)
    first = '<|tool_call_start|>[get_weather(city="Paris"), get_weather(city="Oslo")]<|tool_call_end|>'
    assert messages[2]["content"] == first
    second = 'Let me check the week too.<|tool_call_start|>[get_weather(city="Paris", days=7)]<|tool_call_end|>'
    assert messages[5]["content"] == second
    tokenizer = train_bpe_tokenizer([m["content"] for m in messages] + [json.dumps([WEATHER])], 400, LFM2_CHAT_TEMPLATE)
    text = tokenizer.apply_chat_template(messages, tools=records[0].data["tools"], tokenize=False)
    assert f"<|im_start|>assistant\n{first}<|im_end|>\n" in text
    assert f"<|im_start|>assistant\n{second}<|im_end|>\n" in text
    assert '<|tool_response_start|>{"condition": "rainy"}<|tool_response_end|>' in text
    assert parse_tool_calls(messages[2]["content"]).calls[1].arguments == {"city": "Oslo"}


def test_malformed_tool_calls_are_line_numbered_problems(tmp_path):
    def with_calls(tool_calls, content=None):
        turn = {"role": "assistant", "content": content, "tool_calls": tool_calls}
        return {"messages": [{"role": "user", "content": "hi"}, turn]}

    records = [
        OPENAI_CHAT,
        with_calls([call("f", "{not json")]),
        with_calls("f()"),
        with_calls([{"type": "function", "function": {"arguments": "{}"}}]),
        with_calls([]),  # no calls and no content: an incomplete turn, as before
        {"messages": [{"role": "user", "content": "hi", "tool_calls": [call("f", "{}")]}]},
    ]
    records, report = load_chat_records(write_jsonl(tmp_path / "chats.jsonl", records), "chats.jsonl")
    assert len(records) == 6
    assert dict(report.problems) == {
        "with malformed 'tool_calls' (arguments that are not valid JSON)": [2],
        "with malformed 'tool_calls' (not a list)": [3],
        "with malformed 'tool_calls' (a call without a function name)": [4],
        "with a message missing its 'content' text": [5],
        "with 'tool_calls' on a turn that is not the assistant's": [6],
        "with no assistant turn": [6],
    }
    assert "chats.jsonl: 1 record with malformed 'tool_calls' (not a list) (line 3)" in report.lines()
    assert records[1].data["messages"][1]["tool_calls"]  # a bad record comes back as read, for the report


def test_preference_pairs_take_openai_tool_calls():
    prompt = OPENAI_CHAT["messages"][:5]
    chosen = [{"role": "assistant", "content": None, "tool_calls": [call("get_weather", '{"city": "Rome"}')]}]
    pair, problems = normalize_pair(1, {"prompt": prompt, "chosen": chosen, "rejected": "No idea."})
    assert problems == []
    assert pair.chosen == [
        {"role": "assistant", "content": '<|tool_call_start|>[get_weather(city="Rome")]<|tool_call_end|>'}
    ]
    assert pair.prompt[2]["content"].startswith("<|tool_call_start|>[get_weather(")
    bad = [{"role": "assistant", "content": None, "tool_calls": [call("f", "{")]}]
    pair, problems = normalize_pair(2, {"prompt": "Hi", "chosen": bad, "rejected": "No."})
    assert pair is None
    assert problems == ["with malformed 'tool_calls' (arguments that are not valid JSON)"]
