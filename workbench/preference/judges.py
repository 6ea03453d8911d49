"""Judges that score candidate responses for semi-online pairs; higher is better, None = cannot judge.

- `VerifierJudge`: the evaluation suites' own checkers, by the scoring fields a record carries:
  IFEval instructions (`instruction_id_list` + `kwargs`, lm-eval's checkers, strict), JSON-schema
  validity (`json_schema`), tool-call correctness against gold calls (`tool_calls`, with `tools`).
- `RewardModelJudge`: a sequence-classification model folder; its first logit on the rendered
  conversation (prompt + response) is the score.
- `LlmJury` (`llm_judge.py`): LLM judges behind OpenAI-compatible endpoints, with a rubric per suite kind.

Every judge counts why it gave None, by reason, in its `unjudgeable` counter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workbench.api.kinds import Namespace
from workbench.evaluation.scorers import parse_tool_calls, score_json, score_tool_calls
from workbench.evaluation.tasks import REPO_EVALS

RUBRICS_DIR = REPO_EVALS / "judges"
"""The LLM judge's built-in rubrics, one `<kind>.md` per suite kind (see `llm_judge.py`)."""

JUDGE_NAMES = ("verifier", "reward_model", "llm")


def _judge_definition(name: str, _root: Path) -> tuple[str, Path] | None:
    """The built-in rubrics define what `llm` asks, so they enter the hash of every stage using it."""
    return ("evals/judges", RUBRICS_DIR) if name == "llm" else None


JUDGES = Namespace(name="judge", names=lambda _root: list(JUDGE_NAMES), definition=_judge_definition)
"""The `judge` namespace a pairs stage names its judge in."""


@dataclass(frozen=True)
class Candidate:
    """One response to judge, with the record (scoring fields) and prompt it answers."""

    record: dict[str, Any]
    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    response: str


class Judge(Protocol):
    unjudgeable: Counter
    """Candidates (or, for a jury, juror answers) given no score, by reason."""

    def score(self, candidates: list[Candidate]) -> list[float | None]: ...

    def close(self) -> None:
        """Let go of what the judge holds open across calls (an LLM jury's connections); the stage calls it once
        it is done judging."""


def _last_user_text(prompt: list[dict[str, Any]]) -> str:
    return next((turn["content"] for turn in reversed(prompt) if turn.get("role") == "user"), "")


def scoring_field_problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with a record's scoring fields, checked before anything is sampled: each judge reads them as
    written (`instruction_id_list` with one `kwargs` mapping per id, a `json_schema` mapping, `tool_calls` as
    `{name, arguments}` mappings)."""
    problems = []
    ids = record.get("instruction_id_list")
    if ids is not None:
        kwargs = record.get("kwargs")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append("instruction_id_list is not a list of instruction ids")
        elif not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            problems.append(f"kwargs needs one mapping per instruction id ({len(ids)})")
    if "json_schema" in record and not isinstance(record["json_schema"], dict):
        problems.append("json_schema is not a mapping")
    calls = record.get("tool_calls")
    if calls is not None and not (
        isinstance(calls, list)
        and all(isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("arguments", {}), dict)
                for c in calls)
    ):  # fmt: skip
        problems.append("tool_calls is not a list of {name, arguments} mappings")
    return problems


def scoring_kinds(candidate: Candidate) -> list[str]:
    """The kinds of check the record's scoring fields call for, in this order: `instruction_following`,
    `json_schema`, `tool_use`. Tool calls are checked only on the turn that should make them: a prompt that already
    holds a tool result asks for the answer after it, which the gold calls do not describe."""
    record = candidate.record
    kinds = []
    if record.get("instruction_id_list"):
        kinds.append("instruction_following")
    if record.get("json_schema") is not None:
        kinds.append("json_schema")
    if record.get("tool_calls") is not None and not any(turn.get("role") == "tool" for turn in candidate.prompt):
        kinds.append("tool_use")
    return kinds


def instruction_score(candidate: Candidate) -> float:
    """Fraction of the record's IFEval instructions the response follows (strict)."""
    ids = candidate.record["instruction_id_list"]
    from workbench.evaluation.ifeval import check_instructions

    result = check_instructions(_last_user_text(candidate.prompt), candidate.response, ids, candidate.record["kwargs"])
    return sum(result["inst_strict"]) / len(result["inst_strict"])


def json_score(candidate: Candidate) -> float:
    """1 if the response holds JSON valid under the record's schema, 0.5 if it holds invalid JSON, else 0."""
    found = score_json(candidate.response, candidate.record["json_schema"])
    return 1.0 if found.valid else 0.5 if found.parsed else 0.0


def tool_call_score(candidate: Candidate) -> float:
    """1 if the calls match the gold calls, 0.5 if calls parse but are wrong, else 0."""
    gold = candidate.record["tool_calls"]
    parsed = parse_tool_calls(candidate.response)
    if not gold:
        # The suite counts an unparsable block as "no call" (BFCL); as a preference, a reply that tries a call where
        # none is wanted is worse than one that does not.
        return 0.0 if parsed.error is not None or parsed.calls else 1.0
    category = "simple" if len(gold) == 1 else "parallel"
    if score_tool_calls(candidate.response, gold, candidate.tools, category=category, parsed=parsed).correct:
        return 1.0
    return 0.5 if parsed.error is None and parsed.calls else 0.0


VERIFIERS = {"instruction_following": instruction_score, "json_schema": json_score, "tool_use": tool_call_score}
"""The verifier of each scoring kind; each is called only for a record `scoring_kinds` gives its kind."""


class VerifierJudge(Judge):
    """The mean of every verifier that applies to the record; None when none does (`no_verifier`)."""

    def __init__(self) -> None:
        self.unjudgeable: Counter = Counter()

    def score(self, candidates: list[Candidate]) -> list[float | None]:
        scores = []
        for candidate in candidates:
            found = [VERIFIERS[kind](candidate) for kind in scoring_kinds(candidate)]
            scores.append(sum(found) / len(found) if found else None)
            if not found:
                self.unjudgeable["no_verifier"] += 1
        return scores


class RewardModelJudge(Judge):
    """Scores with a sequence-classification reward model (its first logit), batched."""

    def __init__(self, model, tokenizer_path: Path, batch_size: int = 16, max_length: int = 1024):
        """`model`: a loaded sequence-classification model (`StageContext.load_model(path, ...)`)."""
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.model = model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The classifier reads the last non-pad token, which it finds through the config's pad id.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.batch_size, self.max_length = batch_size, max_length
        self.unjudgeable: Counter = Counter()  # a logit is always a score

    def _text(self, candidate: Candidate) -> str:
        conversation = candidate.prompt + [{"role": "assistant", "content": candidate.response}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(conversation, tools=candidate.tools, tokenize=False)
        return "\n".join(f"{turn['role']}: {turn['content']}" for turn in conversation)

    def score(self, candidates: list[Candidate]) -> list[float | None]:
        import torch

        scores: list[float | None] = []
        for start in range(0, len(candidates), self.batch_size):
            texts = [self._text(c) for c in candidates[start : start + self.batch_size]]
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                add_special_tokens=False,
            )  # fmt: skip
            with torch.no_grad():
                logits = self.model(**batch).logits
            scores.extend(float(value) for value in logits[:, 0])
        return scores
