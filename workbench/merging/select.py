"""Score merge candidates and pick the best: held-out loss on a chat data file, or an evaluation suite's metric
with gates on the suite's other metrics as constraints."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workbench.errors import StageError

if TYPE_CHECKING:
    from workbench.merging.config import SelectSpec

EVAL_LOSS = "eval_loss"


def gate_violations(
    constraints: list[str], metrics: dict[str, float], others: dict[str, dict[str, float]] | None = None
) -> list[str]:
    """The constraints that `metrics` fail: gates as in evaluate stages, absolute (`suite/metric OP NUMBER`) or
    relative to an earlier evaluate stage (`suite/metric OP STAGE [+|- NUMBER]`, that stage's metrics in `others`)."""
    from workbench.evaluation.gates import check_gates, parse_gate

    gates = [parse_gate(text) for text in constraints]
    results = check_gates(gates, metrics, others or {})
    violations = []
    for gate, result in zip(gates, results, strict=True):
        if result.passed:
            continue
        got = "not measured" if result.value is None else f"{result.value:.4g}"
        if gate.stage is None:
            violations.append(f"{result.gate} (got {got})")
        else:
            bound = f"'{gate.stage}' did not measure it" if result.bound is None else f"bound {result.bound:.4g}"
            violations.append(f"{result.gate} (got {got}, {bound})")
    return violations


@dataclass
class Scored:
    """One candidate's measurements and whether it may be selected."""

    index: int
    metrics: dict[str, float]
    violations: list[str]


def score_candidate(
    index: int, folder: Path, select: SelectSpec, data: HeldOutData | None, compared: dict[str, dict[str, float]]
) -> Scored:
    """Measure the model in `folder` as `select` asks (held-out loss on `data`, the stage's one `HeldOutData` for
    `select.data`, or its suite) and check the constraints; `compared` holds the metrics of the stages in
    `select.compare`."""
    if select.metric == EVAL_LOSS:
        loss, counts = data.loss(folder)
        metrics = {EVAL_LOSS: loss} | counts
    else:
        metrics = suite_metrics(folder, select.suite, select.limit, select.batch_size)
    violations = gate_violations(select.constraints, metrics, compared)
    if select.metric not in metrics:
        violations.append(f"{select.metric} was not reported by suite '{select.suite}'")
    return Scored(index, metrics, violations)


def ranked(
    scored: list[Scored],
    metric: str,
    mode: Literal["min", "max"],
    what: str = "merge candidate",
    names: list[str] | None = None,
) -> list[Scored]:
    """The candidates that meet every constraint, best first (the earlier one on ties); a one-line error naming
    each one (by `names[index]`, else its index) and its reason if none does (`what` says what they are)."""
    eligible = [s for s in scored if not s.violations and math.isfinite(s.metrics.get(metric, math.nan))]
    if not eligible:
        reasons = "; ".join(
            f"{names[s.index] if names else f'candidate {s.index}'}: "
            f"{', '.join(s.violations) or f'{metric} not finite'}"
            for s in scored
        )
        raise StageError(f"no {what} meets the selection constraints ({reasons})")
    sign = 1.0 if mode == "min" else -1.0
    return sorted(eligible, key=lambda s: (sign * s.metrics[metric], s.index))


def pick_best(scored: list[Scored], metric: str, mode: Literal["min", "max"]) -> Scored:
    """The best candidate that meets every constraint (the first one on ties); a one-line error if none does."""
    return ranked(scored, metric, mode)[0]


@dataclass
class _Prepared:
    """The selection records as one tokenizer encodes them: per scored record its input ids `[1, S]` and its
    targets (ids shifted by one, -100 outside assistant turns), and how many records had no assistant token."""

    batches: list[tuple[Any, Any]]
    empty: int


class HeldOutData:
    """A merge stage's selection data (`select.data`): read once, tokenized once per distinct tokenizer (the
    candidates normally share one), and scored on each candidate.

    `loss(model_dir)` is the mean cross-entropy per assistant token over the chat records, with counts of what was
    used. Malformed records and records with no assistant token inside max_length are skipped and counted.
    """

    def __init__(self, data: Path, source: str, max_length: int):
        self.data, self.source, self.max_length = data, source, max_length
        self._records: list | None = None
        self._bad: set[int] = set()
        self._prepared: dict[str, _Prepared] = {}

    def records(self) -> list:
        """The file's readable records (read on first use); `_bad` holds the locations of malformed ones."""
        if self._records is None:
            from workbench.data.chat import load_chat_records

            records, report = load_chat_records(self.data, self.source)
            self._records, self._bad = records, report.bad_locations()
        return self._records

    def prepared(self, model_dir: Path) -> _Prepared:
        """The records encoded by the tokenizer in `model_dir`; encoded once per distinct tokenizer folder content."""
        import torch
        from transformers import AutoTokenizer

        records = self.records()
        key = _tokenizer_key(model_dir)
        if key not in self._prepared:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            batches, empty = [], 0
            for record in records:
                if record.location in self._bad:
                    continue
                ids, labels = _assistant_labels(tokenizer, record.data, self.max_length)
                if not any(label != -100 for label in labels[1:]):
                    empty += 1
                    continue
                batches.append((torch.tensor([ids]), torch.tensor(labels[1:])))
            self._prepared[key] = _Prepared(batches, empty)
        return self._prepared[key]

    def loss(self, model_dir: Path) -> tuple[float, dict[str, float]]:
        import torch
        from transformers import AutoModelForCausalLM

        prepared = self.prepared(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        total, tokens = 0.0, 0
        with torch.no_grad():
            for ids, target in prepared.batches:
                logits = model(input_ids=ids).logits[0, :-1]
                total += torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
                tokens += int((target != -100).sum())
        if not tokens:
            raise StageError(
                f"{self.source}: no record has an assistant turn to score (of {len(self._records)} records)"
            )
        counts = {
            "records_used": float(len(prepared.batches)),
            "records_skipped": float(len(self._bad) + prepared.empty),
        }
        return total / tokens, counts


# Files of a model folder that cannot change how its tokenizer encodes: weights, and what merging writes per
# candidate (its mergekit config, a model card).
_NOT_TOKENIZER = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json", "README.md", "mergekit_config.yml")


def _tokenizer_key(model_dir: Path) -> str:
    """sha256 over every file of `model_dir` that `AutoTokenizer.from_pretrained` may read: folders with equal keys
    encode the selection data identically."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.endswith(_NOT_TOKENIZER)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _assistant_labels(tokenizer, record: dict, max_length: int) -> tuple[list[int], list[int]]:
    encoded = tokenizer.apply_chat_template(
        record["messages"],
        tools=record.get("tools"),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = list(encoded["input_ids"])[:max_length]
    mask = list(encoded["assistant_masks"])[:max_length]
    return ids, [token if keep else -100 for token, keep in zip(ids, mask, strict=True)]


def suite_metrics(model_dir: Path, suite: str, limit: int | None, batch_size: int) -> dict[str, float]:
    """The metrics of one evaluation suite (`<suite>/<metric>`) on the model in `model_dir`, through
    workbench.evaluation.api (lm-eval)."""
    from workbench.evaluation.api import evaluate_model

    return dict(evaluate_model(model_dir, [suite], limit=limit, batch_size=batch_size).metrics)
