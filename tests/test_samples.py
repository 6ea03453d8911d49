"""Sample prompts: the conversation before the last assistant turn, and exactly `count` of them."""

from workbench.training.samples import prompts_from_records

RECORDS = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(5)
]


def test_count_is_respected_including_zero():
    assert prompts_from_records(RECORDS, 0) == []
    assert [p["reference"] for p in prompts_from_records(RECORDS, 2)] == ["a0", "a1"]
    assert len(prompts_from_records(RECORDS, 10)) == 5


def test_prompt_stops_before_the_last_assistant_turn():
    record = {
        "messages": [
            {"role": "user", "content": "call"},
            {"role": "assistant", "content": "<|tool_call_start|>[f()]<|tool_call_end|>"},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ],
        "tools": [{"name": "f"}],
    }
    (prompt,) = prompts_from_records([record], 1)
    assert [m["role"] for m in prompt["messages"]] == ["user", "assistant", "tool"]
    assert prompt["reference"] == "It is 42." and prompt["tools"] == [{"name": "f"}]
