"""`preference`: pairwise preference optimization (DPO, length-normalized DPO, SimPO, APO-zero, LFM2's objective)
on trl's DPOTrainer, with reference log-probs cached across runs.

The loss is `workbench.losses.preference` (see docs/preference-loss.md); the stage is documented in
docs/preference.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from workbench.annotate.source import is_argilla_uri, resolve_argilla_source
from workbench.api import (
    DataPath,
    DataSet,
    ModelSource,
    StageConfig,
    StageContext,
    StageKind,
    StageName,
    StageRef,
    StageResult,
)
from workbench.losses.preference_config import LossFn, PreferenceLossConfig, Preset, resolve
from workbench.preference.data import PairData
from workbench.preference.pairs import PAIRS_FILE
from workbench.training.lora import LoraSettings
from workbench.training.settings import TrainerFields

REF_CACHE_FOLDER = "_ref_logps"
LOSS_FIELDS = ("beta", "margin", "delta", "loss_fn", "length_normalize", "reference_free")


class PreferenceStageConfig(StageConfig, ModelSource, TrainerFields):
    """Train on chosen/rejected pairs with the generalized (optionally length-normalized) preference loss."""

    kind: Literal["preference"]
    """Stage kind."""

    reference_from: StageName | None = None
    """Earlier stage whose model is the reference. Default: the starting model itself."""

    data: Annotated[str, DataPath("dataset", schemes=("argilla",))] | None = None
    """Preference pairs file: `messages`/`prompt` + `chosen` + `rejected` (also trl's formats; docs/preference.md),
    or `argilla://WORKSPACE/DATASET`: annotations pulled from Argilla at plan time; their hash enters the cache key."""

    pairs_from: Annotated[str, StageRef(kinds=("pairs",))] | None = None
    """Earlier `pairs` stage whose generated pairs to train on (with `data`'s, when both are given)."""

    eval_data: DataSet | None = None
    """Held-out pairs: loss, reward margins and preference accuracy before and after training."""

    preset: Preset = Preset.LFM2
    """Named loss settings: dpo, ln_dpo, simpo, apo_zero or lfm2; the fields below override single values."""

    beta: float | None = Field(default=None, gt=0)
    """Override: inverse temperature on the (normalized) log-ratios."""

    margin: float | None = Field(default=None, ge=0)
    """Override: target reward margin inside f (SimPO's gamma)."""

    delta: float | None = Field(default=None, ge=0)
    """Override: weight of the APO-zero anchor term."""

    loss_fn: LossFn | None = None
    """Override: pairwise f, one of logistic (DPO), hinge (SLiC), squared (IPO), none (anchor only)."""

    length_normalize: bool | None = None
    """Override: divide log-ratios by the number of response tokens."""

    reference_free: bool | None = None
    """Override: use the policy log-prob as the reward, with no reference model (SimPO)."""

    max_length: int = Field(default=1024, ge=8)
    """Longest prompt + response in tokens; see `overlength` for longer pairs."""

    learning_rate: float = Field(default=5e-7, gt=0)
    """Peak learning rate (preference optimization wants far smaller ones than SFT)."""

    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """Learning-rate schedule."""

    warmup: float = Field(default=0.1, ge=0)
    """Warm-up: a fraction of total steps if < 1, else a number of steps."""

    lora: LoraSettings | None = None
    """Train LoRA adapters; the reference is then the base with adapters disabled (no second model)."""

    precompute_ref_log_probs: bool = True
    """Compute reference log-probs once before training (trl's precompute path) instead of every step."""

    cache_reference: bool = True
    """Keep precomputed reference log-probs in `<work_dir>/<recipe>/_ref_logps/`, keyed by (reference model,
    tokenized pairs), so re-runs, resumed runs and sweeps skip the reference passes."""

    padding_free: bool = False
    """Passed to trl; trl 1.16 falls back to padded batches (its padding-free DPO path is being rewritten)."""

    invalid_records: Literal["error", "drop"] = "error"
    """Malformed pairs (no prompt, missing or empty response, chosen == rejected): stop, or drop them (reported)."""

    overlength: Literal["drop", "truncate", "error"] = "drop"
    """Pairs longer than max_length (always reported with their lines): drop, truncate the end, or stop."""

    sample_count: int = Field(default=3, ge=0)
    """Held-out prompts to generate from before and after training (logged to MLflow)."""

    unhashed_fields = StageConfig.unhashed_fields | TrainerFields.cadence_fields | {"sample_count", "cache_reference"}

    @model_validator(mode="after")
    def _check(self) -> PreferenceStageConfig:
        if self.data is None and self.pairs_from is None:
            raise ValueError("give 'data' (a pairs file) or 'pairs_from' (a pairs stage), or both")
        if self.loss_config().reference_free and self.reference_from is not None:
            # it would still be an input of the stage and in its hash, and never be read
            why = "reference_free: true" if self.reference_free else f"preset {self.preset.value}"
            raise ValueError(f"reference_from '{self.reference_from}' is unused: the loss is reference-free ({why})")
        return self

    def loss_config(self) -> PreferenceLossConfig:
        """The preset's settings with this stage's overrides applied (ValueError if they contradict)."""
        overrides = {name: getattr(self, name) for name in LOSS_FIELDS if getattr(self, name) is not None}
        return resolve(self.preset, **overrides)


def run(ctx: StageContext) -> StageResult:
    from workbench.preference.trainer import PreferenceTrainer
    from workbench.training.loop import train_and_save
    from workbench.training.lora import peft_config
    from workbench.training.samples import generate_samples
    from workbench.training.shared_data import stage_dataset

    config: PreferenceStageConfig = ctx.config
    loss_config = config.loss_config()
    tokenizer = ctx.tokenizer()
    model = ctx.load_model()
    train = _load_all_pairs(ctx, tokenizer, "data/train", _train_sources(ctx))
    held_out = _load_all_pairs(ctx, tokenizer, "data/eval", [(config.eval_data, None)]) if config.eval_data else None
    ref_model = (
        ctx.load_model(ctx.inputs[config.reference_from].model_dir)
        if config.reference_from and not loss_config.reference_free
        else None
    )
    cache = _ref_cache(ctx, loss_config)
    # samples are for the reviewer: the main process alone generates them
    prompts = _sample_prompts(held_out or train, config.sample_count if ctx.is_main else 0)
    before = generate_samples(model, tokenizer, prompts)
    trainer = PreferenceTrainer(
        model=model,
        ref_model=ref_model,
        args=_training_args(ctx, loss_config, evaluate=held_out is not None),
        train_dataset=stage_dataset(ctx, train.examples(), "train"),
        eval_dataset=stage_dataset(ctx, held_out.examples(), "eval") if held_out else None,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora),
        loss_config=loss_config,
        ref_cache=cache,
    )
    evaluate = (lambda: _eval_metrics(trainer.evaluate())) if held_out else None
    trained = train_and_save(ctx, trainer, evaluate, lora=config.lora is not None)
    metrics = _data_metrics(train, "data/train") | trained.metrics
    after = generate_samples(trained.model, tokenizer, prompts)
    metrics |= _sample_metrics(ctx, tokenizer, prompts, before, after)
    details = {"loss": loss_config.model_dump(mode="json"), "ref_cache": _cache_details(cache)}
    if cache is not None:
        metrics |= {"ref_cache/hits": float(len(cache.hits)), "ref_cache/misses": float(len(cache.misses))}
        ctx.console.print(f"  reference log-probs: cached {cache.hits or '-'}, computed {cache.misses or '-'}")
    return StageResult(metrics=metrics, details=details)


def _train_sources(ctx: StageContext) -> list[tuple[str | None, Path | None]]:
    """(recipe-relative data path, None) for `data`; (display name, pairs file) for a `pairs_from` stage."""
    config: PreferenceStageConfig = ctx.config
    sources: list[tuple[str | None, Path | None]] = []
    if config.data and is_argilla_uri(config.data):
        pulled = resolve_argilla_source(config.data, ctx.project.work_root)
        ctx.tracker.log_metrics({f"argilla/{key}": value for key, value in pulled.metrics.items()})
        ctx.console.print(f"  data: {config.data}: pulled version {pulled.content_hash[:12]} ({pulled.path})")
        sources.append((config.data, pulled.path))
    elif config.data:
        sources.append((config.data, None))
    if config.pairs_from:
        sources.append((f"{config.pairs_from}/{PAIRS_FILE}", ctx.inputs[config.pairs_from].dir / PAIRS_FILE))
    return sources


def _load_all_pairs(ctx: StageContext, tokenizer, prefix: str, sources) -> PairData:
    """Load and validate each source, report what was dropped, and concatenate the kept pairs."""
    from workbench.preference.data import PairData, load_pairs
    from workbench.training.chat_dataset import publish_report

    config: PreferenceStageConfig = ctx.config
    loaded = []
    for name, path in sources:
        data = load_pairs(
            path or ctx.resolve(name), name, tokenizer, config.max_length, config.invalid_records, config.overlength
        )
        key = f"{prefix}/{Path(name).stem}" if len(sources) > 1 else prefix
        publish_report(ctx, data.report, len(data.pairs), config.overlength, key, noun="pairs")
        loaded.append(data)
    first = loaded[0]
    for other in loaded[1:]:
        first = PairData(
            first.pairs + other.pairs,
            first.report,
            first.chosen_tokens + other.chosen_tokens,
            first.rejected_tokens + other.rejected_tokens,
        )
    return first


def _ref_cache(ctx: StageContext, loss_config: PreferenceLossConfig):
    from workbench.hashing import model_identity
    from workbench.preference.ref_cache import RefLogpCache

    config: PreferenceStageConfig = ctx.config
    if not (config.cache_reference and config.precompute_ref_log_probs) or loss_config.reference_free:
        return None
    reference = ctx.inputs[config.reference_from].model_dir if config.reference_from else ctx.input_model()
    identity = model_identity(reference)
    # The stage writes into <work_dir>/<recipe>/<stage>/<hash>.tmp; the cache sits at the recipe level.
    return RefLogpCache(ctx.project.store_root / REF_CACHE_FOLDER, reference=identity)


def _training_args(ctx: StageContext, loss_config: PreferenceLossConfig, evaluate: bool):
    from trl import DPOConfig

    config: PreferenceStageConfig = ctx.config
    return DPOConfig(
        **config.trainer_arguments(ctx.checkpoint_dir, config.name, ctx.seed, ctx.resources),
        per_device_eval_batch_size=config.batch_size,
        max_length=config.max_length,
        beta=loss_config.beta,
        precompute_ref_log_probs=config.precompute_ref_log_probs and not loss_config.reference_free,
        padding_free=config.padding_free,
        prediction_loss_only=True,
        dataset_num_proc=None,
    )


def _data_metrics(data: PairData, prefix: str) -> dict[str, float]:
    count = len(data.pairs)
    return {
        f"{prefix}/chosen_tokens_mean": sum(data.chosen_tokens) / count,
        f"{prefix}/rejected_tokens_mean": sum(data.rejected_tokens) / count,
    }


def _eval_metrics(raw: dict[str, float]) -> dict[str, float]:
    """trl's `eval_rewards/margins` -> `eval/rewards_margins` (and so on), runtime figures left out."""
    kept = {}
    for key, value in raw.items():
        name = key.removeprefix("eval_")
        if name.startswith(("rewards/", "logps/", "lengths/")) or name == "loss":
            kept[f"eval/{name.replace('/', '_')}"] = float(value)
    return kept


def _sample_prompts(data: PairData, count: int) -> list[dict]:
    return [
        {"messages": pair.prompt, "tools": pair.tools, "reference": pair.chosen[-1]["content"]}
        for pair in data.pairs[:count]
    ]


def _sample_metrics(ctx: StageContext, tokenizer, prompts, before: list[str], after: list[str]) -> dict[str, float]:
    from workbench.training.samples import log_samples

    if not prompts:
        return {}
    log_samples(ctx, prompts, before, after)

    def mean_tokens(texts: list[str]) -> float:
        return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts) / len(texts)

    return {"samples/mean_tokens_before": mean_tokens(before), "samples/mean_tokens_after": mean_tokens(after)}


def _cache_details(cache) -> dict | None:
    if cache is None:
        return None
    return {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses}


KIND = StageKind(
    name="preference",
    config=PreferenceStageConfig,
    run=run,
    distributed=True,
    sweepable=True,
    summary="preference optimization (dpo, ln_dpo, simpo, apo_zero, lfm2) on trl's DPOTrainer",
)
