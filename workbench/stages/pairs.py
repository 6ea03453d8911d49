"""`pairs`: semi-online preference pairs. Sample n responses per prompt from the policy, judge them together
with the dataset's reference reply, and keep best (chosen) against worst (rejected).

The output is `pairs.jsonl` in the stage folder (also an MLflow artifact), which a `preference` stage reads
through `pairs_from:`. See docs/preference.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from workbench.api import DataSet, ModelPath, ModelSource, StageConfig, StageContext, StageKind, StageResult
from workbench.preference.pairs import PAIRS_FILE


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

    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature."""

    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling threshold."""

    max_new_tokens: int = Field(default=128, ge=1)
    """Longest sampled response."""

    batch_size: int = Field(default=16, ge=1)
    """Prompts per `generate` call (each yields `samples` sequences)."""

    judge: Literal["verifier", "reward_model"] = "verifier"
    """`verifier`: the evaluation checkers named by each record's scoring fields (IFEval instructions, JSON
    schema, gold tool calls); `reward_model`: the score of the `reward_model` folder."""

    reward_model: Annotated[str, ModelPath(hub=False)] | None = None
    """A sequence-classification model folder (for `judge: reward_model`); hashed like a data file."""

    reward_batch_size: int = Field(default=16, ge=1)
    """Responses per reward-model forward pass."""

    reward_max_length: int = Field(default=1024, ge=8)
    """Longest conversation the reward model reads (longer ones are cut at the end)."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Sampling seed. Default: the recipe's seed."""

    @model_validator(mode="after")
    def _one_source(self) -> PairsStageConfig:
        if (self.judge == "reward_model") != (self.reward_model is not None):
            raise ValueError("'reward_model' (a model folder) is needed with judge: reward_model, and only then")
        return self


def run(ctx: StageContext) -> StageResult:
    import os

    import torch

    from workbench.data.ranks import gather_on_main, my_share
    from workbench.fsio import write_jsonl_atomic
    from workbench.preference.pairs import PairStats, judge_prompt, sample_responses

    config: PairsStageConfig = ctx.config
    tokenizer = ctx.tokenizer()
    model = ctx.load_model()
    if torch.cuda.is_available():
        model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    items = _prompt_items(ctx)
    judge = _judge(ctx)
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
        found[index] = []
        for item, texts in zip(batches[index], samples, strict=True):
            pair = judge_prompt(item, texts, judge, config.include_reference, config.min_gap, stats)
            if pair is not None:
                found[index].append(pair)
        done = min((index + 1) * config.batch_size, len(items))
        ctx.console.print(
            f"  sampled {done}/{len(items)} prompts" + (f" (rank {ctx.rank})" if ctx.world_size > 1 else "")
        )
    parts = gather_on_main(ctx, "pairs", {"pairs": {str(i): p for i, p in found.items()}, "stats": stats.to_json()})
    if parts is None:
        return StageResult()  # rank 0 writes every rank's pairs
    by_batch = {int(index): batch for part in parts for index, batch in part["pairs"].items()}
    pairs = [pair for index in sorted(by_batch) for pair in by_batch[index]]
    stats = PairStats.combined([PairStats.from_json(part["stats"]) for part in parts])
    write_jsonl_atomic(ctx.tmp_dir / PAIRS_FILE, pairs)
    ctx.tracker.log_artifact(ctx.tmp_dir / PAIRS_FILE, "pairs")
    metrics = _metrics(stats, len(items), len(pairs), config.samples)
    for key, value in metrics.items():
        ctx.console.print(f"  {key}: {value:g}")
    if not pairs:
        ctx.console.print("  [yellow]no pairs: every prompt was a tie, under the gap or unjudgeable[/]")
    return StageResult(metrics=metrics, details={"pairs_file": PAIRS_FILE, "outcomes": dict(stats.outcomes)})


def _prompt_items(ctx: StageContext):
    from workbench.data.chat import DataReport, chat_record_problems, lfm2_chat
    from workbench.data.records import read_records
    from workbench.errors import StageError
    from workbench.preference.pairs import prompt_item

    config: PairsStageConfig = ctx.config
    read = read_records(ctx.resolve(config.data))
    report = DataReport(source=config.data, unit=read.unit, total=len(read.records) + len(read.unreadable))
    for location, reason in read.unreadable:
        report.add(f"unreadable: {reason}", location)
    items = []
    for record in read.records[: config.max_prompts]:
        # A prompt needs no assistant turn; any other problem makes it unusable.
        problems = [p for p in chat_record_problems(record.data) if p != "with no assistant turn"]
        for problem in problems:
            report.add(problem, record.location)
        if not problems:
            items.append(prompt_item(record.location, lfm2_chat(record.data)))
    if report.problems:
        raise StageError("\n".join(report.lines()) + "\n(fix the prompts file)")
    if not items:
        raise StageError(f"{config.data}: no prompts")
    return items


def _judge(ctx: StageContext):
    from transformers import AutoModelForSequenceClassification

    from workbench.preference.judges import RewardModelJudge, VerifierJudge

    config: PairsStageConfig = ctx.config
    if config.judge == "verifier":
        return VerifierJudge()
    path = ctx.resolve(config.reward_model)
    model = ctx.load_model(path, AutoModelForSequenceClassification)
    return RewardModelJudge(model, path, config.reward_batch_size, config.reward_max_length)


def _metrics(stats, prompts: int, written: int, samples: int) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    return {
        "pairs/prompts": float(prompts),
        "pairs/written": float(written),
        "pairs/dropped_tie": float(stats.outcomes["tie"]),
        "pairs/dropped_under_gap": float(stats.outcomes["under_gap"]),
        "pairs/dropped_unjudgeable": float(stats.outcomes["unjudgeable"]),
        "pairs/chosen_is_reference": float(stats.chosen_is_reference),
        "judge/mean_sample_score": mean(stats.sample_scores),
        "judge/mean_reference_score": mean(stats.reference_scores),
        "generation/samples": float(prompts * samples),
        "generation/unfinished": float(stats.unfinished_samples),
    }


KIND = StageKind(
    name="pairs",
    config=PairsStageConfig,
    run=run,
    makes_model=False,
    distributed=True,
    same_on_any_world_size=True,
    summary="semi-online preference pairs: policy samples judged by verifiers or a reward model",
)
