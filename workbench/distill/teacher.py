"""The teacher side of distillation: where the teacher is, its identity, and the checks before any training."""

from __future__ import annotations

from pathlib import Path

from workbench.api.context import StageContext
from workbench.errors import StageError
from workbench.hashing import model_identity


def teacher_hash(source: str) -> str:
    """Content hash of a local teacher folder; a hub id hashes as its name."""
    return model_identity(source)


def check_teacher_tokenizer(ctx: StageContext, source: str) -> None:
    """A teacher folder that carries a tokenizer must carry the recipe's: its top-K ids are in that vocabulary."""
    from workbench.modeling.tokenizer import pinned_fingerprint, tokenizer_fingerprint

    path = Path(source)
    if (path / "tokenizer.json").is_file() and tokenizer_fingerprint(path) != pinned_fingerprint(ctx):
        raise StageError(
            f"stage '{ctx.config.name}': teacher '{source}' has a different tokenizer than the recipe pins; "
            "teacher and student must share one tokenizer"
        )


def teacher_source(ctx: StageContext, stage: str | None, folder: str | None) -> str | None:
    """The teacher's model folder: an earlier stage's, or a folder of the project; None when neither is named."""
    if stage is not None:
        return str(ctx.inputs[stage].model_dir)
    if folder is not None:
        return str(ctx.resolve(folder))
    return None


def load_teacher(ctx: StageContext, source: str, student_vocab: int):
    """The teacher model, refused when its tokenizer differs or its vocabulary is larger than the student's."""
    check_teacher_tokenizer(ctx, source)
    teacher = ctx.load_model(source)
    if teacher.config.vocab_size > student_vocab:
        raise StageError(
            f"stage '{ctx.config.name}': the teacher has {teacher.config.vocab_size} vocabulary rows, "
            f"the student only {student_vocab}"
        )
    return teacher


def open_cache(ctx: StageContext, folder: Path, corpus_digest: str, source: str | None, student_vocab: int):
    """The top-K cache, checked before any training: same tokenizer, same blocks, K >= k, and the named teacher."""
    from workbench.distill.topk_cache import open_topk_cache
    from workbench.modeling.tokenizer import pinned_fingerprint

    config = ctx.config
    expected = {
        "tokenizer_hash": pinned_fingerprint(ctx),
        "corpus_digest": corpus_digest,
        "seq_len": config.seq_len,
    }
    if source is not None:
        expected["teacher_hash"] = teacher_hash(source)
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
