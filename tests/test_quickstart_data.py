"""The quickstart data: reproducible from its generator, well-formed, and each reply meets its own constraint."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "datasets/quickstart"
FILES = ("sft.jsonl", "sft_eval.jsonl")


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def replies(record: dict) -> list[str]:
    return [message["content"] for message in record["messages"] if message["role"] == "assistant"]


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path):
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(DATA / "generate.py"), "--out-dir", str(tmp_path / run)], check=True)
    for name in FILES:
        assert (
            (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes() == (DATA / name).read_bytes()
        )


def test_sizes_and_an_even_task_mix():
    train, held_out = records("sft.jsonl"), records("sft_eval.jsonl")
    assert 1500 <= len(train) <= 3000 and len(held_out) == 100
    tasks = [record["task"] for record in train]
    assert {task: tasks.count(task) for task in set(tasks)} == {
        "instruction_following": 800,
        "json_schema": 800,
        "tool_call": 800,
    }


@pytest.mark.parametrize("name", FILES)
def test_conversations_are_well_formed(name):
    for record in records(name):
        roles = [message["role"] for message in record["messages"]]
        assert set(roles) <= {"system", "user", "assistant", "tool"}
        assert roles[-1] == "assistant" and "user" in roles
        assert all(isinstance(message["content"], str) for message in record["messages"])


def test_held_out_answers_never_appear_in_training():
    seen = {reply for record in records("sft.jsonl") for reply in replies(record)[:1]}
    assert not [record for record in records("sft_eval.jsonl") if replies(record)[0] in seen]


def check_instruction(record: dict) -> bool:
    reply, (instruction,), (kwargs,) = replies(record)[0], record["instruction_id_list"], record["kwargs"]
    bullets = [line for line in reply.splitlines() if re.match(r"^\* \S", line)]
    checks = {
        "change_case:english_capital": lambda: reply == reply.upper(),
        "change_case:english_lowercase": lambda: reply == reply.lower(),
        "startend:end_checker": lambda: reply.endswith(kwargs.get("end_phrase", "\0")),
        "startend:quotation": lambda: reply.startswith('"') and reply.endswith('"'),
        "detectable_format:title": lambda: re.search(r"<<[^\n]+>>", reply) is not None,
        "detectable_format:number_bullet_lists": lambda: len(bullets) == kwargs.get("num_bullets"),
        "punctuation:no_comma": lambda: "," not in reply,
    }
    return checks[instruction]()


def check_json(record: dict) -> bool:
    answer, schema = json.loads(replies(record)[0]), record["json_schema"]
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
    return list(answer) == schema["required"] and all(
        isinstance(answer[key], types[spec["type"]]) for key, spec in schema["properties"].items()
    )


def check_tool_call(record: dict) -> bool:
    """The reply's call list is exactly the expected calls, each of an offered tool; no expected call, no call."""
    reply, offered = replies(record)[0], [tool["name"] for tool in record["tools"]]
    if not record["tool_calls"]:
        return "<|tool_call_start|>" not in reply
    calls = ", ".join(
        f"{call['name']}({', '.join(f'{key}={json.dumps(value)}' for key, value in call['arguments'].items())})"
        for call in record["tool_calls"]
    )
    expected = f"<|tool_call_start|>[{calls}]<|tool_call_end|>"
    return reply == expected and all(call["name"] in offered for call in record["tool_calls"])


def test_tool_records_cover_single_parallel_and_no_call():
    counts = [len(record["tool_calls"]) for record in records("sft.jsonl") if record["task"] == "tool_call"]
    assert {n: counts.count(n) for n in set(counts)}.keys() == {0, 1, 2}
    assert min(counts.count(n) for n in (0, 1, 2)) >= 100


@pytest.mark.parametrize("name", FILES)
def test_every_reply_meets_its_own_check(name):
    checks = {"instruction_following": check_instruction, "json_schema": check_json, "tool_call": check_tool_call}
    failing = [record for record in records(name) if not checks[record["task"]](record)]
    assert not failing, failing[:2]
