"""The one record reader: files as real exports write them are read normally."""

from __future__ import annotations

import json

from workbench.data.records import iter_texts, read_records

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def test_a_utf8_bom_and_crlf_line_ends_are_read_normally(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(CHAT) + "\r\n").encode() * 2)
    read = read_records(path)
    assert read.unreadable == []
    assert [record.data for record in read.records] == [CHAT, CHAT]
    assert [record.location for record in read.records] == [1, 2]


def test_a_bom_json_file_and_a_crlf_text_file(tmp_path):
    as_json = tmp_path / "export.json"
    as_json.write_bytes(b"\xef\xbb\xbf" + json.dumps([CHAT]).encode())
    assert [record.data for record in read_records(as_json).records] == [CHAT]
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert list(iter_texts(text)) == ["one", "two"]


def test_a_bom_later_in_the_file_is_still_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes((json.dumps(CHAT) + "\n").encode() + b"\xef\xbb\xbf" + json.dumps(CHAT).encode() + b"\n")
    read = read_records(path)
    assert len(read.records) == 1 and read.unreadable[0][0] == 2


def test_openai_tool_calls_train_the_tokenizer_as_lfm2_text(tmp_path):
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    record = {"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None,
                                                                      "tool_calls": [call]}]}  # fmt: skip
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps(record) + "\n")
    texts = list(iter_texts(path))
    assert texts[:3] == ["user", "weather?", "assistant"] and 'get_weather(city="Paris")' in texts[3]


def test_unreadable_lines_in_tokenizer_training_files_are_reported_not_dropped_silently(tmp_path):
    from tests.conftest import write_tiny_project
    from workbench.runner import load_recipe
    from workbench.runner.tokenizer import ensure_tokenizer

    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(CHAT) + "\n{not json\n" + json.dumps(CHAT) + "\n")
    heard = []
    assert list(iter_texts(path, heard.append)) == ["user", "hi", "assistant", "yo"] * 2
    assert len(heard) == 1 and [location for location, _ in heard[0].unreadable] == [2]
    assert list(iter_texts(tmp_path / "chats.jsonl")) == ["user", "hi", "assistant", "yo"] * 2  # no listener: quiet

    (tmp_path / "project").mkdir()
    recipe = write_tiny_project(tmp_path / "project")
    train = tmp_path / "project" / "data" / "train.jsonl"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], "{cut off", *lines[1:], "[1, 2]"]) + "\n")
    warnings = []
    folder = ensure_tokenizer(
        load_recipe(recipe, root=recipe.parent), tmp_path / "store", "0" * 64, "{{ messages }}", warnings.append
    )
    assert (folder / "tokenizer_config.json").is_file()
    unreadable = dict(read_records(train).unreadable)
    assert sorted(unreadable) == [2, len(lines) + 2] and unreadable[2] != unreadable[len(lines) + 2]
    assert sorted(warnings) == sorted(
        f"tokenizer.train: data/train.jsonl: 1 record unreadable: {unreadable[line]} (line {line}): left out of the "
        "tokenizer's training text"
        for line in unreadable
    )
