"""Generate the pretraining corpus: short English documents in the quickstart's vocabulary, with a difficulty score.

Stdlib only and seeded: re-running it rewrites `corpus.jsonl` and `corpus_eval.jsonl` byte for byte. Each line is
`{"text": ..., "difficulty": d}`; difficulty 1 documents are single simple sentences, 2 short stories with a
connective, 3 longer paragraphs mixing facts, lists and a JSON object. Documents are written in shuffled order so
a curriculum (easy to hard) is a real reordering.

    python datasets/pretrain/generate.py [--out-dir DIR] [--seed 0] [--train-size 1500] [--eval-size 60]
"""

import argparse
import json
import random
from pathlib import Path

ADJECTIVES = ["red", "small", "quiet", "happy", "old", "brave", "green", "lazy", "bright", "tiny", "clever", "gentle"]
ANIMALS = ["fox", "cat", "dog", "owl", "bear", "horse", "rabbit", "duck", "wolf", "mouse", "lion", "goat"]
VERBS = ["sees", "finds", "follows", "watches", "likes", "visits"]
PLACES = ["the river", "the garden", "the old bridge", "the market", "the forest", "the hill", "the lake", "the farm"]
TIMES = ["in the morning", "at night", "every day", "after lunch", "in the rain", "on Sunday"]
CITIES = "Athens Berlin Cairo Dublin Lima Lisbon London Madrid Oslo Paris Prague Rome Seoul Tokyo Vienna".split()
NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kim", "Leo"]
PRODUCTS = ["lamp", "backpack", "kettle", "notebook", "bicycle", "umbrella", "headphones", "chair", "watch", "mug"]
FRUITS = ["apple", "pear", "plum", "banana", "cherry", "mango", "grape", "lemon", "peach", "kiwi"]
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"]
CONNECTIVES = ["Then", "Later", "After that", "Soon", "At last"]


def simple(rng: random.Random) -> str:
    return f"The {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} {rng.choice(PLACES)}."


def story(rng: random.Random) -> str:
    animal = rng.choice(ANIMALS)
    first = f"The {rng.choice(ADJECTIVES)} {animal} {rng.choice(VERBS)} {rng.choice(PLACES)} {rng.choice(TIMES)}."
    second = f"{rng.choice(CONNECTIVES)} the {animal} {rng.choice(VERBS)} {rng.choice(PLACES)}."
    return f"{first} {second}"


def paragraph(rng: random.Random) -> str:
    name, city, product = rng.choice(NAMES), rng.choice(CITIES), rng.choice(PRODUCTS)
    fruits = rng.sample(FRUITS, 3)
    price = rng.randint(5, 120)
    record = {"name": name, "city": city, "product": product, "price": price}
    return (
        f"{name} lives in {city}, where the weather is {rng.choice(CONDITIONS)} today. "
        f"{name} buys {article(product)} {product} for {price} dollars and a bag of "
        f"{plural(fruits[0])}, {plural(fruits[1])} and {plural(fruits[2])}. "
        f"{story(rng)} As JSON: {json.dumps(record)}"
    )


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("ch", "sh")) else "s")


LEVELS = {1: simple, 2: story, 3: paragraph}


def document(rng: random.Random) -> dict:
    level = rng.choice(list(LEVELS))
    return {"text": LEVELS[level](rng), "difficulty": level}


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--eval-size", type=int, default=60)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    held_out = [document(rng) for _ in range(args.eval_size)]
    seen = {r["text"] for r in held_out}
    train = []
    while len(train) < args.train_size:
        record = document(rng)
        if record["text"] not in seen:  # no held-out document appears in training
            train.append(record)
    write(args.out_dir / "corpus.jsonl", train)
    write(args.out_dir / "corpus_eval.jsonl", held_out)


if __name__ == "__main__":
    main()
