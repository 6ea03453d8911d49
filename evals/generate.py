"""Build the three evaluation suites' data (stdlib only, seeded, byte for byte reproducible).

In-domain items come from the quickstart's own generator (`datasets/quickstart/generate.py`) with a
different seed; an item whose conversation (prompt and reply) is in the quickstart's training data is
skipped, and no two items share a prompt. Some instruction types have few distinct prompts (the
no-comma and bullet-list prompts vary only in a category and a count), so their prompts also occur in
training, with other replies.
The remaining items (the other 18 IFEval instruction types, nested JSON schemas, parallel and
irrelevance tool calls) are drawn from fixed templates below.

    python evals/generate.py [--seed 1] [--out-dir evals]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICKSTART = HERE.parent / "datasets" / "quickstart"


def _quickstart():
    spec = importlib.util.spec_from_file_location("quickstart_generate", QUICKSTART / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _user(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def _system(record: dict) -> str:
    first = record["messages"][0]
    return first["content"] if first["role"] == "system" else ""


def _reply(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "assistant")


def in_domain(qs, rng: random.Random, makers: list, count: int, seen: set[tuple[str, str]]) -> list[dict]:
    """`count` quickstart-style records from random `makers`: no training conversation, no repeated prompt."""
    records, prompts = [], set()
    for _ in range(100_000):
        if len(records) == count:
            return records
        _, record = rng.choice(makers)(rng)
        if (_user(record), _reply(record)) not in seen and _user(record) not in prompts:
            prompts.add(_user(record))
            records.append(record)
    raise RuntimeError(f"found only {len(records)} of {count} new items")


# ---- instruction following: the 18 IFEval types the quickstart does not train -------------------------------

TOPICS = ["a lighthouse", "winter mornings", "a city park", "learning to swim", "an old library", "a rainy day"]
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}


def general_instructions(rng: random.Random, topic: str) -> list[tuple[str, str, dict]]:
    """(prompt, instruction id, kwargs) for each IFEval type outside the quickstart domain."""
    word, letter, code = rng.choice(["light", "water", "quiet"]), rng.choice("aeiou"), rng.choice(sorted(LANGUAGES))
    n = rng.randint(2, 4)
    return [
        (f"Write a short note about {topic}. Include the keywords sea and {word}.", "keywords:existence",
         {"keywords": ["sea", word]}),
        (f"Describe {topic}. Use the word {word} at least {n} times.", "keywords:frequency",
         {"keyword": word, "frequency": n, "relation": "at least"}),
        (f"Describe {topic} without using the words good or nice.", "keywords:forbidden_words",
         {"forbidden_words": ["good", "nice"]}),
        (f"Write two sentences about {topic}. The letter {letter} should appear at least 5 times.",
         "keywords:letter_frequency", {"letter": letter, "let_frequency": 5, "let_relation": "at least"}),
        (f"Write a few sentences about {topic}, in {LANGUAGES[code]} only, no other language is allowed.",
         "language:response_language", {"language": code}),
        (f"Describe {topic} in fewer than {n + 1} sentences.", "length_constraints:number_sentences",
         {"num_sentences": n + 1, "relation": "less than"}),
        (f"Write {n} paragraphs about {topic}. Separate paragraphs with the markdown divider: ***",
         "length_constraints:number_paragraphs", {"num_paragraphs": n}),
        (f"Write about {topic} in at least 40 words.", "length_constraints:number_words",
         {"num_words": 40, "relation": "at least"}),
        (f"Write {n} paragraphs about {topic}, separated by two new lines. The first paragraph must start with "
         f"the word {word}.", "length_constraints:nth_paragraph_first_word",
         {"num_paragraphs": n, "nth_paragraph": 1, "first_word": word}),
        (f"Write a letter template about {topic} with at least {n} placeholders in square brackets, like [name].",
         "detectable_content:number_placeholders", {"num_placeholders": n}),
        (f"Write a short email about {topic}. At the end, add a postscript starting with P.S.",
         "detectable_content:postscript", {"postscript_marker": "P.S."}),
        (f"Is {topic} a good subject for a poem? Answer with one of the following options: "
         "(\"My answer is yes.\", \"My answer is no.\", \"My answer is maybe.\")",
         "detectable_format:constrained_response", {}),
        (f"Describe {topic}. Highlight at least {n} sections with markdown, i.e. *highlighted section*.",
         "detectable_format:number_highlighted_sections", {"num_highlights": n}),
        (f"Write a plan about {topic} with {n} sections. Mark the beginning of each section with SECTION X.",
         "detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": n}),
        (f"Give three facts about {topic}. Wrap your entire output in JSON format.",
         "detectable_format:json_format", {}),
        (f"Give two different descriptions of {topic}. Separate the responses with 6 asterisk symbols: ******.",
         "combination:two_responses", {}),
        (f"First repeat the request word for word without change, then give your answer. Request: Describe {topic}.",
         "combination:repeat_prompt", {"prompt_to_repeat": f"Describe {topic}."}),
        (f"Describe {topic}. Words in all capital letters should appear at least {n} times.",
         "change_case:capital_word_frequency", {"capital_frequency": n, "capital_relation": "at least"}),
    ]  # fmt: skip


def instruction_following(qs, rng: random.Random, seen: set[tuple[str, str]]) -> list[dict]:
    records = [
        {"prompt": _user(r), "instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]}
        for r in in_domain(qs, rng, qs.ABILITIES[0], 42, seen)
    ]
    for topic in rng.sample(TOPICS, 2):
        for prompt, instruction, kwargs in general_instructions(rng, topic):
            records.append({"prompt": prompt, "instruction_id_list": [instruction], "kwargs": [kwargs]})
    return [{"key": 1000 + i, **record} for i, record in enumerate(records)]


# ---- JSON schema ---------------------------------------------------------------------------------------------


def general_json(qs, rng: random.Random) -> dict:
    """A nested schema (object with an array and an enum) outside the quickstart's four flat shapes."""
    name = f"{rng.choice(qs.FIRST_NAMES)} {rng.choice(qs.LAST_NAMES)}"
    cities = rng.sample(qs.CITIES, 2)
    level = rng.choice(["beginner", "expert"])
    schema = {
        "type": "object",
        "properties": {
            "traveller": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            "cities": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "level": {"type": "string", "enum": ["beginner", "expert"]},
        },
        "required": ["traveller", "cities", "level"],
    }
    facts = f"{name}, an {level} traveller, visited {cities[0]} and then {cities[1]}."
    prompt = f"Return a JSON object that follows this schema: {json.dumps(schema)}\nText: {facts}"
    gold = {"traveller": {"name": name}, "cities": cities, "level": level}
    return {"prompt": prompt, "schema": schema, "gold": gold}


def json_schema(qs, rng: random.Random, seen: set[tuple[str, str]]) -> list[dict]:
    records = [
        {"system": _system(r), "prompt": _user(r), "schema": r["json_schema"], "gold": json.loads(_reply(r))}
        for r in in_domain(qs, rng, qs.ABILITIES[1], 40, seen)
    ]
    records += [general_json(qs, rng) for _ in range(10)]
    return [{"id": f"json-{i:03d}", **record} for i, record in enumerate(records)]


# ---- tool use ------------------------------------------------------------------------------------------------

IRRELEVANT = ["Tell me a joke about cats.", "What is the capital of Peru?", "Write a haiku about the sea.",
              "How many legs does a spider have?", "Translate 'good morning' into French."]  # fmt: skip


def tool_use(qs, rng: random.Random, seen: set[tuple[str, str]]) -> list[dict]:
    records = []
    for record in in_domain(qs, rng, qs.ABILITIES[2], 40, seen):
        category = "simple" if len(record["tools"]) == 1 else "multiple"
        if category == "simple" and sum(r["category"] == "simple" for r in records) >= 20:
            # Offer a second tool so the two in-domain categories stay balanced.
            extra = rng.choice(sorted(set(qs.TOOLS) - {record["tools"][0]["name"]}))
            record["tools"] = [record["tools"][0], qs.TOOLS[extra]]
            category = "multiple"
        records.append({"system": _system(record), "prompt": _user(record), "tools": record["tools"],
                        "category": category, "calls": record["tool_calls"]})  # fmt: skip
    for _ in range(10):
        first, second = rng.sample(qs.CITIES, 2)
        records.append(
            {"prompt": f"What is the weather in {first} and in {second}?", "tools": [qs.TOOLS["get_weather"]],
             "category": "parallel", "calls": [{"name": "get_weather", "arguments": {"city": city}}
                                               for city in (first, second)]}
        )  # fmt: skip
    for index in range(10):
        offered = [qs.TOOLS[name] for name in rng.sample(sorted(qs.TOOLS), 2)]
        records.append({"prompt": IRRELEVANT[index % len(IRRELEVANT)], "tools": offered,
                        "category": "irrelevance", "calls": []})  # fmt: skip
    return [{"id": f"tool-{i:03d}", **record} for i, record in enumerate(records)]


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where the suite folders go (default: evals/)")
    args = parser.parse_args()
    qs = _quickstart()
    lines = (QUICKSTART / "sft.jsonl").read_text(encoding="utf-8").splitlines()
    seen = {(_user(record), _reply(record)) for record in map(json.loads, lines)}
    rng = random.Random(args.seed)
    for suite, build in (("instruction_following", instruction_following), ("json_schema", json_schema),
                         ("tool_use", tool_use)):  # fmt: skip
        (args.out_dir / suite).mkdir(parents=True, exist_ok=True)
        write_jsonl(args.out_dir / suite / "data.jsonl", build(qs, rng, seen))


if __name__ == "__main__":
    main()
