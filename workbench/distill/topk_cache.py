"""The teacher top-K cache: per position, the teacher's K most likely next tokens and their log-probs.

Layout of a cache folder::

    build.json                    what is being built (written first; a different build wipes the folder)
    shard-00000.ids.npy           [blocks, seq_len, K] token ids, uint16 when the vocabulary fits, else uint32
    shard-00000.logprobs.npy      [blocks, seq_len, K] float16 log-probs from a full-vocabulary log-softmax (T=1)
    ...
    manifest.json                 written last: the cache is complete only when it exists

Row ``[b, t]`` is the teacher's prediction after reading tokens ``0..t`` of block ``b``, i.e. its distribution
over token ``t + 1``; ids are sorted by decreasing log-prob. Each shard is written to temporary files and renamed
into place (log-probs first, ids last; ``fsio.atomic_path``), so a killed build leaves only whole shards behind and
resumes after them. Shards are plain ``.npy`` files, opened as read-only memory maps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.ranks import wait_until
from workbench.errors import StageError
from workbench.fsio import atomic_path, write_json_atomic

CACHE_FORMAT = "workbench-topk-cache/1"
MANIFEST, BUILD = "manifest.json", "build.json"
LOGPROBS_DTYPE = "float16"


@dataclass(frozen=True)
class CacheIdentity:
    """Everything that decides a cache's content; a cache is used only where all of it matches."""

    teacher: str
    """How the recipe named the teacher (a stage or a path): for humans."""
    teacher_hash: str
    """sha256 of the teacher's model folder (weights, config, tokenizer)."""
    tokenizer_hash: str
    """Fingerprint of the tokenizer (`workbench.modeling.tokenizer.tokenizer_fingerprint`)."""
    corpus_digest: str
    """sha256 of the packed token blocks the teacher read."""
    k: int
    seq_len: int
    blocks: int
    vocab_size: int
    shard_blocks: int

    @property
    def ids_dtype(self) -> str:
        return "uint16" if self.vocab_size <= 1 << 16 else "uint32"

    @property
    def shards(self) -> int:
        return -(-self.blocks // self.shard_blocks)

    def shard_rows(self, shard: int) -> range:
        return range(shard * self.shard_blocks, min((shard + 1) * self.shard_blocks, self.blocks))


def teacher_topk(teacher, input_ids, k: int):
    """(ids, log-probs) of the teacher's top-k next tokens at every position, from a float32 full-vocabulary
    log-softmax at temperature 1 (so the top-K mass P_T is recoverable). Shapes `[B, S, k]`."""
    import torch

    with torch.no_grad():
        logprobs = torch.log_softmax(teacher(input_ids=input_ids).logits.float(), dim=-1)
        values, ids = logprobs.topk(k, dim=-1, sorted=True)
    return ids, values


def build_topk_cache(
    teacher,
    blocks: np.ndarray,
    folder: Path,
    identity: CacheIdentity,
    batch_size: int = 8,
    after_shard: Callable[[int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[dict[str, Any] | None, int]:
    """Build (or finish) the cache in `folder`; returns its manifest and how many shards were already there.

    Distributed (`world_size` > 1, every rank calling with its `rank`), each rank writes every world_size-th shard;
    rank 0 alone clears another build's shards and writes the manifest, once every shard is complete (the other
    ranks return None for it). Shards are files of their own, written atomically, so no rank waits for another
    while writing, and a resumed build keeps every complete shard whichever rank wrote it."""
    import torch

    if identity.blocks != len(blocks) or identity.seq_len != blocks.shape[1]:
        raise ValueError(f"identity says {identity.blocks}x{identity.seq_len} blocks, got {blocks.shape}")
    planned = asdict(identity) | {"format": CACHE_FORMAT}
    build_file = folder / BUILD
    if (folder / MANIFEST).is_file() and _read_json(build_file) == planned:
        return json.loads((folder / MANIFEST).read_text()), identity.shards
    if rank == 0:
        if build_file.is_file() and _read_json(build_file) != planned:
            shutil.rmtree(folder)  # shards of another build: their content is not ours
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(build_file, planned)
    else:
        wait_until(lambda: _read_json(build_file) == planned, "rank 0 to start the cache build")
    teacher.eval()
    reused = 0
    for shard in range(rank, identity.shards, world_size):
        rows = identity.shard_rows(shard)
        if _shard_complete(folder, shard, identity, len(rows)):
            reused += 1
            continue
        shape = (len(rows), identity.seq_len, identity.k)
        ids_path, lp_path = _shard_paths(folder, shard)
        # The blocks end inner first: log-probs are renamed into place before ids, and a shard counts as written
        # only once its ids file exists. An error removes both temporary files.
        with atomic_path(ids_path) as ids_tmp, atomic_path(lp_path) as lp_tmp:
            ids_out = np.lib.format.open_memmap(ids_tmp, mode="w+", dtype=identity.ids_dtype, shape=shape)
            lp_out = np.lib.format.open_memmap(lp_tmp, mode="w+", dtype=LOGPROBS_DTYPE, shape=shape)
            for start in range(0, len(rows), batch_size):
                stop = min(start + batch_size, len(rows))
                chunk = np.asarray(blocks[rows.start + start : rows.start + stop], dtype=np.int64)
                ids, values = teacher_topk(teacher, torch.from_numpy(chunk).to(teacher.device), identity.k)
                ids_out[start:stop] = ids.cpu().numpy().astype(identity.ids_dtype)
                lp_out[start:stop] = values.cpu().numpy().astype(LOGPROBS_DTYPE)
            ids_out.flush()
            lp_out.flush()
            del ids_out, lp_out
        if after_shard is not None:
            after_shard(shard)
    if rank != 0:
        return None, reused
    if world_size > 1:
        wait_until(
            lambda: all(
                _shard_complete(folder, s, identity, len(identity.shard_rows(s))) for s in range(identity.shards)
            ),
            "every rank's shards",
        )
    manifest = planned | {
        "ids_dtype": identity.ids_dtype,
        "logprobs_dtype": LOGPROBS_DTYPE,
        "temperature": 1.0,
        "tokens": identity.blocks * identity.seq_len,
        "shards": identity.shards,
        "bytes_per_token": identity.k * (np.dtype(identity.ids_dtype).itemsize + np.dtype(LOGPROBS_DTYPE).itemsize),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest, reused


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _shard_paths(folder: Path, shard: int) -> tuple[Path, Path]:
    return folder / f"shard-{shard:05d}.ids.npy", folder / f"shard-{shard:05d}.logprobs.npy"


def _shard_complete(folder: Path, shard: int, identity: CacheIdentity, rows: int) -> bool:
    expected = (rows, identity.seq_len, identity.k)
    for path, dtype in zip(_shard_paths(folder, shard), (identity.ids_dtype, LOGPROBS_DTYPE), strict=True):
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        if array.shape != expected or array.dtype != np.dtype(dtype):
            return False
    return True


class TopKCache:
    """A complete cache, memory-mapped: `rows(block_indices)` gives the teacher targets of those blocks."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.shard_blocks = manifest["shard_blocks"]
        self.ids, self.logprobs = [], []
        for shard in range(manifest["shards"]):
            ids_path, lp_path = _shard_paths(folder, shard)
            self.ids.append(np.load(ids_path, mmap_mode="r"))
            self.logprobs.append(np.load(lp_path, mmap_mode="r"))

    @property
    def k(self) -> int:
        return self.manifest["k"]

    def rows(self, block_indices) -> tuple[np.ndarray, np.ndarray]:
        """`[n, seq_len, K]` ids and log-probs of the given blocks, in their stored dtypes."""
        picked = [divmod(int(b), self.shard_blocks) for b in block_indices]
        return (
            np.stack([self.ids[s][r] for s, r in picked]),
            np.stack([self.logprobs[s][r] for s, r in picked]),
        )


def open_topk_cache(folder: Path, expected: dict[str, Any], min_k: int) -> TopKCache:
    """Open a complete cache whose manifest matches `expected` (CacheIdentity fields) and holds >= `min_k` tokens
    a position; anything else is a StageError that gives every reason."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if not folder.is_dir():
            raise StageError(f"teacher cache {folder}: not found")
        written = len(list(folder.glob("shard-*.ids.npy")))
        raise StageError(
            f"teacher cache {folder}: incomplete ({written} shards written, no {MANIFEST}); a partial cache is "
            "never used: run the stage that builds it again, it resumes after the last whole shard"
        )
    manifest = json.loads(manifest_path.read_text())
    reasons = []
    if manifest.get("format") != CACHE_FORMAT:
        reasons.append(f"format {manifest.get('format')!r} is not {CACHE_FORMAT!r}")
    names = {"tokenizer_hash": "tokenizer", "teacher_hash": "teacher", "corpus_digest": "corpus blocks"}
    for key, value in expected.items():
        if manifest.get(key) != value:
            what = names.get(key, key)
            reasons.append(f"{what} differs (cache: {_short(manifest.get(key))}, expected: {_short(value)})")
    if manifest.get("k", 0) < min_k:
        reasons.append(f"the cache stores K={manifest.get('k')} tokens a position, k={min_k} was asked for")
    if reasons:
        raise StageError(f"teacher cache {folder} refused: " + "; ".join(reasons))
    try:
        cache = TopKCache(folder, manifest)
    except (OSError, ValueError) as error:
        raise StageError(f"teacher cache {folder}: a shard is unreadable ({error})") from None
    stored = sum(len(a) for a in cache.ids)
    if stored != manifest["blocks"]:
        raise StageError(f"teacher cache {folder}: shards hold {stored} blocks, the manifest says {manifest['blocks']}")
    return cache


def _short(value: Any) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else repr(value)
