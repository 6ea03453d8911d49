"""`teacher_cache`: run a teacher once over a tokenized corpus and store its top-K next-token distribution.

The output folder holds `cache/` (sharded memory-mapped `.npy` files and `manifest.json`, see
`workbench.distill.topk_cache`) instead of a model. A killed build resumes after its last whole shard.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.api import ModelSource, RecipeView, StageConfig, StageContext, StageKind, StageResult
from workbench.distill.fields import CorpusFields
from workbench.errors import StageError


class TeacherCacheStageConfig(StageConfig, ModelSource, CorpusFields):
    """Cache a teacher's top-K log-probs for every position of a corpus (the corpus fields must match the
    `distill` stage that reads the cache; it checks)."""

    kind: Literal["teacher_cache"]
    """Stage kind."""

    k: int = Field(default=32, ge=1)
    """Teacher tokens stored per position. LFM2 used 32; a distill stage may use any k up to this."""

    shard_blocks: int = Field(default=64, ge=1)
    """Blocks per shard file; a killed build loses at most one shard of work."""

    format: Literal["exact", "compressed"] = "compressed"
    """How the cache stores a position's K tokens. `compressed`: ids sorted and Golomb-coded, log-probs rounded to
    1/16 nat below the position's top one (`workbench.distill.topk_codec`), decoded block by block as `distill`
    reads a batch; 79.8 bytes a position at K = 32 over 65,536 uniformly spread ids (fewer when the teacher's
    candidates bunch), a KD loss 1.3e-4 (relative) from the exact form's (`bench/distill_cache_size.py`).
    `exact`: uint16 ids (uint32 past 65,536 tokens) and float16 log-probs, 128 bytes a position at K = 32, read
    without decoding (`bench/distill_throughput.py` compares the distill tokens/s of both)."""

    batch_size: int = Field(default=8, ge=1)
    """Blocks per teacher forward pass (does not change the cache)."""

    unhashed_fields = StageConfig.unhashed_fields | {"batch_size"}

    def check_recipe(self, recipe: RecipeView) -> None:
        vocab = recipe.trained_vocab_size()
        if vocab is not None and self.k > vocab:
            recipe.problem(("k",), f"k {self.k} is more than the recipe's tokenizer has (vocab_size: {vocab})")

    def hash_excluded(self) -> set[str]:
        """`format: exact` hashes as the stage did before it had the field (it wrote exact caches then), so those
        caches stay valid; `compressed` is part of the hash."""
        return super().hash_excluded() | ({"format"} if self.format == "exact" else set())


def run(ctx: StageContext) -> StageResult:
    import os

    import torch

    from workbench.data.ranks import gather_on_main
    from workbench.distill.corpus import load_corpus
    from workbench.distill.teacher import check_teacher_tokenizer, teacher_hash
    from workbench.distill.topk_cache import CacheIdentity, build_topk_cache
    from workbench.modeling.tokenizer import pinned_fingerprint

    config: TeacherCacheStageConfig = ctx.config
    tokenizer = ctx.tokenizer()
    source = ctx.input_model()
    check_teacher_tokenizer(ctx, source)
    teacher = ctx.load_model(source)
    if config.k > teacher.config.vocab_size:
        raise StageError(f"k {config.k} is more than the teacher's vocabulary ({teacher.config.vocab_size} tokens)")
    if torch.cuda.is_available():
        teacher.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    corpus = load_corpus(ctx, config, config.corpus, tokenizer, "data/corpus")
    identity = CacheIdentity(
        teacher=config.from_ or config.model,
        teacher_hash=teacher_hash(source),
        tokenizer_hash=pinned_fingerprint(ctx),
        corpus_digest=corpus.digest,
        k=config.k,
        seq_len=config.seq_len,
        blocks=len(corpus.blocks),
        vocab_size=teacher.config.vocab_size,
        shard_blocks=config.shard_blocks,
        form=config.format,
    )
    folder = ctx.tmp_dir / "cache"
    manifest, reused = build_topk_cache(
        teacher, corpus.blocks, folder, identity, config.batch_size, rank=ctx.rank, world_size=ctx.world_size
    )
    counts = gather_on_main(ctx, "reused", reused)
    if counts is None:
        return StageResult()  # rank 0 wrote the manifest once every rank's shards were complete
    reused = sum(counts)
    if reused:
        ctx.console.print(f"  resumed: {reused} of {manifest['shards']} shards were already written")
    size = sum(p.stat().st_size for p in folder.glob("shard-*.npy"))
    ctx.console.print(
        f"  cached top-{config.k} of {manifest['tokens']:,} positions in {manifest['shards']} shards, "
        f"{config.format} ({size / manifest['tokens']:.1f} bytes per position)"
    )
    ctx.tracker.log_dict(manifest, "cache_manifest.json")
    metrics = {
        "cache/tokens": float(manifest["tokens"]),
        "cache/bytes": float(size),
        "cache/shards_reused": float(reused),
    }
    return StageResult(metrics=metrics, details={"cache": "cache", "bytes_per_token": manifest["bytes_per_token"]})


KIND = StageKind(
    name="teacher_cache",
    config=TeacherCacheStageConfig,
    run=run,
    makes_model=False,
    distributed=True,
    same_on_any_world_size=True,
    summary="a teacher's top-K next-token log-probs over a corpus, sharded and memory-mapped",
)
