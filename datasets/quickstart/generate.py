"""Generate the quickstart SFT data: instruction constraints, JSON answers to schemas, and LFM2-style tool calls.

Stdlib only and seeded: re-running it rewrites `sft.jsonl` and `sft_eval.jsonl` byte for byte. The domain is
narrow on purpose (small word lists, fixed phrasings) so that a tiny model trained on a CPU for minutes learns it.

    python datasets/quickstart/generate.py [--out-dir DIR] [--seed 0] [--train-size 2400] [--eval-size 100]
"""

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

ADJECTIVES = ["red", "small", "quiet", "happy", "old", "brave", "green", "lazy", "bright", "tiny", "clever", "gentle"]
ANIMALS = ["fox", "cat", "dog", "owl", "bear", "horse", "rabbit", "duck", "wolf", "mouse", "lion", "goat"]
VERBS = ["sees", "finds", "follows", "watches", "likes", "visits"]
PLACES = ["the river", "the garden", "the old bridge", "the market", "the forest", "the hill", "the lake", "the farm"]
TIMES = ["in the morning", "at night", "every day", "after lunch", "in the rain", "on Sunday"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"]
FRUITS = ["apple", "pear", "plum", "banana", "cherry", "mango", "grape", "lemon", "peach", "kiwi"]
CITIES = (
    "Athens Berlin Cairo Chicago Dublin Lima Lisbon London Madrid Mumbai "
    "Nairobi Oslo Paris Prague Rome Seoul Sydney Tokyo Toronto Vienna"
).split()
FIRST_NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kim", "Leo"]
LAST_NAMES = ["Lopez", "Smith", "Novak", "Kato", "Berg", "Rossi", "Okafor", "Meyer", "Silva", "Dubois"]
PRODUCTS = ["lamp", "backpack", "kettle", "notebook", "bicycle", "umbrella", "headphones", "chair", "watch", "mug"]
EVENTS = ["music festival", "book fair", "science fair", "marathon", "art show", "food market", "film festival"]
TITLE_WORDS = (
    ["The Silver", "A Quiet", "The Last", "The Hidden", "A Long", "The Golden"],
    ["River", "Garden", "Winter", "Letter", "Island", "Mountain", "Road", "Harbor"],
)
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF"]
SUBJECTS = ["Meeting notes", "Lunch on Friday", "Project update", "Travel plans", "Invoice", "Weekly report"]
TIMER_LABELS = ["pasta", "tea", "laundry", "break", "workout", "oven"]
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"]
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a concise assistant.",
    "Follow the instructions exactly.",
]
END_PHRASES = ["Is there anything else I can help with?", "Have a great day!", "That is all.", "Any other questions?"]
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
BULLET_CATEGORIES = {"animals": ANIMALS, "colors": COLORS, "fruits": FRUITS, "cities": CITIES}

Record = dict
Example = tuple[tuple, Record]  # (entity key used to keep eval combinations out of train, record)


def sentence(rng: random.Random, adjective: str, animal: str) -> str:
    return f"The {adjective} {animal} {rng.choice(VERBS)} {rng.choice(PLACES)} {rng.choice(TIMES)}."


def chat(rng: random.Random, user: str, *replies: dict) -> list[dict]:
    """A conversation with an optional system prompt (a third of the time), one user turn and the replies."""
    system = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 1 / 3 else []
    return [*system, {"role": "user", "content": user}, *replies]


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def instruction_record(rng: random.Random, user: str, reply: str, instruction_id: str, kwargs: dict) -> Record:
    """IFEval-style fields, so an eval suite can score the reply with IFEval's checkers."""
    return {
        "messages": chat(rng, user, assistant(reply)),
        "task": "instruction_following",
        "instruction_id_list": [instruction_id],
        "kwargs": [kwargs],
    }


# ---- (a) instruction constraints ----------------------------------------------------------------------------


def capital_letters(rng: random.Random) -> Example:
    adjective, animal = rng.choice(ADJECTIVES), rng.choice(ANIMALS)
    text = sentence(rng, adjective, animal)
    user = rng.choice(
        [
            "Repeat this sentence in capital letters: {}",
            "Rewrite the following sentence using only capital letters.\n{}",
            "Write this in all caps: {}",
        ]
    ).format(text)
    return ("english_capital", text), instruction_record(rng, user, text.upper(), "change_case:english_capital", {})


def lowercase_letters(rng: random.Random) -> Example:
    adjective, animal = rng.choice(ADJECTIVES), rng.choice(ANIMALS)
    text = sentence(rng, adjective, animal)
    shown = text.upper() if rng.random() < 0.5 else text
    user = rng.choice(
        [
            "Rewrite this sentence in lowercase letters only: {}",
            "Repeat the following sentence with no capital letters.\n{}",
        ]
    ).format(shown)
    return ("english_lowercase", text), instruction_record(rng, user, text.lower(), "change_case:english_lowercase", {})


def end_phrase(rng: random.Random) -> Example:
    adjective, animal, phrase = rng.choice(ADJECTIVES), rng.choice(ANIMALS), rng.choice(END_PHRASES)
    user = rng.choice(
        [
            'Tell me about a {} {}. End your response with the exact phrase "{}"',
            'Write one sentence about a {} {}, then finish with the exact phrase "{}" and nothing after it.',
        ]
    ).format(adjective, animal, phrase)
    reply = f"{sentence(rng, adjective, animal)} {phrase}"
    return ("end_checker", adjective, animal, phrase), instruction_record(
        rng, user, reply, "startend:end_checker", {"end_phrase": phrase}
    )


def title(rng: random.Random) -> Example:
    adjective, animal = rng.choice(ADJECTIVES), rng.choice(ANIMALS)
    user = rng.choice(
        [
            "Write a short story about a {} {}. Include a title wrapped in double angular brackets, such as <<title>>.",
            "Describe a {} {} in two sentences. Give your answer a title in double angular brackets, like <<title>>.",
        ]
    ).format(adjective, animal)
    reply = f"<<The {adjective.title()} {animal.title()}>>\n{sentence(rng, adjective, animal)} It is very {adjective}."
    return ("title", adjective, animal), instruction_record(rng, user, reply, "detectable_format:title", {})


def quotation(rng: random.Random) -> Example:
    adjective, animal = rng.choice(ADJECTIVES), rng.choice(ANIMALS)
    user = rng.choice(
        [
            "Wrap your entire response in double quotation marks. Describe a {} {}.",
            "Describe a {} {} in one sentence, and put your whole answer inside double quotes.",
        ]
    ).format(adjective, animal)
    reply = f'"{sentence(rng, adjective, animal)}"'
    return ("quotation", adjective, animal), instruction_record(rng, user, reply, "startend:quotation", {})


def bullet_list(rng: random.Random) -> Example:
    category = rng.choice(sorted(BULLET_CATEGORIES))
    count = rng.choice(sorted(NUMBER_WORDS))
    items = rng.sample(BULLET_CATEGORIES[category], count)
    user = rng.choice(
        [
            "List {} {} as markdown bullet points. Use exactly {} bullets, like:\n* one\n* two",
            "Name {} {}. Answer with a markdown list of exactly {} bullet points that start with *.",
        ]
    ).format(NUMBER_WORDS[count], category, count)
    reply = "\n".join(f"* {item}" for item in items)
    return ("bullets", category, *items), instruction_record(
        rng, user, reply, "detectable_format:number_bullet_lists", {"num_bullets": count}
    )


def no_comma(rng: random.Random) -> Example:
    category = rng.choice(sorted(BULLET_CATEGORIES))
    count = rng.choice(sorted(NUMBER_WORDS))
    items = rng.sample(BULLET_CATEGORIES[category], count)
    user = f"Name {NUMBER_WORDS[count]} {category} in one sentence. Do not use any commas in your response."
    reply = f"Here are {NUMBER_WORDS[count]} {category}: {' and '.join(items)}."
    return ("no_comma", category, *items), instruction_record(rng, user, reply, "punctuation:no_comma", {})


# ---- (b) JSON answers to schemas ----------------------------------------------------------------------------


def object_schema(**properties: str) -> dict:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": list(properties),
    }


def json_record(rng: random.Random, schema: dict, facts: str, answer: dict) -> Record:
    user = rng.choice(
        [
            "Extract the details from the text as JSON matching this schema: {}\nText: {}",
            "Return a JSON object that follows this schema: {}\nAnswer with the JSON object only.\nText: {}",
        ]
    ).format(json.dumps(schema), facts)
    return {"messages": chat(rng, user, assistant(json.dumps(answer))), "task": "json_schema", "json_schema": schema}


def person_json(rng: random.Random) -> Example:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    age, city = rng.randint(18, 80), rng.choice(CITIES)
    facts = rng.choice(
        [
            f"{name} is {age} years old and lives in {city}.",
            f"{name} lives in {city} and is {age} years old.",
            f"Name: {name}. City: {city}. Age: {age}.",
        ]
    )
    schema = object_schema(name="string", age="integer", city="string")
    return ("person", name, age, city), json_record(rng, schema, facts, {"name": name, "age": age, "city": city})


def product_json(rng: random.Random) -> Example:
    product, in_stock = rng.choice(PRODUCTS), rng.random() < 0.5
    price = rng.choice([rng.randint(3, 199), rng.randint(3, 199) + 0.5, rng.randint(3, 199) + 0.99])
    stock = "in stock" if in_stock else "out of stock"
    facts = rng.choice(
        [
            f"The {product} costs {price} dollars and is {stock}.",
            f"Our {product} is {stock} at the moment. It sells for {price} dollars.",
        ]
    )
    schema = object_schema(product="string", price="number", in_stock="boolean")
    answer = {"product": product, "price": price, "in_stock": in_stock}
    return ("product", product, price, in_stock), json_record(rng, schema, facts, answer)


def event_json(rng: random.Random) -> Example:
    event, city = rng.choice(EVENTS), rng.choice(CITIES)
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    facts = rng.choice(
        [
            f"The {event} takes place in {city} on {date}.",
            f"On {date} the city of {city} hosts a {event}.",
        ]
    )
    schema = object_schema(event="string", city="string", date="string")
    return ("event", event, city, date), json_record(rng, schema, facts, {"event": event, "city": city, "date": date})


def book_json(rng: random.Random) -> Example:
    book = f"{rng.choice(TITLE_WORDS[0])} {rng.choice(TITLE_WORDS[1])}"
    author, year = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", rng.randint(1950, 2024)
    facts = rng.choice(
        [
            f'{author} wrote "{book}" in {year}.',
            f'"{book}" was published in {year} by {author}.',
        ]
    )
    schema = object_schema(title="string", author="string", year="integer")
    return ("book", book, author, year), json_record(
        rng, schema, facts, {"title": book, "author": author, "year": year}
    )


# ---- (c) tool calls in LFM2's format ------------------------------------------------------------------------


def tool_spec(name: str, description: str, required: list[str], **properties: dict) -> dict:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


STRING, NUMBER, INTEGER = {"type": "string"}, {"type": "number"}, {"type": "integer"}

TOOLS = {
    "get_weather": tool_spec(
        "get_weather",
        "Get the current weather in a city.",
        ["city"],
        city=STRING,
        unit={"type": "string", "enum": ["celsius", "fahrenheit"]},
    ),
    "get_time": tool_spec("get_time", "Get the local time in a city.", ["city"], city=STRING),
    "convert_currency": tool_spec(
        "convert_currency",
        "Convert an amount from one currency to another.",
        ["amount", "source", "target"],
        amount=NUMBER,
        source=STRING,
        target=STRING,
    ),
    "set_timer": tool_spec("set_timer", "Start a timer.", ["minutes"], minutes=INTEGER, label=STRING),
    "send_email": tool_spec("send_email", "Send an email.", ["to", "subject"], to=STRING, subject=STRING),
    "search_flights": tool_spec(
        "search_flights",
        "Find flights between two cities.",
        ["origin", "destination", "date"],
        origin=STRING,
        destination=STRING,
        date=STRING,
    ),
}


def python_call(name: str, arguments: dict) -> str:
    """LFM2's tool call: a Pythonic call list between the tool-call tokens, e.g. `[get_time(city="Oslo")]`."""
    args = ", ".join(f"{key}={json.dumps(value)}" for key, value in arguments.items())
    return f"<|tool_call_start|>[{name}({args})]<|tool_call_end|>"


def tool_record(rng: random.Random, name: str, arguments: dict, user: str, result: dict, answer: str) -> Example:
    """A call to `name` among 1-2 offered tools; half of the time the conversation goes on to the tool's result."""
    offered = [name, *rng.sample(sorted(set(TOOLS) - {name}), rng.randint(0, 1))]
    rng.shuffle(offered)
    replies = [assistant(python_call(name, arguments))]
    if rng.random() < 0.5:
        replies += [{"role": "tool", "content": json.dumps(result)}, assistant(answer)]
    record = {
        "messages": chat(rng, user, *replies),
        "tools": [TOOLS[tool] for tool in offered],
        "task": "tool_call",
        "tool_calls": [{"name": name, "arguments": arguments}],
    }
    return (name, *arguments.values()), record


def weather_call(rng: random.Random) -> Example:
    city, unit = rng.choice(CITIES), rng.choice([None, "celsius", "fahrenheit"])
    if unit:
        user = rng.choice(["What is the weather in {} in {}?", "Tell me the weather in {}, in degrees {}."])
        user, arguments = user.format(city, unit), {"city": city, "unit": unit}
    else:
        user = rng.choice(["What's the weather like in {}?", "Is it raining in {} right now?"]).format(city)
        arguments = {"city": city}
    temperature, condition = rng.randint(-5, 35), rng.choice(CONDITIONS)
    result = {"city": city, "temperature": temperature, "condition": condition}
    return tool_record(
        rng, "get_weather", arguments, user, result, f"It is {temperature} degrees and {condition} in {city}."
    )


def time_call(rng: random.Random) -> Example:
    city = rng.choice(CITIES)
    user = rng.choice(["What time is it in {}?", "Tell me the current time in {}."]).format(city)
    clock = f"{rng.randint(0, 23):02d}:{rng.choice([0, 15, 30, 45]):02d}"
    return tool_record(rng, "get_time", {"city": city}, user, {"time": clock}, f"It is {clock} in {city}.")


def currency_call(rng: random.Random) -> Example:
    amount = rng.choice([5, 10, 20, 50, 100, 250, 1000])
    source, target = rng.sample(CURRENCIES, 2)
    user = rng.choice(["How much is {} {} in {}?", "Convert {} {} to {}."]).format(amount, source, target)
    converted = round(amount * rng.uniform(0.5, 1.5), 2)
    arguments = {"amount": amount, "source": source, "target": target}
    answer = f"{amount} {source} is {converted} {target}."
    return tool_record(rng, "convert_currency", arguments, user, {"amount": converted, "currency": target}, answer)


def timer_call(rng: random.Random) -> Example:
    minutes, label = rng.choice([1, 2, 3, 5, 10, 15, 20, 25, 30, 45, 60]), rng.choice(TIMER_LABELS)
    if rng.random() < 0.5:
        user, arguments = f"Set a timer for {minutes} minutes.", {"minutes": minutes}
    else:
        user, arguments = f"Start a {minutes} minute timer for the {label}.", {"minutes": minutes, "label": label}
    return tool_record(
        rng, "set_timer", arguments, user, {"status": "started"}, f"Your {minutes} minute timer is running."
    )


def email_call(rng: random.Random) -> Example:
    first = rng.choice(FIRST_NAMES)
    address, subject = f"{first.lower()}@example.com", rng.choice(SUBJECTS)
    user = rng.choice(
        [
            'Send an email to {} with the subject "{}".',
            'Email {} about "{}".',
        ]
    ).format(address, subject)
    answer = f"I sent the email to {address}."
    return tool_record(rng, "send_email", {"to": address, "subject": subject}, user, {"status": "sent"}, answer)


def flights_call(rng: random.Random) -> Example:
    origin, destination = rng.sample(CITIES, 2)
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    user = rng.choice(["Find flights from {} to {} on {}.", "Are there flights from {} to {} on {}?"])
    arguments = {"origin": origin, "destination": destination, "date": date}
    price = rng.randint(60, 900)
    result = {"flights": 1, "cheapest_price": price}
    answer = f"The cheapest flight to {destination} costs {price} dollars."
    return tool_record(rng, "search_flights", arguments, user.format(origin, destination, date), result, answer)


def python_calls(calls: list[tuple[str, dict]]) -> str:
    """Several calls in one LFM2 call list, e.g. `[get_time(city="Oslo"), get_time(city="Rome")]`."""
    inner = ", ".join(python_call(name, arguments)[len("<|tool_call_start|>[") : -len("]<|tool_call_end|>")]
                      for name, arguments in calls)  # fmt: skip
    return f"<|tool_call_start|>[{inner}]<|tool_call_end|>"


def parallel_call(rng: random.Random) -> Example:
    """One question about two cities: two calls of the same tool in one call list (BFCL's parallel category)."""
    first, second = rng.sample(CITIES, 2)
    name, user = rng.choice(
        [
            ("get_weather", "What is the weather in {} and in {}?"),
            ("get_weather", "How is the weather in {} and {} today?"),
            ("get_time", "What time is it in {} and in {}?"),
            ("get_time", "Tell me the local time in {} and in {}."),
        ]
    )
    calls = [(name, {"city": city}) for city in (first, second)]
    offered = [name, *rng.sample(sorted(set(TOOLS) - {name}), rng.randint(0, 1))]
    rng.shuffle(offered)
    record = {
        "messages": chat(rng, user.format(first, second), assistant(python_calls(calls))),
        "tools": [TOOLS[tool] for tool in offered],
        "task": "tool_call",
        "tool_calls": [{"name": n, "arguments": a} for n, a in calls],
    }
    return (name, first, second), record


UNRELATED = [
    ("How many days are in a week?", "There are seven days in a week."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("Name a fruit that is yellow.", "A banana is yellow."),
    ("What do bees make?", "Bees make honey."),
    ("Say hello in Spanish.", "Hola!"),
    ("How many minutes are in an hour?", "There are sixty minutes in an hour."),
    ("Write one sentence about a fox.", "The quick fox runs across the hill."),
    ("What is two plus three?", "Two plus three is five."),
    ("Give me a word that rhymes with cat.", "Hat rhymes with cat."),
    ("Which animal says moo?", "A cow says moo."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Tell me a fun fact about owls.", "Owls can turn their heads very far around."),
]


def no_call(rng: random.Random) -> Example:
    """Tools offered, none of them fits the request: a plain answer and no call (BFCL's irrelevance category)."""
    user, answer = rng.choice(UNRELATED)
    offered = rng.sample(sorted(TOOLS), rng.randint(1, 2))
    record = {
        "messages": chat(rng, user, assistant(answer)),
        "tools": [TOOLS[tool] for tool in offered],
        "task": "tool_call",
        "tool_calls": [],
    }
    return ("no_call", user), record  # a held-out question is never trained on


ABILITIES: list[list[Callable[[random.Random], Example]]] = [
    [capital_letters, lowercase_letters, end_phrase, title, quotation, bullet_list, no_comma],
    [person_json, product_json, event_json, book_json],
    [weather_call, time_call, currency_call, timer_call, email_call, flights_call],
]
"""The makers `evals/generate.py` draws its in-domain items from (it imports this module)."""
TRAINING_ABILITIES = [*ABILITIES[:2], [*ABILITIES[2], parallel_call, parallel_call, no_call, no_call]]
"""What the SFT data is drawn from: the in-domain makers plus parallel calls and requests no offered tool fits."""


def generate(seed: int, train_size: int, eval_size: int) -> tuple[list[Record], list[Record]]:
    """Eval records first; train records never reuse an eval record's entity combination. Abilities alternate."""
    rng = random.Random(seed)
    eval_keys: set[tuple] = set()
    eval_records, train_records = [], []
    while len(eval_records) < eval_size:
        key, record = rng.choice(TRAINING_ABILITIES[len(eval_records) % len(ABILITIES)])(rng)
        eval_keys.add(key)
        eval_records.append(record)
    while len(train_records) < train_size:
        key, record = rng.choice(TRAINING_ABILITIES[len(train_records) % len(ABILITIES)])(rng)
        if key not in eval_keys and _user_turn(record) not in SUITE_PROMPTS:
            train_records.append(record)
    return train_records, eval_records


def _user_turn(record: Record) -> str:
    return next(message["content"] for message in record["messages"] if message["role"] == "user")


def _suite_prompts() -> set[str]:
    """The evaluation suites' prompts (`evals/*/data.jsonl`): no training record asks exactly what a suite asks."""
    evals = Path(__file__).resolve().parents[2] / "evals"
    return {json.loads(line)["prompt"] for path in sorted(evals.glob("*/data.jsonl")) for line in path.open()}


SUITE_PROMPTS = _suite_prompts()


def write_jsonl(path: Path, records: list[Record]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=2400)
    parser.add_argument("--eval-size", type=int, default=100)
    args = parser.parse_args()
    train, held_out = generate(args.seed, args.train_size, args.eval_size)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "sft.jsonl", train)
    write_jsonl(args.out_dir / "sft_eval.jsonl", held_out)


if __name__ == "__main__":
    main()
