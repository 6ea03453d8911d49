"""Semi-online pairs: sample responses from the policy in batches, judge them, keep best against worst."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workbench.preference.judges import Candidate, Judge

PAIRS_FILE = "pairs.jsonl"
"""The file a pairs stage writes in its folder and a preference stage reads through `pairs_from`."""

SCORING_FIELDS = ("task", "instruction_id_list", "kwargs", "json_schema", "tools", "tool_calls")


@dataclass(frozen=True)
class PromptItem:
    """A prompt to sample for: its conversation, its dataset reference reply (if any) and its source record."""

    location: int
    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    reference: str | None
    record: dict[str, Any]


@dataclass
class PairStats:
    """What happened to each prompt; every prompt lands in exactly one outcome."""

    outcomes: Counter = field(default_factory=Counter)
    chosen_is_reference: int = 0
    unfinished_samples: int = 0
    sample_scores: list[float] = field(default_factory=list)
    reference_scores: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "chosen_is_reference": self.chosen_is_reference,
                "unfinished_samples": self.unfinished_samples, "sample_scores": self.sample_scores,
                "reference_scores": self.reference_scores}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairStats:
        return cls(Counter(data["outcomes"]), data["chosen_is_reference"], data["unfinished_samples"],
                   list(data["sample_scores"]), list(data["reference_scores"]))  # fmt: skip

    @classmethod
    def combined(cls, parts: list[PairStats]) -> PairStats:
        """The stats of several ranks' shares as one."""
        total = cls()
        for part in parts:
            total.outcomes.update(part.outcomes)
            total.chosen_is_reference += part.chosen_is_reference
            total.unfinished_samples += part.unfinished_samples
            total.sample_scores += part.sample_scores
            total.reference_scores += part.reference_scores
        return total


def prompt_item(location: int, record: dict[str, Any]) -> PromptItem:
    """The conversation up to the last assistant turn (that turn is the reference), or the whole one if it has none."""
    messages = record["messages"]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return PromptItem(location, messages, record.get("tools"), None, record)
    return PromptItem(location, messages[:last], record.get("tools"), messages[last]["content"], record)


def sample_responses(
    model, tokenizer, items: list[PromptItem], n: int, max_new_tokens: int, temperature: float, top_p: float
) -> tuple[list[list[str]], int]:
    """`n` sampled replies per prompt in one left-padded `generate` call; also how many hit max_new_tokens."""
    import torch

    encoded = [
        tokenizer.apply_chat_template(item.prompt, tools=item.tools, add_generation_prompt=True, tokenize=True)
        for item in items
    ]
    encoded = [ids["input_ids"] if hasattr(ids, "keys") else ids for ids in encoded]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
    model.eval()
    with torch.no_grad():
        generated = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=temperature, top_p=top_p,
            num_return_sequences=n, max_new_tokens=max_new_tokens, pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    texts, unfinished = [], 0
    for row in generated[:, width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        else:
            unfinished += 1
        texts.append(tokenizer.decode([t for t in row if t != pad], skip_special_tokens=False))
    return [texts[i * n : (i + 1) * n] for i in range(len(items))], unfinished


def select_pair(scores: list[float], min_gap: float) -> tuple[int, int] | str:
    """(best index, worst index), the first of each on ties; or why there is no pair ('tie' / 'under_gap')."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    worst = min(range(len(scores)), key=lambda i: scores[i])
    gap = scores[best] - scores[worst]
    if gap <= 0:
        return "tie"
    if gap < min_gap:
        return "under_gap"
    return best, worst


def judge_prompt(
    item: PromptItem, samples: list[str], judge: Judge, include_reference: bool, min_gap: float, stats: PairStats
) -> dict[str, Any] | None:
    """The pair for one prompt (a record for the pairs file), or None with the reason counted in `stats`."""
    pool = list(samples)
    if include_reference and item.reference is not None:
        pool.append(item.reference)
    scores = judge.score([Candidate(item.record, item.prompt, item.tools, text) for text in pool])
    if any(score is None for score in scores):
        stats.outcomes["unjudgeable"] += 1
        return None
    stats.sample_scores.extend(scores[: len(samples)])
    if len(pool) > len(samples):
        stats.reference_scores.append(scores[-1])
    picked = select_pair(scores, min_gap)
    if isinstance(picked, str):
        stats.outcomes[picked] += 1
        return None
    best, worst = picked
    stats.outcomes["paired"] += 1
    stats.chosen_is_reference += best == len(samples)
    pair = {"messages": item.prompt, "chosen": pool[best], "rejected": pool[worst]}
    pair |= {name: item.record[name] for name in SCORING_FIELDS if name in item.record}
    return pair | {
        "chosen_score": scores[best],
        "rejected_score": scores[worst],
        "chosen_is_reference": best == len(samples),
        "source_line": item.location,
    }
