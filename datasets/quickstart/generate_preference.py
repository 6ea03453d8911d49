"""Build the quickstart preference pairs from the quickstart SFT data (Python standard library only).

Each pair keeps an SFT record's conversation up to its last assistant turn as the prompt, the record's own
reply as `chosen`, and as `rejected` the same reply with one realistic mistake that the record's verifier
catches: the format constraint broken, a required JSON field missing, or the tool call replaced by prose.
The scoring fields of the source record are kept, so the pairs can be re-judged.

    python datasets/quickstart/generate_preference.py   # --seed 0 --train-size 600 --eval-size 60
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCORING_FIELDS = ("task", "instruction_id_list", "kwargs", "json_schema", "tools", "tool_calls")


def break_instruction(reply: str, instruction: str, kwargs: dict) -> str:
    """The reply with its one format constraint violated."""
    if instruction == "change_case:english_capital":
        return reply.capitalize()
    if instruction == "change_case:english_lowercase":
        return reply.upper()
    if instruction == "startend:end_checker":
        return reply.removesuffix(kwargs["end_phrase"]).rstrip() + " Have a nice day."
    if instruction == "detectable_format:title":
        return re.sub(r"<<[^>]*>>\n?", "", reply)
    if instruction == "startend:quotation":
        return reply.strip('"')
    if instruction == "detectable_format:number_bullet_lists":
        return "\n".join(reply.splitlines()[:-1])
    if instruction == "punctuation:no_comma":
        return reply.replace(" and ", ", ", 1)
    raise ValueError(f"no corruption for instruction {instruction!r}")


def break_json(reply: str, schema: dict, rng: random.Random) -> str:
    """The JSON answer without one of its required fields."""
    value = json.loads(reply)
    del value[rng.choice(schema["required"])]
    return json.dumps(value)


def corrupt(record: dict, rng: random.Random) -> str:
    reply = record["messages"][-1]["content"]
    task = record["task"]
    if task == "instruction_following":
        return break_instruction(reply, record["instruction_id_list"][0], record["kwargs"][0])
    if task == "json_schema":
        return break_json(reply, record["json_schema"], rng)
    if any(m["role"] == "tool" for m in record["messages"]):
        return "I could not find that information."
    return "I am not able to look that up right now."


def to_pair(record: dict, rng: random.Random) -> dict:
    pair = {"messages": record["messages"][:-1], "chosen": record["messages"][-1]["content"]}
    pair["rejected"] = corrupt(record, rng)
    pair |= {name: record[name] for name in SCORING_FIELDS if name in record}
    return pair


def build(source: Path, size: int, rng: random.Random) -> list[dict]:
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    return [to_pair(record, rng) for record in rng.sample(records, min(size, len(records)))]


def write(path: Path, pairs: list[dict]) -> None:
    path.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=600)
    parser.add_argument("--eval-size", type=int, default=60)
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where the two files go (default: beside this)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write(args.out_dir / "preference.jsonl", build(HERE / "sft.jsonl", args.train_size, rng))
    write(args.out_dir / "preference_eval.jsonl", build(HERE / "sft_eval.jsonl", args.eval_size, rng))


if __name__ == "__main__":
    main()
