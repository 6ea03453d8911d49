"""ShareGPT records and OpenAI content-part lists are read as the `messages` they stand for, wherever chat data is
read: training chats, pairs prompts, preference pairs and the tokenizer's training text; what cannot be read so is
reported with its line."""

from __future__ import annotations

import json

from tests.conftest import data_context, write_jsonl
from workbench.data.chat import SHAREGPT_RECORD, load_chat_records
from workbench.data.records import iter_texts
from workbench.preference.data import normalize_pair

TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}

# One conversation in three shapes: ours, ShareGPT (LLaMA-Factory's names, tools as a JSON string), OpenAI parts.
OURS = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": CALL}]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny in Paris."},
    ],
    "tools": TOOLS,
}
SHAREGPT = {
    "system": "Be brief.",
    "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": json.dumps(CALL)},
        {"from": "observation", "value": "sunny"},
        {"from": "gpt", "value": "Sunny in Paris."},
    ],
    "tools": json.dumps(TOOLS),
}
PARTS = {
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
        OURS["messages"][2],
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny in Paris."}]},
    ],
    "tools": TOOLS,
}


def test_sharegpt_and_text_parts_read_as_the_same_messages(tmp_path):
    records, report = load_chat_records(write_jsonl(tmp_path / "c.jsonl", [OURS, SHAREGPT, PARTS]), "c.jsonl")
    assert not report.problems
    ours, sharegpt, parts = (record.data for record in records)
    assert sharegpt["messages"] == ours["messages"] == parts["messages"]
    assert sharegpt["tools"] == ours["tools"] == TOOLS
    assert "conversations" not in sharegpt and "system" not in sharegpt
    assert ours["messages"][2]["content"] == '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>'
    assert dict(report.notes) == {SHAREGPT_RECORD: [2], "repeating an earlier record (same messages and tools)": [2, 3]}


def test_what_cannot_be_read_as_messages_is_reported_with_its_line(tmp_path):
    image = {"type": "image_url", "image_url": {"url": "x.png"}}
    bad = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": "get_weather(Paris)"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]},
                {"role": "assistant", "content": "a cat"},
            ]
        },  # fmt: skip
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "tools": "[oops"},
    ]
    records, report = load_chat_records(write_jsonl(tmp_path / "c.jsonl", bad), "c.jsonl")
    assert len(records) == 4
    assert dict(report.problems) == {
        'with an unknown role ("bot", not one of assistant, system, tool, user)': [1],
        "with no assistant turn": [1],
        "with malformed 'tool_calls' (not a list)": [2],
        "with a message whose 'content' is a list of parts with image_url, not text": [3],
        "with 'tools' that is not a list": [4],
    }


def test_tokenizer_text_comes_from_sharegpt_conversations(tmp_path):
    texts = list(iter_texts(write_jsonl(tmp_path / "c.jsonl", [SHAREGPT, PARTS])))
    assert texts[:4] == ["system", "Be brief.", "user", "Weather in Paris?"]
    assert '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>' in texts
    assert texts.count("Sunny in Paris.") == 2 and "Weather in Paris?" in texts[10:]
    assert json.dumps(TOOLS) in texts


def test_sharegpt_preference_pairs_and_text_parts():
    ours, problems = normalize_pair(1, {"prompt": "Weather in Paris?", "chosen": "Sunny.", "rejected": "Rainy."})
    assert problems == []
    sharegpt, problems = normalize_pair(
        2,
        {
            "conversations": [{"from": "human", "value": "Weather in Paris?"}],
            "chosen": {"from": "gpt", "value": "Sunny."},
            "rejected": {"from": "gpt", "value": "Rainy."},
        },
    )
    assert problems == []
    parts, problems = normalize_pair(
        3,
        {
            "prompt": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]}],
            "rejected": "Rainy.",
        },
    )
    assert problems == []
    assert (ours.prompt, ours.chosen, ours.rejected) == (sharegpt.prompt, sharegpt.chosen, sharegpt.rejected)
    assert (ours.prompt, ours.chosen, ours.rejected) == (parts.prompt, parts.chosen, parts.rejected)
    image = [{"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}]
    pair, problems = normalize_pair(4, {"prompt": "Hi", "chosen": image, "rejected": "No."})
    assert pair is None
    assert problems == ["with a response turn whose 'content' is a list of parts with image_url, not text"]


def test_sharegpt_trains_the_same_examples_as_messages(tmp_path):
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer
    from workbench.training.chat_dataset import load_training_chats

    write_jsonl(tmp_path / "ours.jsonl", [OURS])
    write_jsonl(tmp_path / "sharegpt.jsonl", [SHAREGPT])
    tokenizer = train_bpe_tokenizer(iter_texts(tmp_path / "sharegpt.jsonl"), 300, LFM2_CHAT_TEMPLATE)
    ctx = data_context(tmp_path)
    loaded = [
        load_training_chats(ctx, name, tokenizer, 1024, "error", "error", "data/train", True)
        for name in ("ours.jsonl", "sharegpt.jsonl")
    ]
    assert loaded[0].examples == loaded[1].examples
    assert any(label != -100 for label in loaded[1].examples[0]["labels"])


# Records whose tools, calls and columns differ: Arrow (Parquet, a saved dataset) stores them with one struct type.
MIXED = [
    OURS,
    {
        "messages": [
            {"role": "user", "content": "A 5 minute timer."},
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "set_timer", "arguments": {"minutes": 5}}}]},
        ],
        "tools": [{"name": "set_timer", "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}}}],
        "json_schema": {"type": "object", "properties": {"minutes": {"type": "integer"}}},
    },
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
]  # fmt: skip


def test_parquet_and_dataset_folders_read_as_their_jsonl(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    from datasets import Dataset
    from workbench.data.records import read_records

    jsonl = write_jsonl(tmp_path / "c.jsonl", MIXED)
    frame = pd.DataFrame(MIXED)  # every row's keys (Arrow's own from_pylist keeps the first row's only)
    frame.to_parquet(tmp_path / "c.parquet")
    Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "folder"))
    # Arrow fills every key other rows have with null: the timer call would gain `city=None`, the weather tool
    # `minutes: None`, the third record a null json_schema and tools
    raw = pq.read_table(tmp_path / "c.parquet").to_pylist()
    assert raw[1]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": None, "minutes": 5}
    assert [sorted(r.data) for r in read_records(tmp_path / "c.parquet").records] == [sorted(r) for r in MIXED]
    expected, _ = load_chat_records(jsonl, "c.jsonl")
    for source in (tmp_path / "c.parquet", tmp_path / "folder"):
        records, report = load_chat_records(source, source.name)
        assert not report.problems and [r.data for r in records] == [r.data for r in expected], source
    assert records[1].data["messages"][1]["content"] == "<|tool_call_start|>[set_timer(minutes=5)]<|tool_call_end|>"
    assert records[1].data["tools"] == MIXED[1]["tools"]


def test_tools_written_as_json_text_read_as_the_list_in_any_record(tmp_path):
    as_text = {**OURS, "tools": json.dumps(TOOLS)}
    records, report = load_chat_records(write_jsonl(tmp_path / "c.jsonl", [as_text]), "c.jsonl")
    assert not report.problems and records[0].data["tools"] == TOOLS
    pair, problems = normalize_pair(1, {"prompt": "Weather in Paris?", "chosen": "a", "rejected": "b",
                                        "tools": json.dumps(TOOLS)})  # fmt: skip
    assert not problems and pair.tools == TOOLS


def test_reading_a_pair_leaves_the_record_as_it_was_read():
    import copy

    record = {"prompt": [{"role": "user", "content": "hi"}], "chosen": {"from": "gpt", "value": "hello"},
              "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "bye"}]}]}  # fmt: skip
    kept = copy.deepcopy(record)
    pair, problems = normalize_pair(1, record)
    assert not problems and pair.chosen == [{"role": "assistant", "content": "hello"}]
    assert record == kept, "the offline pairs stage keeps the record it read beside the pair"
