"""Preference pairs: read, normalize to trl's conversational format, validate, apply length policies.

Accepted record shapes (one per line of JSONL, or rows of JSON / Parquet / a dataset folder):

- ours: `{"messages": [prompt turns], "chosen": "text", "rejected": "text", "tools": [...]}`;
- trl explicit prompt: `{"prompt": [turns] or "text", "chosen": [assistant turns] or "text", "rejected": ...}`;
- trl implicit prompt: `{"chosen": [full conversation], "rejected": [full conversation]}` (shared prefix = prompt);
- ShareGPT (LLaMA-Factory): `{"conversations": [{"from": "human", "value": ...}], "chosen": {"from": "gpt",
  "value": ...}, "rejected": {...}}`; OpenAI content-part lists (`[{"type": "text", "text": ...}]`) in any turn
  are read as their text (`workbench.data.chat_formats`).

A string prompt becomes one user turn and a string response one assistant turn: every stage of a recipe
renders through the one pinned chat template. Problems are counted with their line numbers; nothing is
dropped without being reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.chat import (
    OVERLENGTH,
    DataReport,
    InvalidPolicy,
    OverlengthPolicy,
    Repeats,
    content_problem,
    json_kind,
    read_with_report,
    unknown_role,
)
from workbench.data.chat_formats import as_pair_messages
from workbench.data.tool_calls import has_tool_calls, lfm2_turn, tool_calls_problem
from workbench.errors import StageError

PROMPT_FILLS = "with a prompt that fills max_length (no response token would be left)"
REPEATED_PAIR = "repeating an earlier pair (same prompt, responses and tools)"


@dataclass(frozen=True)
class Pair:
    """One normalized preference pair and where it came from."""

    location: int
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None

    def example(self) -> dict[str, Any]:
        """The record as trl's DPOTrainer takes it (tools as a JSON string, as trl decodes it)."""
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "tools": json.dumps(self.tools) if self.tools else None,
        }


@dataclass
class PairData:
    pairs: list[Pair]
    report: DataReport
    chosen_tokens: list[int]
    """Response tokens of each kept pair's chosen side (same order as `pairs`)."""
    rejected_tokens: list[int]

    def examples(self) -> list[dict[str, Any]]:
        return [pair.example() for pair in self.pairs]


def _as_turns(value: Any, role: str) -> list[dict[str, Any]] | None:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    return None


def _turn_problems(turns: list, what: str) -> list[str]:
    problems = set()
    for turn in turns:
        if not isinstance(turn, dict):
            problems.add(f"with a {what} turn that is not a mapping")
            continue
        calls_problem = tool_calls_problem(turn)
        if calls_problem:
            problems.add(calls_problem)
        content = turn.get("content")
        if content is None and not has_tool_calls(turn):
            problems.add(f"with a {what} turn missing its 'content' text")
        elif content is not None and not isinstance(content, str):  # reported, not coerced (as for chat records)
            problems.add(f"with a {what} turn whose 'content' is {content_problem(content)}")
        elif unknown := unknown_role(turn.get("role")):
            problems.add(f"with a {what} turn of {unknown}")
        elif what == "prompt" and not (content or "").strip() and not has_tool_calls(turn):
            problems.add("with an empty prompt turn")  # an empty response is reported per side, later
    return sorted(problems)


def _role_order_problems(prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> list[str]:
    """A pair trains the reply to its prompt: the prompt ends where the model speaks next (a user turn or a tool
    result), and each response is the model's turns (assistant, with tool results between calls). A prompt
    ending in an assistant turn would train a second assistant turn after it; a user turn in a response would
    train the model to write the user's part."""
    problems = []
    last = prompt[-1].get("role")
    if last not in ("user", "tool"):
        problems.append(f"with a prompt whose last turn is {last}, not user or tool (the turns the model answers)")
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        roles = [turn.get("role") for turn in turns]
        if roles and (roles[0] != "assistant" or roles[-1] != "assistant" or not set(roles) <= {"assistant", "tool"}):
            problems.append(f"with a {side} response that is not the assistant's turns ({' -> '.join(roles)})")
    return problems


def _split_implicit(chosen: list, rejected: list) -> tuple[list, list, list]:
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    # The prompt ends at the last non-assistant turn of the shared prefix, so both responses start there.
    while shared > 0 and isinstance(chosen[shared - 1], dict) and chosen[shared - 1].get("role") == "assistant":
        shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def normalize_pair(location: int, data: dict[str, Any]) -> tuple[Pair | None, list[str]]:
    """The pair in a record, or None and the problems that stop it (short phrases after 'N records ...')."""
    data = as_pair_messages(data)
    missing = [side for side in ("chosen", "rejected") if data.get(side) in (None, "", [])]
    if missing:
        return None, [f"with a prompt but no '{side}' response" for side in missing]
    prompt_value = data.get("prompt", data.get("messages"))
    chosen, rejected = _as_turns(data["chosen"], "assistant"), _as_turns(data["rejected"], "assistant")
    if chosen is None or rejected is None:
        side = "chosen" if chosen is None else "rejected"
        return None, [f"with a '{side}' that is {json_kind(data[side])}, not text or a list of turns"]
    if prompt_value is None:
        prompt, chosen, rejected = _split_implicit(chosen, rejected)
    else:
        prompt = _as_turns(prompt_value, "user")
    if prompt is None:
        return None, [f"with a prompt that is {json_kind(prompt_value)}, not text or a list of turns"]
    if not prompt:
        return None, ["without a prompt ('prompt' or 'messages')"]
    problems = (
        _turn_problems(prompt, "prompt") + _turn_problems(chosen, "response") + _turn_problems(rejected, "response")
    )
    if problems:
        return None, problems
    problems = _role_order_problems(prompt, chosen, rejected)
    if problems:
        return None, problems
    # OpenAI `tool_calls` become LFM2 call blocks in the content (checked above), as for training chats.
    prompt, chosen, rejected = ([lfm2_turn(turn) for turn in turns] for turns in (prompt, chosen, rejected))
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        return None, ["with 'tools' that is not a list"]
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if not turns or not any(turn["content"].strip() for turn in turns):
            problems.append(f"with an empty {side} response")
    if chosen == rejected:
        problems.append("with chosen identical to rejected")
    if problems:
        return None, problems
    return Pair(location, prompt, chosen, rejected, tools or None), []


def _token_count(tokenizer, messages: list[dict], tools, generation_prompt: bool = False) -> int:
    ids = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=generation_prompt)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return len(ids)


def load_pairs(
    path: Path,
    source: str,
    tokenizer,
    max_length: int,
    invalid: InvalidPolicy,
    overlength: OverlengthPolicy,
) -> PairData:
    """Read and check every pair; raise StageError (every problem listed) where the policies say stop. A pair that
    repeats an earlier one is kept and noted."""
    records, report = read_with_report(path, source)
    repeats = Repeats(report, REPEATED_PAIR)
    pairs = []
    for record in records:
        pair, problems = normalize_pair(record.location, record.data)
        for problem in problems:
            report.add(problem, record.location)
        if pair is not None:
            repeats.check(pair.location, [pair.prompt, pair.chosen, pair.rejected, pair.tools])
            pairs.append(pair)
    if report.problems and invalid == "error":
        raise StageError("\n".join(report.lines()) + "\n(fix the data, or set invalid_records: drop to skip them)")
    kept, chosen_tokens, rejected_tokens, too_long = [], [], [], []
    for pair in pairs:
        prompt_len = _token_count(tokenizer, pair.prompt, pair.tools, generation_prompt=True)
        full = [_token_count(tokenizer, pair.prompt + side, pair.tools) for side in (pair.chosen, pair.rejected)]
        if prompt_len >= max_length:  # nothing of the response would be left to train on, even truncated
            report.add(PROMPT_FILLS, pair.location)
            too_long.append(pair.location)
            continue
        if max(full) > max_length:
            report.add(f"{OVERLENGTH}={max_length} tokens (prompt + response)", pair.location)
            too_long.append(pair.location)
            if overlength == "drop":
                continue
        kept.append(pair)
        chosen_tokens.append(full[0] - prompt_len)
        rejected_tokens.append(full[1] - prompt_len)
    if too_long and overlength == "error":
        raise StageError("\n".join(report.lines()) + "\n(raise max_length, or set overlength: drop or truncate)")
    if not kept:
        raise StageError(f"{source}: no usable preference pairs left\n" + "\n".join(report.lines()))
    return PairData(kept, report, chosen_tokens, rejected_tokens)
