"""Semi-online pairs: sample responses from the policy in batches, judge them, keep best against worst."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workbench.preference.data import Pair
from workbench.preference.judges import Candidate, Judge

PAIRS_FILE = "pairs.jsonl"
"""The file a pairs stage writes in its folder and a preference stage reads through `pairs_from`."""

SCORING_FIELDS = ("task", "instruction_id_list", "kwargs", "json_schema", "tools", "tool_calls")

OUTCOMES = (
    "paired", "too_few_answers", "unjudgeable", "reversed", "tie", "under_gap", "under_min_score",
    "over_max_rejected_score",
)  # fmt: skip
"""Where each prompt (or offline pair) ends: paired (kept), or dropped for the first of these reasons that applies,
in this order. `too_few_answers` (under two non-empty answers to compare: empty samples are never judged) happens
to sampled prompts only, `reversed` (the judge scores the rejected side higher) to offline pairs only."""
SAMPLED_DROPS = tuple(why for why in OUTCOMES[1:] if why != "reversed")
"""Why a sampled prompt can end without a pair (its best is never below its worst)."""
OFFLINE_DROPS = tuple(why for why in OUTCOMES[1:] if why != "too_few_answers")
"""Why an offline pair can be dropped (both its sides are there)."""


@dataclass(frozen=True)
class Thresholds:
    """When a scored (chosen, rejected) pair is kept; scores are in the judge's own units."""

    min_gap: float = 0.0
    min_score: float | None = None
    max_rejected_score: float | None = None

    def verdict(self, chosen: float, rejected: float) -> str:
        """'paired', or the first reason in OUTCOMES order that drops the pair."""
        gap = chosen - rejected
        if gap < 0:
            return "reversed"
        if gap == 0:
            return "tie"
        if gap < self.min_gap:
            return "under_gap"
        if self.min_score is not None and chosen < self.min_score:
            return "under_min_score"
        if self.max_rejected_score is not None and rejected > self.max_rejected_score:
            return "over_max_rejected_score"
        return "paired"


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
    """What happened to each prompt; every prompt lands in exactly one of OUTCOMES."""

    outcomes: Counter = field(default_factory=Counter)
    chosen_is_reference: int = 0
    unfinished_samples: int = 0
    empty_samples: int = 0
    """Samples with no text (the model ended its turn at once): never judged, never a side of a pair."""
    sample_scores: list[float] = field(default_factory=list)
    reference_scores: list[float] = field(default_factory=list)
    unjudgeable: Counter = field(default_factory=Counter)
    """The judge's reasons for giving no score (`Judge.unjudgeable`)."""

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "chosen_is_reference": self.chosen_is_reference,
                "unfinished_samples": self.unfinished_samples, "empty_samples": self.empty_samples,
                "sample_scores": self.sample_scores,
                "reference_scores": self.reference_scores, "unjudgeable": dict(self.unjudgeable)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairStats:
        return cls(Counter(data["outcomes"]), data["chosen_is_reference"], data["unfinished_samples"],
                   data["empty_samples"], list(data["sample_scores"]), list(data["reference_scores"]),
                   Counter(data["unjudgeable"]))  # fmt: skip

    @classmethod
    def combined(cls, parts: list[PairStats]) -> PairStats:
        """The stats of several ranks' shares as one."""
        total = cls()
        for part in parts:
            total.outcomes.update(part.outcomes)
            total.chosen_is_reference += part.chosen_is_reference
            total.unfinished_samples += part.unfinished_samples
            total.empty_samples += part.empty_samples
            total.sample_scores += part.sample_scores
            total.reference_scores += part.reference_scores
            total.unjudgeable.update(part.unjudgeable)
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


def select_pair(scores: list[float], thresholds: Thresholds) -> tuple[int, int] | str:
    """(best index, worst index), the first of each on ties; or why there is no pair (`Thresholds.verdict`)."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    worst = min(range(len(scores)), key=lambda i: scores[i])
    verdict = thresholds.verdict(scores[best], scores[worst])
    return (best, worst) if verdict == "paired" else verdict


def judge_batch(
    items: list[PromptItem],
    samples: list[list[str]],
    judge: Judge,
    include_reference: bool,
    thresholds: Thresholds,
    stats: PairStats,
) -> list[dict[str, Any] | None]:
    """The pair for each prompt (a record for the pairs file), or None with the reason counted in `stats`. Every
    candidate of the batch goes to the judge in one call (an LLM jury sends them concurrently). Empty samples are
    left out: a preference stage refuses an empty side, and a verifier could score nothing as a pass."""
    answered = [[text for text in texts if text.strip()] for texts in samples]
    stats.empty_samples += sum(len(texts) for texts in samples) - sum(len(texts) for texts in answered)
    pools = [
        texts + ([item.reference] if include_reference and item.reference is not None else [])
        for item, texts in zip(items, answered, strict=True)
    ]
    candidates = [
        Candidate(item.record, item.prompt, item.tools, text)
        for item, pool in zip(items, pools, strict=True)
        if len(pool) >= 2
        for text in pool
    ]
    scores = judge.score(candidates) if candidates else []
    pairs, start = [], 0
    for item, texts, pool in zip(items, answered, pools, strict=True):
        if len(pool) < 2:
            stats.outcomes["too_few_answers"] += 1
            pairs.append(None)
            continue
        pairs.append(_prompt_pair(item, len(texts), pool, scores[start : start + len(pool)], thresholds, stats))
        start += len(pool)
    return pairs


def _prompt_pair(
    item: PromptItem, sampled: int, pool: list[str], scores: list[float | None], thresholds: Thresholds, stats
) -> dict[str, Any] | None:
    if any(score is None for score in scores):
        stats.outcomes["unjudgeable"] += 1
        return None
    stats.sample_scores.extend(scores[:sampled])
    if len(pool) > sampled:
        stats.reference_scores.append(scores[-1])
    picked = select_pair(scores, thresholds)
    if isinstance(picked, str):
        stats.outcomes[picked] += 1
        return None
    best, worst = picked
    stats.outcomes["paired"] += 1
    stats.chosen_is_reference += best == sampled
    pair = {"messages": item.prompt, "chosen": pool[best], "rejected": pool[worst]}
    pair |= {name: item.record[name] for name in SCORING_FIELDS if name in item.record}
    return pair | {
        "chosen_score": scores[best],
        "rejected_score": scores[worst],
        "chosen_is_reference": best == sampled,
        "origin": "semi_online",
        "source_line": item.location,
    }


def judge_offline(
    pairs: list[Pair], records: list[dict[str, Any]], judge: Judge, thresholds: Thresholds, stats: PairStats
) -> list[dict[str, Any] | None]:
    """Each offline pair scored by `judge` (its chosen and rejected responses, with its record's scoring fields)
    and kept under `thresholds` as a record for the pairs file, or None with the reason counted in `stats`. A pair
    whose rejected side the judge scores higher is dropped as `reversed`, never swapped."""
    candidates = [
        Candidate(record, pair.prompt, pair.tools, _response_text(side))
        for pair, record in zip(pairs, records, strict=True)
        for side in (pair.chosen, pair.rejected)
    ]
    scores = judge.score(candidates)
    kept: list[dict[str, Any] | None] = []
    for index, (pair, record) in enumerate(zip(pairs, records, strict=True)):
        chosen, rejected = scores[2 * index], scores[2 * index + 1]
        verdict = "unjudgeable" if chosen is None or rejected is None else thresholds.verdict(chosen, rejected)
        stats.outcomes[verdict] += 1
        if verdict != "paired":
            kept.append(None)
            continue
        out = {"messages": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        out |= {name: record[name] for name in SCORING_FIELDS if name in record}
        kept.append(
            out
            | {"chosen_score": chosen, "rejected_score": rejected, "origin": "offline", "source_line": pair.location}
        )
    return kept


def _response_text(turns: list[dict[str, Any]]) -> str:
    """A response of one or more assistant turns as the text a judge reads (tool calls are LFM2 blocks in it)."""
    return "\n".join(turn["content"] for turn in turns if turn.get("content"))
