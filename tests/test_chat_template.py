"""The builtin LFM2 chat template: rendering, the assistant-token mask trl trains on, and template resolution."""

import json
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import pytest

from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE, resolve_chat_template
from workbench.modeling.tokenizer import train_bpe_tokenizer

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIMER = {"name": "set_timer", "description": "Start a timer.", "parameters": {"type": "object", "properties": {}}}
CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Is it raining in Oslo?"},
    {"role": "assistant", "content": '<|tool_call_start|>[get_weather(city="Oslo")]<|tool_call_end|>'},
    {"role": "tool", "content": '{"condition": "rainy"}'},
    {"role": "assistant", "content": "Yes, it is rainy in Oslo."},
    {"role": "user", "content": "Write this in all caps: the owl sees the lake."},
    {"role": "assistant", "content": "THE OWL SEES THE LAKE."},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [message["content"] for message in CONVERSATION] + [json.dumps([WEATHER, TIMER])]
    return train_bpe_tokenizer(texts, 400, LFM2_CHAT_TEMPLATE)


def test_renders_lfm2_turns_with_tools_in_the_system_turn(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION, tools=[WEATHER, TIMER], tokenize=False)
    tools = f"List of tools: <|tool_list_start|>[{json.dumps(WEATHER)}, {json.dumps(TIMER)}]<|tool_list_end|>"
    assert text.startswith(f"<|startoftext|><|im_start|>system\nYou are a concise assistant.\n{tools}<|im_end|>\n")
    assert "<|im_start|>user\nIs it raining in Oslo?<|im_end|>\n" in text
    assert '<|im_start|>tool\n<|tool_response_start|>{"condition": "rainy"}<|tool_response_end|><|im_end|>\n' in text
    assert text.endswith("<|im_start|>assistant\nTHE OWL SEES THE LAKE.<|im_end|>\n")


def test_tools_without_a_system_message_get_their_own_system_turn(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION[1:2], tools=[WEATHER], tokenize=False)
    expected = (
        f"<|im_start|>system\nList of tools: <|tool_list_start|>[{json.dumps(WEATHER)}]<|tool_list_end|><|im_end|>"
    )
    assert text.startswith("<|startoftext|>" + expected + "\n<|im_start|>user\n")


def test_no_system_turn_without_system_message_or_tools(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION[1:2], tokenize=False)
    assert text == "<|startoftext|><|im_start|>user\nIs it raining in Oslo?<|im_end|>\n"


def test_generation_prompt_opens_an_assistant_turn(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION[1:2], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_assistant_mask_covers_exactly_the_replies_and_their_end_tokens(tokenizer):
    out = tokenizer.apply_chat_template(
        CONVERSATION, tools=[WEATHER], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    pairs = zip(out["input_ids"], out["assistant_masks"], strict=True)
    masked = [
        tokenizer.decode([i for i, _ in run]) for is_masked, run in groupby(pairs, key=itemgetter(1)) if is_masked
    ]
    assert masked == [message["content"] + "<|im_end|>" for message in CONVERSATION if message["role"] == "assistant"]


def test_resolve_builtin_and_file(tmp_path):
    assert resolve_chat_template("lfm2", tmp_path) == LFM2_CHAT_TEMPLATE
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates/mine.jinja").write_text("{{ messages }}")
    assert resolve_chat_template("templates/mine.jinja", tmp_path) == "{{ messages }}"


@pytest.mark.parametrize(
    ("spec", "message"),
    [("chatml", "unknown chat template 'chatml'"), ("missing.jinja", "chat template file not found")],
)
def test_resolve_errors_are_one_line(tmp_path: Path, spec, message):
    with pytest.raises(ValueError, match=message) as error:
        resolve_chat_template(spec, tmp_path)
    assert "\n" not in str(error.value)
