"""The compressed form of the teacher top-K cache: about 80 bytes a position at K = 32 over a 65,536-token
vocabulary, where the exact form (uint16 ids + float16 log-probs) takes 128, for a KD loss within 1e-3 of the
exact form's (`bench/distill_cache_size.py` measures both).

A position's K (id, log-prob) pairs are stored in increasing id order. The loss needs ids and log-probs aligned,
not ranked, and giving up the rank order is what makes the ids cheap: a set of 32 ids out of 65,536 holds 394
bits, 32 uint16 ids in rank order take 512 (the other 118 bits are the order, log2 32!).

* Ids: the gaps between consecutive sorted ids (the first one counted from -1, all minus one), Golomb-coded
  with one parameter m per block, the one that makes the block smallest (about 12.4 bits an id for 32 ids
  spread uniformly over 65,536, fewer when the teacher's candidates bunch). The codes' three parts go to three
  bit streams (unary quotients, fixed-width remainder prefixes, the last remainder bit of those that have one),
  so that a block decodes in a handful of vectorised numpy operations rather than a bit-by-bit loop.
* Log-probs: a 7-bit code each, the gap below the position's largest log-prob in 1/16-nat steps (clipped at
  127, 7.9 nats: such a token has < 0.04% of the top-1's probability), and one float16 base a position:
  log-prob = base - code / 16. The base is not the top-1's log-prob but the one that gives the decoded
  log-probs the teacher's top-K mass P_T: rounding every gap on its own biases P_T (Jensen: the mean of e^x
  is not e^ of the mean), L_B depends on the teacher only through P_T, and a shift of all K log-probs leaves
  the within-T shape that L_T compares unchanged.

A block's id record is [m: uint32, little-endian][prefixes][last bits][quotients]; each stream is padded to a
whole byte.
"""

from __future__ import annotations

import numpy as np

CODE_BITS = 7
STEP = 1 / 16
MAX_GOLOMB = 1 << 24  # keeps remainder prefixes within `unpack_bits`' 25 bits; larger gaps go to the quotient
HEADER = 4


def code_bytes(k: int, bits: int = CODE_BITS) -> int:
    """Bytes of one position's log-prob codes."""
    return -(-k * bits // 8)


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Each value along the last axis as `width` bits, most significant first; each row padded to whole bytes."""
    shifts = np.arange(width - 1, -1, -1)
    bits = ((values[..., None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(*values.shape[:-1], -1), axis=-1)


def unpack_bits(data: np.ndarray, width: int, count: int) -> np.ndarray:
    """The first `count` `width`-bit values (width <= 25) of each row of `data` (uint8, rows along the last axis),
    as `pack_bits` wrote them: every value is read from the 2-4 bytes that hold it, all values at once."""
    if width == 0:
        return np.zeros((*data.shape[:-1], count), np.int64)
    start = np.arange(count) * width
    first = start >> 3
    span = (width + 7 + 7) // 8  # bytes that can hold `width` bits starting anywhere inside a byte
    padded = np.concatenate([data, np.zeros((*data.shape[:-1], span), np.uint8)], axis=-1)
    word = padded[..., first].astype(np.uint32)
    for byte in range(1, span):
        word = (word << 8) | padded[..., first + byte]
    return ((word >> (8 * span - width - (start & 7)).astype(np.uint32)) & ((1 << width) - 1)).astype(np.int64)


def _golomb_shape(m: int) -> tuple[int, int]:
    """(b, u) of a Golomb code with parameter m: remainders below u take b - 1 bits, the others b."""
    b = (m - 1).bit_length()
    return b, (1 << b) - m


def golomb_bits(gaps: np.ndarray, m: int) -> int:
    """Bits that `golomb_encode(gaps, m)` writes, without padding and header."""
    b, u = _golomb_shape(m)
    bits = len(gaps) + int((gaps // m).sum())
    if b:
        bits += len(gaps) * (b - 1) + int(np.count_nonzero(gaps % m >= u))
    return bits


def best_golomb(gaps: np.ndarray) -> int:
    """The parameter that codes `gaps` in the fewest bits, among values around 0.69x their mean (the optimum
    for geometrically distributed gaps) and the powers of two (Rice codes)."""
    mean = max(float(gaps.mean()), 1.0)
    around = np.rint(0.69 * mean * 2 ** (np.arange(-8, 9) / 8))
    candidates = np.unique(np.clip(np.concatenate([around, 2 ** np.arange(25)]), 1, MAX_GOLOMB)).astype(int)
    return min(candidates.tolist(), key=lambda m: golomb_bits(gaps, m))


def golomb_encode(gaps: np.ndarray) -> np.ndarray:
    """One block's gaps (non-negative ints) as an id record (uint8)."""
    m = best_golomb(gaps)
    b, u = _golomb_shape(m)
    quotient, remainder = np.divmod(gaps, m)
    parts = [np.array([m], "<u4").view(np.uint8)]
    if b:
        short = remainder < u
        parts.append(pack_bits(np.where(short, remainder, (remainder + u) >> 1), b - 1))
        parts.append(np.packbits(((remainder + u) & 1)[~short].astype(np.uint8)))
    unary = np.ones(len(gaps) + int(quotient.sum()), np.uint8)  # a quotient q: q ones, then a zero
    unary[np.cumsum(quotient + 1) - 1] = 0
    parts.append(np.packbits(unary))
    return np.concatenate(parts)


def golomb_decode(record: np.ndarray, count: int) -> np.ndarray:
    """The `count` gaps of an id record written by `golomb_encode`."""
    m = int(np.asarray(record[:HEADER]).view("<u4")[0])
    b, u = _golomb_shape(m)
    at = HEADER
    remainder = np.zeros(count, np.int64)
    if b:
        size = -(-count * (b - 1) // 8)
        prefix = unpack_bits(record[at : at + size], b - 1, count)
        at += size
        long = prefix >= u
        seen = np.cumsum(long)  # a long remainder's last bit is the seen[i]-th of the last-bit stream
        size = -(-int(seen[-1]) // 8)
        last = np.append(np.unpackbits(record[at : at + size], count=int(seen[-1])), 0)  # index 0 even if none
        at += size
        remainder = np.where(long, ((prefix << 1) | last[np.maximum(seen - 1, 0)]) - u, prefix)
    ends = np.flatnonzero(np.unpackbits(record[at:]) == 0)[:count]
    if len(ends) < count:
        raise ValueError(f"id record holds {len(ends)} gaps, {count} expected")
    return (np.diff(ends, prepend=-1) - 1) * m + remainder


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[..., 0]


def encode(ids: np.ndarray, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """`[n, S, K]` ids and log-probs (float32, any order within a position) of n blocks -> the float16 bases
    `[n, S]`, the packed log-prob codes `[n, S, code_bytes(K)]` (uint8) and one id record per block."""
    order = np.argsort(ids, axis=-1, kind="stable")
    ids = np.take_along_axis(ids.astype(np.int64), order, axis=-1)
    logprobs = np.take_along_axis(logprobs.astype(np.float64), order, axis=-1)
    top = logprobs.max(axis=-1, keepdims=True)
    codes = np.clip(np.nan_to_num(np.rint((top - logprobs) / STEP)), 0, 2**CODE_BITS - 1).astype(np.int64)
    base = _logsumexp(logprobs) - _logsumexp(-codes * STEP)  # decoded mass = the teacher's P_T
    gaps = np.diff(ids, axis=-1, prepend=-1) - 1
    records = [golomb_encode(block.ravel()) for block in gaps]
    return base.astype(np.float16), pack_bits(codes, CODE_BITS), records


def decode(
    base: np.ndarray, codes: np.ndarray, records: list[np.ndarray], k: int, step: float = STEP, bits: int = CODE_BITS
) -> tuple[np.ndarray, np.ndarray]:
    """`[n, S, K]` ids (uint32) and float16 log-probs of n blocks, ids sorted by decreasing log-prob (ties by id),
    as the exact form stores them."""
    n, seq_len = base.shape
    gaps = np.stack([golomb_decode(record, seq_len * k) for record in records]).reshape(n, seq_len, k)
    ids = np.cumsum(gaps + 1, axis=-1) - 1
    # Sorting (code, id) pairs packed into one integer is several times faster than an argsort and two gathers.
    id_bits = 32 - bits if int(ids.max(initial=0)) < 1 << (32 - bits) else 64 - bits
    key_type = np.uint32 if id_bits + bits == 32 else np.uint64
    keys = np.sort((unpack_bits(codes, bits, k).astype(key_type) << key_type(id_bits)) | ids.astype(key_type), axis=-1)
    code = (keys >> key_type(id_bits)).astype(np.float32)
    logprobs = (base[..., None].astype(np.float32) - code * np.float32(step)).astype(np.float16)
    return (keys & key_type((1 << id_bits) - 1)).astype(np.uint32), logprobs
