"""`distill`: train a student on `w_ce * CE + w_kd * (L_B + L_T)`, LFM2's tempered, decoupled Top-K loss
(`workbench.losses.topk_distill`, derivation in docs/distillation.md), against a cached teacher (`cached`, the
default) or a teacher run in the loop (`online`, for comparison)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from workbench.api import (
    DataFolder,
    ModelPath,
    RecipeView,
    StageConfig,
    StageContext,
    StageKind,
    StageName,
    StageRef,
    StageResult,
)
from workbench.distill.fields import PretrainFields
from workbench.losses.topk_distill_config import TopKDistillConfig
from workbench.training.settings import TrainerFields


class DistillStageConfig(StageConfig, PretrainFields):
    """Distill a teacher into a student on packed blocks of a corpus (the student starts like `pretrain`)."""

    kind: Literal["distill"]
    """Stage kind."""

    teacher_mode: Literal["cached", "online"] = "cached"
    """`cached`: teacher targets from a top-K cache (`cache` or `cache_path`). `online`: the teacher (`teacher` or
    `teacher_model`) runs on every batch and its top-K is taken on the fly: slower, for comparison."""

    cache: Annotated[str, StageRef(kinds=("teacher_cache",))] | None = None
    """A `teacher_cache` stage of this recipe (cached mode). Its corpus blocks must be this stage's."""

    cache_path: DataFolder | None = None
    """Or: a cache folder built elsewhere (cached mode); refused unless its manifest matches."""

    teacher: StageName | None = None
    """The teacher as an earlier stage: required in online mode; in cached mode the cache must come from it."""

    teacher_model: Annotated[str, ModelPath(hub=False)] | None = None
    """Or: the teacher as a model folder on disk (same rules as `teacher`)."""

    loss: TopKDistillConfig = TopKDistillConfig()
    """The loss: `k` (32, at most the cache's K), `temperature` (1.0), `w_ce` (0.5), `w_kd` (0.5),
    `use_mass_weight` (true: L_T weighted by P_T), `use_tau_squared` (true: L_T times tau^2)."""

    unhashed_fields = StageConfig.unhashed_fields | TrainerFields.cadence_fields

    def check_recipe(self, recipe: RecipeView) -> None:
        """The cache stage must hold what this stage reads: the same packed blocks, at least `loss.k` tokens per
        position, and (when both name one) the same teacher; otherwise the stage would refuse it after training
        everything before it."""
        cache = recipe.config_of(self.cache) if self.cache else None
        if cache is None or recipe.kind_of(self.cache) != "teacher_cache":
            return
        if self.loss.k > cache.k:
            recipe.problem(
                ("loss", "k"), f"k {self.loss.k} is more than the cache '{self.cache}' stores (k: {cache.k})"
            )
        for field in ("corpus", "seq_len", "text_field"):
            mine, theirs = getattr(self, field), getattr(cache, field)
            if mine != theirs:
                recipe.problem(
                    (field,),
                    f"{field} {mine!r} differs from the cache '{self.cache}' ({theirs!r}): a top-K cache holds the "
                    "teacher's targets for one corpus cut into blocks of one length",
                )
        if self.teacher is not None and cache.from_ is not None and self.teacher != cache.from_:
            recipe.problem(("teacher",), f"teacher '{self.teacher}' is not the cache's teacher '{cache.from_}'")

    @model_validator(mode="after")
    def _teacher_source(self):
        if self.teacher is not None and self.teacher_model is not None:
            raise ValueError("give at most one of 'teacher' (a stage) or 'teacher_model' (a folder)")
        has_cache = (self.cache is not None) + (self.cache_path is not None)
        if self.teacher_mode == "cached" and has_cache != 1:
            raise ValueError("teacher_mode: cached needs exactly one of 'cache' (a stage) or 'cache_path'")
        if self.teacher_mode == "online":
            if has_cache:
                raise ValueError("teacher_mode: online reads no cache; remove 'cache'/'cache_path'")
            if self.teacher is None and self.teacher_model is None:
                raise ValueError("teacher_mode: online needs 'teacher' (a stage) or 'teacher_model' (a folder)")
        return self


def run(ctx: StageContext) -> StageResult:
    from workbench.distill.corpus import load_corpus
    from workbench.distill.pretraining import block_order, corpus_training_metrics, heldout_evaluator, start_model
    from workbench.distill.teacher import load_teacher, open_cache, teacher_source
    from workbench.distill.training import BlockCollator, BlockDataset, DistillTrainer, training_arguments
    from workbench.training.loop import train_and_save

    config: DistillStageConfig = ctx.config
    tokenizer = ctx.tokenizer()
    train = load_corpus(ctx, config, config.corpus, tokenizer, "data/train")
    held_out = load_corpus(ctx, config, config.eval_corpus, tokenizer, "data/eval") if config.eval_corpus else None
    student = start_model(ctx, tokenizer)
    vocab = student.config.vocab_size
    source = teacher_source(ctx, config.teacher, config.teacher_model)
    cache = None
    if config.cache or config.cache_path:
        folder = ctx.inputs[config.cache].dir / "cache" if config.cache else ctx.resolve(config.cache_path)
        cache = open_cache(ctx, folder, train.digest, source, vocab)
    teacher = load_teacher(ctx, source, vocab) if config.teacher_mode == "online" else None
    order, sequential = block_order(ctx, train)
    trainer = DistillTrainer(
        model=student,
        args=training_arguments(config, ctx.checkpoint_dir, ctx.seed, sequential, ctx.resources),
        train_dataset=BlockDataset(order),
        data_collator=BlockCollator(train.blocks, cache),
        processing_class=tokenizer,
        loss_config=config.loss,
        teacher=teacher,
    )
    trained = train_and_save(ctx, trainer, heldout_evaluator(trainer, held_out))
    return StageResult(metrics=corpus_training_metrics(trained, config.seq_len))


KIND = StageKind(
    name="distill",
    config=DistillStageConfig,
    run=run,
    distributed=True,
    sweepable=True,
    summary="decoupled Top-K distillation from a cached (or online) teacher",
)
