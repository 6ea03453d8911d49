"""Read candidate pairs (a prompt and two responses) from JSONL, in a stable, annotation-ready form.

Accepted records (one JSON object a line; JSON, Parquet and dataset folders are read too, by row):
- `prompt` (a string, or a list of chat messages) or `messages` (the chat before the responses);
- the two responses as `chosen` + `rejected` (the preference stage's semi-online pairs, optionally with
  `chosen_score` / `rejected_score`), or `response_a` + `response_b`, or `responses: [first, second]`
  (optionally with `scores: [s1, s2]`);
- optional `source` (stage name), `model`, `judge`.

A pair is also checked as the preference stage will read it once pulled (`prompt`, `chosen`, `rejected`:
`workbench.preference.data.normalize_pair`), so what that stage would refuse (a prompt turn of an unknown role,
say) is refused here, at push time, with its line, rather than after annotators have spent time on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.records import read_records
from workbench.errors import StageError
from workbench.preference.data import normalize_pair


@dataclass(frozen=True)
class Pair:
    """One prompt with two candidate responses, shown to annotators as A and B."""

    key: str
    """Stable id from the prompt and the unordered responses: the same pair pushed twice is one record."""
    prompt: list[dict[str, str]]
    response_a: str
    response_b: str
    a_origin: str
    """What response A was in the input (`chosen`, `rejected`, `first`, `second`): the order is randomized."""
    score_a: float | None = None
    score_b: float | None = None
    info: dict[str, str] = field(default_factory=dict)
    """`source`, `model`, `judge` when the input gave them."""


def pair_key(prompt: list[dict[str, str]], first: str, second: str) -> str:
    canonical = json.dumps([prompt, sorted([first, second])], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def read_pairs(path: Path, seed: int = 0) -> tuple[list[Pair], int]:
    """The pairs in `path` and how many lines repeated an earlier pair (skipped). Every invalid line is
    reported at once, with its line number."""
    if not path.exists():
        raise StageError(f"{path}: pairs file not found")
    read = read_records(path)
    problems = list(read.unreadable)
    pairs: dict[str, Pair] = {}
    duplicates = 0
    for record in read.records:
        try:
            pair = _parse(record.data, seed)
        except (ValueError, TypeError) as error:
            problems.append((record.location, str(error)))
            continue
        if pair.key in pairs:
            duplicates += 1
        else:
            pairs[pair.key] = pair
    if problems:
        lines = [f"{path}:{number}: {reason}" for number, reason in sorted(problems)]
        raise StageError(f"{len(problems)} invalid pair line(s):\n" + "\n".join(lines))
    if not pairs:
        raise StageError(f"{path}: no pairs")
    return list(pairs.values()), duplicates


def _parse(row: dict, seed: int) -> Pair:
    prompt = _prompt(row)
    (first, first_name, first_score), (second, second_name, second_score) = _responses(row)
    if first == second:
        raise ValueError("the two responses are identical")
    _check_as_preference_data(prompt, first, second)
    key = pair_key(prompt, first, second)
    # The order shown to annotators is a coin flip per pair that does not change between pushes.
    swap = hashlib.sha256(f"{seed}:{key}".encode()).digest()[0] % 2 == 1
    if swap:
        (first, first_name, first_score), (second, second_name, second_score) = (
            (second, second_name, second_score),
            (first, first_name, first_score),
        )
    info = {name: str(row[name]) for name in ("source", "model", "judge") if row.get(name) is not None}
    return Pair(key, prompt, first, second, first_name, first_score, second_score, info)


def _check_as_preference_data(prompt: list[dict[str, str]], first: str, second: str) -> None:
    """Refuse what the preference stage would refuse in the pulled row (`prompt`, `chosen`, `rejected`)."""
    _, problems = normalize_pair(0, {"prompt": prompt, "chosen": first, "rejected": second})
    if problems:
        raise ValueError("the preference stage would refuse a pair " + " and ".join(problems))


def _prompt(row: dict) -> list[dict[str, str]]:
    prompt = row.get("prompt", row.get("messages"))
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt:
        messages = []
        for message in prompt:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
                raise ValueError("each prompt message needs a `role` and a string `content`")
            messages.append({"role": str(message["role"]), "content": message["content"]})
        return messages
    raise ValueError("needs a non-empty `prompt` (string or chat messages) or `messages`")


def _responses(row: dict) -> list[tuple[str, str, float | None]]:
    if "chosen" in row or "rejected" in row:
        named = [
            ("chosen", row.get("chosen"), row.get("chosen_score")),
            ("rejected", row.get("rejected"), row.get("rejected_score")),
        ]
    elif "response_a" in row or "response_b" in row:
        named = [
            ("first", row.get("response_a"), row.get("score_a")),
            ("second", row.get("response_b"), row.get("score_b")),
        ]
    else:
        responses, scores = row.get("responses"), row.get("scores") or [None, None]
        if not isinstance(responses, list) or len(responses) != 2 or len(scores) != 2:
            raise ValueError(
                "needs two responses: `chosen`/`rejected`, `response_a`/`response_b` or `responses: [a, b]`"
            )
        named = [("first", responses[0], scores[0]), ("second", responses[1], scores[1])]
    out = []
    for name, text, score in named:
        if isinstance(text, list) and text and isinstance(text[-1], dict):
            text = text[-1].get("content")  # a conversational response: its final assistant message
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"response `{name}` is missing or empty")
        if score is not None and not isinstance(score, int | float):
            raise ValueError(f"score of `{name}` is not a number")
        out.append((text, name, None if score is None else float(score)))
    return out
