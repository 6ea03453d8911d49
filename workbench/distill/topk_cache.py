"""The teacher top-K cache: per position, the teacher's K most likely next tokens and their log-probs.

Layout of a cache folder::

    build.json                    what is being built (written first; a different build wipes the folder)
    shard-00000.<part>.npy        the shard's arrays, one file each (below)
    ...
    manifest.json                 written last: the cache is complete only when it exists

Two forms (`CacheIdentity.form`, recorded in build.json and the manifest, so that a cache is read only in the form
it was written in). `exact`: per shard `logprobs.npy` ([blocks, seq_len, K] float16, from a full-vocabulary
log-softmax at T=1) and `ids.npy` ([blocks, seq_len, K], uint16 when the vocabulary fits, else uint32), 128 bytes a
position at K = 32. `compressed` (`workbench.distill.topk_codec`): `lpbase.npy` ([blocks, seq_len] float16),
`lpcodes.npy` ([blocks, seq_len, 28] uint8 at K = 32), `idindex.npy` ([blocks + 1] int64: where each block's id
record starts) and `ids.npy` (the blocks' id records, uint8), about 80 bytes a position at K = 32 over 65,536
tokens; its log-probs are rounded to 1/16 nat.

Row ``[b, t]`` is the teacher's prediction after reading tokens ``0..t`` of block ``b``, i.e. its distribution
over token ``t + 1``; `TopKCache.rows` gives ids sorted by decreasing log-prob in either form. Each shard's files
are written to temporary files and renamed into place, `ids.npy` last (``fsio.atomic_path``), so a killed build
leaves only whole shards behind and resumes after them. Shards are plain ``.npy`` files, opened as read-only
memory maps: a batch reads only its own blocks.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.data.ranks import wait_until
from workbench.distill import topk_codec
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
    form: str = "exact"
    """`exact` or `compressed` (a key of `FORMS`)."""

    @property
    def ids_dtype(self) -> str:
        return "uint16" if self.vocab_size <= 1 << 16 else "uint32"

    @property
    def shards(self) -> int:
        return -(-self.blocks // self.shard_blocks)

    def shard_rows(self, shard: int) -> range:
        return range(shard * self.shard_blocks, min((shard + 1) * self.shard_blocks, self.blocks))


Batches = Iterator[tuple[int, np.ndarray, np.ndarray]]
"""(first block, ids, log-probs) of consecutive chunks of a shard's blocks: int64 ids and float32 log-probs
`[blocks, seq_len, K]`, sorted by decreasing log-prob."""


class ExactShard:
    """The exact form: the teacher's ids and float16 log-probs as they are."""

    parts: ClassVar[tuple[str, ...]] = ("ids", "logprobs")
    """The shard's files; the first is renamed into place last, so its presence marks a whole shard."""

    def __init__(self, files: dict[str, Path]):
        self.ids = np.load(files["ids"], mmap_mode="r")
        self.logprobs = np.load(files["logprobs"], mmap_mode="r")

    def __len__(self) -> int:
        return len(self.ids)

    def block(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[row], self.logprobs[row]

    @staticmethod
    def join(blocks: list[tuple], manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([ids for ids, _ in blocks]), np.stack([logprobs for _, logprobs in blocks])

    @staticmethod
    def write(files: dict[str, Path], identity: CacheIdentity, count: int, batches: Batches) -> None:
        shape = (count, identity.seq_len, identity.k)
        ids_out = np.lib.format.open_memmap(files["ids"], mode="w+", dtype=identity.ids_dtype, shape=shape)
        lp_out = np.lib.format.open_memmap(files["logprobs"], mode="w+", dtype=LOGPROBS_DTYPE, shape=shape)
        for start, ids, logprobs in batches:
            ids_out[start : start + len(ids)] = ids.astype(identity.ids_dtype)
            lp_out[start : start + len(ids)] = logprobs.astype(LOGPROBS_DTYPE)
        ids_out.flush()
        lp_out.flush()

    @staticmethod
    def complete(files: dict[str, Path], identity: CacheIdentity, count: int) -> bool:
        expected = (count, identity.seq_len, identity.k)
        return _is_array(files["ids"], expected, identity.ids_dtype) and _is_array(
            files["logprobs"], expected, LOGPROBS_DTYPE
        )

    @staticmethod
    def manifest_fields(identity: CacheIdentity) -> dict[str, Any]:
        return {"ids_dtype": identity.ids_dtype, "logprobs_dtype": LOGPROBS_DTYPE}


class CompressedShard:
    """The compressed form (`workbench.distill.topk_codec`): decoded, block by block, when a batch reads it."""

    parts: ClassVar[tuple[str, ...]] = ("ids", "idindex", "lpbase", "lpcodes")

    def __init__(self, files: dict[str, Path]):
        self.ids = np.load(files["ids"], mmap_mode="r")
        self.index = np.load(files["idindex"])
        self.base = np.load(files["lpbase"], mmap_mode="r")
        self.codes = np.load(files["lpcodes"], mmap_mode="r")

    def __len__(self) -> int:
        return len(self.base)

    def block(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.base[row], self.codes[row], self.ids[self.index[row] : self.index[row + 1]]

    @staticmethod
    def join(blocks: list[tuple], manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        ids, logprobs = topk_codec.decode(
            np.stack([base for base, _, _ in blocks]),
            np.stack([codes for _, codes, _ in blocks]),
            [record for _, _, record in blocks],
            manifest["k"],
            manifest["logprob_step"],
            manifest["logprob_code_bits"],
        )
        return ids.astype(manifest["ids_dtype"]), logprobs

    @staticmethod
    def write(files: dict[str, Path], identity: CacheIdentity, count: int, batches: Batches) -> None:
        base = np.lib.format.open_memmap(
            files["lpbase"], mode="w+", dtype=LOGPROBS_DTYPE, shape=(count, identity.seq_len)
        )
        codes = np.lib.format.open_memmap(
            files["lpcodes"], mode="w+", dtype=np.uint8, shape=(count, identity.seq_len, _code_bytes(identity))
        )
        records = []
        for start, ids, logprobs in batches:
            chunk_base, chunk_codes, chunk_records = topk_codec.encode(ids, logprobs)
            base[start : start + len(ids)] = chunk_base
            codes[start : start + len(ids)] = chunk_codes
            records += chunk_records
        base.flush()
        codes.flush()
        _save(files["idindex"], np.cumsum([0] + [len(r) for r in records], dtype=np.int64))
        _save(files["ids"], np.concatenate(records))

    @staticmethod
    def complete(files: dict[str, Path], identity: CacheIdentity, count: int) -> bool:
        if not (
            _is_array(files["lpbase"], (count, identity.seq_len), LOGPROBS_DTYPE)
            and _is_array(files["lpcodes"], (count, identity.seq_len, _code_bytes(identity)), "uint8")
            and _is_array(files["idindex"], (count + 1,), "int64")
        ):
            return False
        return _is_array(files["ids"], (int(np.load(files["idindex"])[-1]),), "uint8")

    @staticmethod
    def manifest_fields(identity: CacheIdentity) -> dict[str, Any]:
        return {
            "ids_dtype": identity.ids_dtype,
            "logprobs_dtype": LOGPROBS_DTYPE,
            "logprob_step": topk_codec.STEP,
            "logprob_code_bits": topk_codec.CODE_BITS,
            "ids_code": "golomb, sorted ids, one parameter a block",
        }


FORMS: dict[str, type[ExactShard] | type[CompressedShard]] = {"exact": ExactShard, "compressed": CompressedShard}


def _code_bytes(identity: CacheIdentity) -> int:
    return topk_codec.code_bytes(identity.k)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save(path) would append ".npy" to a temporary name
        np.save(handle, array)


def _is_array(path: Path, shape: tuple[int, ...], dtype: str) -> bool:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.dtype(dtype)


def teacher_topk(teacher, input_ids, k: int):
    """(ids, log-probs) of the teacher's top-k next tokens at every position, from a float32 full-vocabulary
    log-softmax at temperature 1 (so the top-K mass P_T is recoverable). Shapes `[B, S, k]`."""
    import torch

    with torch.no_grad():
        logprobs = torch.log_softmax(teacher(input_ids=input_ids).logits.float(), dim=-1)
        values, ids = logprobs.topk(k, dim=-1, sorted=True)
    return ids, values


def _teacher_batches(teacher, blocks: np.ndarray, rows: range, k: int, batch_size: int) -> Batches:
    import torch

    for start in range(0, len(rows), batch_size):
        stop = min(start + batch_size, len(rows))
        chunk = np.asarray(blocks[rows.start + start : rows.start + stop], dtype=np.int64)
        ids, values = teacher_topk(teacher, torch.from_numpy(chunk).to(teacher.device), k)
        yield start, ids.cpu().numpy(), values.cpu().numpy()


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
    if identity.blocks != len(blocks) or identity.seq_len != blocks.shape[1]:
        raise ValueError(f"identity says {identity.blocks}x{identity.seq_len} blocks, got {blocks.shape}")
    form = FORMS[identity.form]
    planned = asdict(identity) | {"format": CACHE_FORMAT} | form.manifest_fields(identity)
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
        files = _shard_files(folder, shard, form)
        if form.complete(files, identity, len(rows)):
            reused += 1
            continue
        # The blocks end in reverse order: the first part (ids) is renamed into place last, and a shard counts as
        # written only once it exists. An error removes every temporary file.
        with ExitStack() as stack:
            temporary = {part: stack.enter_context(atomic_path(path)) for part, path in files.items()}
            form.write(temporary, identity, len(rows), _teacher_batches(teacher, blocks, rows, identity.k, batch_size))
        if after_shard is not None:
            after_shard(shard)
    if rank != 0:
        return None, reused
    if world_size > 1:
        wait_until(
            lambda: all(
                form.complete(_shard_files(folder, s, form), identity, len(identity.shard_rows(s)))
                for s in range(identity.shards)
            ),
            "every rank's shards",
        )
    manifest = planned | {
        "temperature": 1.0,
        "tokens": identity.blocks * identity.seq_len,
        "shards": identity.shards,
        "bytes_per_token": _stored_bytes(folder, identity.shards, form) / (identity.blocks * identity.seq_len),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest, reused


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _shard_files(folder: Path, shard: int, form: type[ExactShard] | type[CompressedShard]) -> dict[str, Path]:
    return {part: folder / f"shard-{shard:05d}.{part}.npy" for part in form.parts}


def _stored_bytes(folder: Path, shards: int, form: type[ExactShard] | type[CompressedShard]) -> int:
    """Bytes of the stored arrays (the `.npy` headers left out)."""
    files = (path for shard in range(shards) for path in _shard_files(folder, shard, form).values())
    return sum(np.load(path, mmap_mode="r").nbytes for path in files)


class TopKCache:
    """A complete cache, memory-mapped: `rows(block_indices)` gives the teacher targets of those blocks."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.shard_blocks = manifest["shard_blocks"]
        self.form = FORMS[manifest["form"]]
        self.shards = [self.form(_shard_files(folder, shard, self.form)) for shard in range(manifest["shards"])]

    @property
    def k(self) -> int:
        return self.manifest["k"]

    def rows(self, block_indices) -> tuple[np.ndarray, np.ndarray]:
        """`[n, seq_len, K]` ids (uint16 or uint32) and float16 log-probs of the given blocks, ids sorted by
        decreasing log-prob; the compressed form decodes just these blocks."""
        picked = [divmod(int(b), self.shard_blocks) for b in block_indices]
        return self.form.join([self.shards[s].block(r) for s, r in picked], self.manifest)


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
    manifest.setdefault("form", "exact")  # caches written before there were two forms
    reasons = []
    if manifest.get("format") != CACHE_FORMAT:
        reasons.append(f"format {manifest.get('format')!r} is not {CACHE_FORMAT!r}")
    if manifest["form"] not in FORMS:
        reasons.append(f"form {manifest['form']!r} is none of {', '.join(FORMS)}")
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
    stored = sum(len(shard) for shard in cache.shards)
    if stored != manifest["blocks"]:
        raise StageError(f"teacher cache {folder}: shards hold {stored} blocks, the manifest says {manifest['blocks']}")
    return cache


def _short(value: Any) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else repr(value)
