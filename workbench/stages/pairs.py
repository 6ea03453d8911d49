"""`pairs`: semi-online preference pairs. Sample n responses per prompt from the policy, judge them together
with the dataset's reference reply, and keep best (chosen) against worst (rejected) when they pass the score
thresholds; optionally score an offline pairs file with the same judge and thresholds.

The output is `pairs.jsonl` in the stage folder (also an MLflow artifact), which a `preference` stage reads
through `pairs_from:`. See docs/preference.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from workbench.api import DataSet, ModelPath, ModelSource, Named, StageConfig, StageContext, StageKind, StageResult
from workbench.preference.llm_judge import LlmJudgeSettings
from workbench.preference.pairs import OFFLINE_DROPS, PAIRS_FILE, SAMPLED_DROPS, Thresholds


class PairsStageConfig(StageConfig, ModelSource):
    """Generate preference pairs from the policy's own samples, scored by a judge."""

    kind: Literal["pairs"]
    """Stage kind."""

    data: DataSet
    """Prompts: chat records (`messages`, `tools`) whose last assistant turn, if any, is the reference reply,
    with the scoring fields the judge needs (`instruction_id_list`/`kwargs`, `json_schema`, `tool_calls`)."""

    max_prompts: int | None = Field(default=None, ge=1)
    """Use only the first N prompts."""

    samples: int = Field(default=4, ge=1)
    """Responses sampled per prompt."""

    include_reference: bool = True
    """Put the dataset's reference reply in the pool of candidates too."""

    min_gap: float = Field(default=0.0, ge=0)
    """Drop pairs whose best-minus-worst score is below this (ties are always dropped); counted."""

    min_score: float | None = None
    """Drop pairs whose chosen (best) score is below this: nothing the judge scored was good enough; counted as
    `under_min_score`. In the judge's units (for `judge: llm`, 0-10, or 0-1 under `aggregate: majority`)."""

    max_rejected_score: float | None = None
    """Drop pairs whose rejected (worst) score is above this: the rejected reply is too good to learn against;
    counted as `over_max_rejected_score`. In the judge's units, as `min_score`."""

    offline_data: DataSet | None = None
    """An offline pairs file (any shape a `preference` stage reads) to score with this stage's judge: each pair's
    chosen and rejected are scored, kept under `min_gap`, `min_score` and `max_rejected_score` (a pair the judge
    scores the other way round is dropped as `reversed`), and written to `pairs.jsonl` after the semi-online pairs
    (`origin: offline`). Train on them through `pairs_from` alone, not also as the preference stage's `data`."""

    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature."""

    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling threshold."""

    max_new_tokens: int = Field(default=128, ge=1)
    """Longest sampled response."""

    batch_size: int = Field(default=16, ge=1)
    """Prompts per `generate` call (each yields `samples` sequences)."""

    judge: Annotated[str, Named("judge")] = "verifier"
    """`verifier`: the evaluation checkers named by each record's scoring fields (IFEval instructions, JSON
    schema, gold tool calls); `reward_model`: the score of the `reward_model` folder; `llm`: the LLM jury of
    `llm_judge` with the rubrics of `evals/judges/` (hashed into the stage)."""

    llm_judge: LlmJudgeSettings | None = None
    """Endpoints, models and settings of the LLM jury (for `judge: llm`, and only then)."""

    reward_model: Annotated[str, ModelPath(hub=False)] | None = None
    """A sequence-classification model folder (for `judge: reward_model`); hashed like a data file."""

    reward_batch_size: int = Field(default=16, ge=1)
    """Responses per reward-model forward pass."""

    reward_max_length: int = Field(default=1024, ge=8)
    """Longest conversation the reward model reads (longer ones are cut at the end)."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Sampling seed. Default: the recipe's seed."""

    hashed_when_set = frozenset({"min_score", "max_rejected_score", "offline_data", "llm_judge"})

    @model_validator(mode="after")
    def _one_source(self) -> PairsStageConfig:
        if self.samples == 1 and not self.include_reference:
            # a pair needs two candidates: every prompt would be dropped as too_few_answers
            raise ValueError("samples 1 without include_reference gives one candidate per prompt: no pair can form")
        if (self.judge == "reward_model") != (self.reward_model is not None):
            raise ValueError("'reward_model' (a model folder) is needed with judge: reward_model, and only then")
        if (self.judge == "llm") != (self.llm_judge is not None):
            raise ValueError("'llm_judge' (endpoints and models) is needed with judge: llm, and only then")
        if self.llm_judge is not None:
            low, high = self.llm_judge.aggregate.scale()
            for name in ("min_score", "max_rejected_score"):
                value = getattr(self, name)
                if value is not None and not low <= value <= high:
                    raise ValueError(
                        f"{name} {value:g} is outside the jury's scale {low:g}-{high:g} "
                        f"(aggregate: {self.llm_judge.aggregate})"
                    )
            if self.min_gap > high - low:
                # no two scores on the scale are that far apart: every pair would be dropped as under_gap
                raise ValueError(
                    f"min_gap {self.min_gap:g} is wider than the jury's scale {low:g}-{high:g} "
                    f"(aggregate: {self.llm_judge.aggregate})"
                )
        return self

    def thresholds(self) -> Thresholds:
        """When a scored pair is kept (for sampled and offline pairs alike)."""
        return Thresholds(self.min_gap, self.min_score, self.max_rejected_score)


def run(ctx: StageContext) -> StageResult:
    config: PairsStageConfig = ctx.config
    items = _prompt_items(ctx)
    offline = _offline_pairs(ctx) if config.offline_data else None
    judge = _judge(ctx)  # an LLM jury checks its endpoints here, before anything is generated
    try:
        return _sample_and_judge(ctx, items, offline, judge)
    finally:
        judge.close()  # an LLM jury's connections, kept open across batches


def _sample_and_judge(ctx: StageContext, items, offline, judge) -> StageResult:
    import os

    import torch

    from workbench.data.ranks import gather_on_main, my_share
    from workbench.fsio import write_jsonl_atomic
    from workbench.preference.pairs import PairStats, judge_batch, sample_responses

    config: PairsStageConfig = ctx.config
    thresholds = config.thresholds()
    tokenizer = ctx.tokenizer()
    model = ctx.load_model()
    if torch.cuda.is_available():
        model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    batches = [items[start : start + config.batch_size] for start in range(0, len(items), config.batch_size)]
    stats, found = PairStats(), {}
    # Batches are split across ranks when the stage runs distributed; each is seeded by its own index, so a batch
    # gets the same samples whichever rank draws it, and the pairs are those of one process.
    for index in my_share(ctx, len(batches)):
        torch.manual_seed(ctx.seed + index)
        samples, unfinished = sample_responses(
            model, tokenizer, batches[index], config.samples, config.max_new_tokens, config.temperature, config.top_p
        )
        stats.unfinished_samples += unfinished
        judged = judge_batch(batches[index], samples, judge, config.include_reference, thresholds, stats)
        found[index] = [pair for pair in judged if pair is not None]
        done = min((index + 1) * config.batch_size, len(items))
        ctx.console.print(
            f"  sampled {done}/{len(items)} prompts" + (f" (rank {ctx.rank})" if ctx.world_size > 1 else "")
        )
    stats.unjudgeable.update(judge.unjudgeable)
    parts = gather_on_main(ctx, "pairs", {"pairs": {str(i): p for i, p in found.items()}, "stats": stats.to_json()})
    if parts is None:
        return StageResult()  # rank 0 writes every rank's pairs
    by_batch = {int(index): batch for part in parts for index, batch in part["pairs"].items()}
    pairs = [pair for index in sorted(by_batch) for pair in by_batch[index]]
    stats = PairStats.combined([PairStats.from_json(part["stats"]) for part in parts])
    details = {"pairs_file": PAIRS_FILE, "outcomes": dict(stats.outcomes)}
    metrics = _metrics(stats, len(items), config.samples)
    unjudgeable = stats.unjudgeable
    if offline is not None:
        offline_stats, kept = _judge_offline(ctx, offline, judge, thresholds)
        pairs += kept
        metrics["pairs/offline/total"] = float(len(offline[0]))
        metrics |= _outcome_metrics(offline_stats, "pairs/offline", OFFLINE_DROPS)
        details["offline_outcomes"] = dict(offline_stats.outcomes)
        unjudgeable = unjudgeable + offline_stats.unjudgeable
    metrics["pairs/written"] = float(len(pairs))
    metrics |= {f"judge/unjudgeable_{why}": float(n) for why, n in sorted(unjudgeable.items())}
    write_jsonl_atomic(ctx.tmp_dir / PAIRS_FILE, pairs)
    ctx.tracker.log_artifact(ctx.tmp_dir / PAIRS_FILE, "pairs")
    for key, value in metrics.items():
        ctx.console.print(f"  {key}: {value:g}")
    if getattr(judge, "last_failure", None):
        from rich.markup import escape

        # the server's reply may hold square brackets, which rich would read as markup
        ctx.console.print(f"  [yellow]judge: last failed request: {escape(judge.last_failure)}[/]")
    if not pairs:
        ctx.console.print("  [yellow]no pairs: every prompt was dropped (see pairs/dropped_*)[/]")
    return StageResult(metrics=metrics, details=details)


def _prompt_items(ctx: StageContext):
    from workbench.data.chat import chat_record_problems, lfm2_chat, unreadable_report
    from workbench.data.chat_formats import as_messages
    from workbench.data.records import read_records
    from workbench.errors import StageError
    from workbench.preference.judges import scoring_field_problems
    from workbench.preference.pairs import prompt_item

    config: PairsStageConfig = ctx.config
    read = read_records(ctx.resolve(config.data))
    report = unreadable_report(read, config.data)
    items = []
    for record in read.records[: config.max_prompts]:
        data = as_messages(record.data)
        # A prompt needs no assistant turn; any other problem makes it unusable.
        problems = [p for p in chat_record_problems(data) if p != "with no assistant turn"]
        problems += scoring_field_problems(data)
        for problem in problems:
            report.add(problem, record.location)
        if not problems:
            items.append(prompt_item(record.location, lfm2_chat(data)))
    if report.problems:
        raise StageError("\n".join(report.lines()) + "\n(fix the prompts file)")
    if not items:
        raise StageError(f"{config.data}: no prompts")
    return items


def _offline_pairs(ctx: StageContext):
    """The offline pairs and their records, read and checked as a preference stage would (every problem stops
    the stage, with its line)."""
    from workbench.data.chat import read_with_report
    from workbench.errors import StageError
    from workbench.preference.data import normalize_pair
    from workbench.preference.judges import scoring_field_problems

    config: PairsStageConfig = ctx.config
    records, report = read_with_report(ctx.resolve(config.offline_data), config.offline_data)
    pairs, kept_records = [], []
    for record in records:
        pair, problems = normalize_pair(record.location, record.data)
        problems = [*problems, *scoring_field_problems(record.data)]
        for problem in problems:
            report.add(problem, record.location)
        if pair is not None:
            pairs.append(pair)
            kept_records.append(record.data)
    if report.problems:
        raise StageError("\n".join(report.lines()) + "\n(fix the offline pairs file)")
    return pairs, kept_records


def _judge_offline(ctx: StageContext, offline, judge, thresholds):
    """Score the offline pairs `batch_size` at a time; (their stats, the kept pairs as pairs-file records)."""
    from collections import Counter

    from workbench.preference.pairs import PairStats, judge_offline

    pairs, records = offline
    size, stats, kept = ctx.config.batch_size, PairStats(), []
    before = Counter(judge.unjudgeable)
    for start in range(0, len(pairs), size):
        judged = judge_offline(pairs[start : start + size], records[start : start + size], judge, thresholds, stats)
        kept += [pair for pair in judged if pair is not None]
    stats.unjudgeable = judge.unjudgeable - before
    ctx.console.print(f"  scored {len(pairs)} offline pairs, kept {len(kept)}")
    return stats, kept


def _judge(ctx: StageContext):
    config: PairsStageConfig = ctx.config
    if config.judge == "verifier":
        from workbench.preference.judges import VerifierJudge

        return VerifierJudge()
    if config.judge == "llm":
        from workbench.preference.llm_judge import LlmJury, load_rubrics

        rubrics = ctx.resolve(config.llm_judge.rubrics) if config.llm_judge.rubrics else None
        jury = LlmJury(config.llm_judge, load_rubrics(rubrics))
        jury.check()
        return jury
    from transformers import AutoModelForSequenceClassification

    from workbench.preference.judges import RewardModelJudge

    path = ctx.resolve(config.reward_model)
    model = ctx.load_model(path, AutoModelForSequenceClassification)
    return RewardModelJudge(model, path, config.reward_batch_size, config.reward_max_length)


def _outcome_metrics(stats, prefix: str, reasons) -> dict[str, float]:
    """`<prefix>/kept` and `<prefix>/dropped_<reason>` for each reason, zeros included (runs compare)."""
    kept = {f"{prefix}/kept": float(stats.outcomes["paired"])}
    return kept | {f"{prefix}/dropped_{why}": float(stats.outcomes[why]) for why in reasons}


def _metrics(stats, prompts: int, samples: int) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    return {
        "pairs/prompts": float(prompts),
        **_outcome_metrics(stats, "pairs", SAMPLED_DROPS),
        "pairs/chosen_is_reference": float(stats.chosen_is_reference),
        "judge/mean_sample_score": mean(stats.sample_scores),
        "judge/mean_reference_score": mean(stats.reference_scores),
        "generation/samples": float(prompts * samples),
        "generation/unfinished": float(stats.unfinished_samples),
        "generation/empty": float(stats.empty_samples),
    }


KIND = StageKind(
    name="pairs",
    config=PairsStageConfig,
    run=run,
    makes_model=False,
    distributed=True,
    same_on_any_world_size=True,
    summary="semi-online preference pairs: policy samples judged by verifiers, a reward model or an LLM jury",
)
