"""`distill`: train a student on `w_ce * CE + w_kd * (L_B + L_T)`, LFM2's tempered, decoupled Top-K loss
(`workbench.losses.topk_distill`, derivation in docs/distillation.md), against a cached teacher (`cached`, the
default) or a teacher run in the loop (`online`, for comparison)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import model_validator

from workbench.losses.topk_distill_config import TopKDistillConfig
from workbench.stages.pretrain import PretrainStageConfig
from workbench.stages.registry import StageKind, register

if TYPE_CHECKING:
    from workbench.runner.context import StageContext, StageResult


class DistillStageConfig(PretrainStageConfig):
    """Distill a teacher into a student on packed blocks of a corpus (the student starts like `pretrain`)."""

    kind: Literal["distill"]
    """Stage kind."""

    teacher_mode: Literal["cached", "online"] = "cached"
    """`cached`: teacher targets from a top-K cache (`cache` or `cache_path`). `online`: the teacher (`teacher` or
    `teacher_model`) runs on every batch and its top-K is taken on the fly: slower, for comparison."""

    cache: str | None = None
    """A `teacher_cache` stage of this recipe (cached mode). Its corpus blocks must be this stage's."""

    cache_path: str | None = None
    """Or: a cache folder built elsewhere (cached mode); refused unless its manifest matches."""

    teacher: str | None = None
    """The teacher as an earlier stage: required in online mode; in cached mode the cache must come from it."""

    teacher_model: str | None = None
    """Or: the teacher as a model folder on disk (same rules as `teacher`)."""

    loss: TopKDistillConfig = TopKDistillConfig()
    """The loss: `k` (32, at most the cache's K), `temperature` (1.0), `w_ce` (0.5), `w_kd` (0.5),
    `use_mass_weight` (true: L_T weighted by P_T), `use_tau_squared` (true: L_T times tau^2)."""

    stage_ref_fields = ("from_", "scorer", "cache", "teacher")
    data_file_fields = ("corpus", "eval_corpus", "architecture", "cache_path", "teacher_model")

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
    from transformers import AutoTokenizer

    from workbench.distill.corpus import load_corpus
    from workbench.distill.training import BlockCollator, BlockDataset, DistillTrainer, training_arguments
    from workbench.stages.pretrain import block_order, start_model, train_and_save

    config: DistillStageConfig = ctx.config
    tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_dir)
    train = load_corpus(ctx, config, config.corpus, tokenizer, "data/train")
    held_out = load_corpus(ctx, config, config.eval_corpus, tokenizer, "data/eval") if config.eval_corpus else None
    student = start_model(ctx, tokenizer)
    teacher_source = _teacher_source(ctx)
    cache = (
        _open_cache(ctx, train.digest, teacher_source, student.config.vocab_size)
        if config.cache or config.cache_path
        else None
    )
    teacher = _load_teacher(ctx, teacher_source, student.config.vocab_size) if config.teacher_mode == "online" else None
    order, sequential = block_order(ctx, train)
    trainer = DistillTrainer(
        model=student,
        args=training_arguments(config, ctx.checkpoint_dir, ctx.seed, sequential),
        train_dataset=BlockDataset(order),
        data_collator=BlockCollator(train.blocks, cache),
        processing_class=tokenizer,
        loss_config=config.loss,
        teacher=teacher,
    )
    return train_and_save(ctx, trainer, tokenizer, held_out)


def _teacher_source(ctx: StageContext) -> str | None:
    config: DistillStageConfig = ctx.config
    if config.teacher is not None:
        return str(ctx.inputs[config.teacher].model_dir)
    if config.teacher_model is not None:
        return str(ctx.resolve(config.teacher_model))
    return None


def _open_cache(ctx: StageContext, corpus_digest: str, teacher_source: str | None, student_vocab: int):
    """The cache, checked before any training: same tokenizer, same blocks, K >= k, and the named teacher."""
    from workbench.distill.topk_cache import open_topk_cache
    from workbench.errors import StageError
    from workbench.modeling.tokenizer import tokenizer_fingerprint
    from workbench.stages.teacher_cache import teacher_hash

    config: DistillStageConfig = ctx.config
    folder = ctx.inputs[config.cache].dir / "cache" if config.cache else ctx.resolve(config.cache_path)
    expected = {
        "tokenizer_hash": tokenizer_fingerprint(ctx.tokenizer_dir),
        "corpus_digest": corpus_digest,
        "seq_len": config.seq_len,
    }
    if teacher_source is not None:
        expected["teacher_hash"] = teacher_hash(teacher_source)
    try:
        cache = open_topk_cache(folder, expected, config.loss.k)
    except StageError as error:
        raise StageError(f"stage '{config.name}': {error}") from None
    if cache.manifest["vocab_size"] > student_vocab:
        raise StageError(
            f"stage '{config.name}': the cache's teacher has {cache.manifest['vocab_size']} vocabulary rows, "
            f"the student only {student_vocab}"
        )
    ctx.console.print(
        f"  teacher cache: top-{cache.k} of {cache.manifest['tokens']:,} positions, using k={config.loss.k}"
    )
    return cache


def _load_teacher(ctx: StageContext, source: str, student_vocab: int):

    from workbench.errors import StageError
    from workbench.stages.teacher_cache import check_teacher_tokenizer

    check_teacher_tokenizer(ctx, source)
    teacher = ctx.load_model(source)
    if teacher.config.vocab_size > student_vocab:
        raise StageError(
            f"stage '{ctx.config.name}': the teacher has {teacher.config.vocab_size} vocabulary rows, "
            f"the student only {student_vocab}"
        )
    return teacher


register(
    StageKind(
        name="distill",
        config=DistillStageConfig,
        run=run,
        summary="decoupled Top-K distillation from a cached (or online) teacher",
    )
)
