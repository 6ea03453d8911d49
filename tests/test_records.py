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
