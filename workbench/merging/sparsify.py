"""Memory-lean replacements for mergekit's magnitude pruning (`ties`, `breadcrumbs`, `breadcrumbs_ties`).

mergekit's `sparsify.magnitude` and `sparsify.magnitude_outliers` argsort the whole tensor: a float32 copy
plus int64 indices, 12+ bytes of scratch per element (about 1.3 GB for a 65,536 x 1,024 embedding). Which
elements survive depends only on where the cut falls in the order of magnitudes, so the replacements find the
cut values by radix selection over the magnitudes' bit patterns (non-negative IEEE floats order like their
bit patterns read as integers), in chunks, and build the same mask; scratch is the mask plus one chunk.

Results are bit-identical to mergekit's with one exception, counted in `LeanStats.index_order_ties`: when
elements of exactly equal magnitude straddle a cut and the tensor is larger than `EXACT_MAX_ELEMENTS`.
mergekit keeps whichever of them its unstable sort happens to put first (an order that depends on the whole
tensor and on the sort implementation); the lean path keeps the lowest indices (the order of a stable sort).
Tensors up to `EXACT_MAX_ELEMENTS` elements, and anything not a float16/bfloat16/float32 CPU tensor or
holding NaN, go to mergekit's own function unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# Up to this many elements mergekit's own sort runs (at most ~170 MB of scratch for bf16): exact in every case.
EXACT_MAX_ELEMENTS = 2**23
# Elements per chunk in the lean passes (a chunk's int64 keys are 8 bytes each: 32 MiB).
CHUNK = 2**22
_DIGIT = 16
_BITS = {torch.bfloat16: (torch.int16, 16), torch.float16: (torch.int16, 16), torch.float32: (torch.int32, 32)}


@dataclass
class LeanStats:
    """What the replacements did during one merge."""

    lean: int = 0
    """Tensors pruned by the lean path."""
    exact: int = 0
    """Tensors handed to mergekit's own function."""
    index_order_ties: int = 0
    """Lean tensors where equal magnitudes straddled a cut and were kept in index order."""


@contextmanager
def lean_magnitude_pruning() -> Iterator[LeanStats]:
    """Install the lean functions in `mergekit.sparsify` for the duration (its `sparsify` looks them up there)."""
    import mergekit.sparsify as module

    stats = LeanStats()
    original = module.magnitude, module.magnitude_outliers

    def magnitude(tensor, density, rescale_norm=None):
        return lean_magnitude(tensor, density, rescale_norm, stats=stats, fallback=original[0])

    def magnitude_outliers(tensor, density, rescale_norm=None, gamma=0.01):
        return lean_magnitude_outliers(tensor, density, rescale_norm, gamma, stats=stats, fallback=original[1])

    module.magnitude, module.magnitude_outliers = magnitude, magnitude_outliers
    try:
        yield stats
    finally:
        module.magnitude, module.magnitude_outliers = original


def lean_magnitude(tensor, density, rescale_norm=None, *, stats=None, fallback=None, exact_max=None):
    """`mergekit.sparsify.magnitude`: keep the `density` share of largest magnitudes (at least one element)."""
    from mergekit import sparsify

    fallback = fallback or sparsify.magnitude
    if density >= 1 or density <= 0 or not _lean_applies(tensor, exact_max):
        return _exact(fallback, stats, tensor, density, rescale_norm)
    flat = tensor.reshape(-1)
    keys = _magnitude_keys(flat)
    if _has_nan(keys, flat.dtype):
        return _exact(fallback, stats, tensor, density, rescale_norm)
    n = flat.numel()
    k = max(1, int(density * n))
    # Descending order keeps ranks [0, k): everything above the cut value, then `need` of the values equal to it.
    value, below, equal = _select(keys, n - k)
    need = k - (n - below - equal)
    mask = torch.zeros(n, dtype=tensor.dtype)
    _fill(mask, keys, lambda part: part > value)
    _keep_equal(mask, keys, value, 0, need)
    _count(stats, split=0 < need < equal)
    return sparsify.rescaled_masked_tensor(tensor, mask.reshape_as(tensor), rescale_norm)


def lean_magnitude_outliers(
    tensor, density, rescale_norm=None, gamma=0.01, *, stats=None, fallback=None, exact_max=None
):
    """`mergekit.sparsify.magnitude_outliers`: drop the `gamma` share of largest magnitudes and the smallest,
    keeping `density` (ranks [n_bot, n_bot + target) in ascending order)."""
    from mergekit import sparsify

    fallback = fallback or sparsify.magnitude_outliers
    if density >= 1 or not _lean_applies(tensor, exact_max):
        return _exact(fallback, stats, tensor, density, rescale_norm, gamma=gamma)
    flat = tensor.reshape(-1)
    keys = _magnitude_keys(flat)
    if _has_nan(keys, flat.dtype):
        return _exact(fallback, stats, tensor, density, rescale_norm, gamma=gamma)
    n = flat.numel()
    target = int(density * n)
    start = max(0, n - target - int(gamma * n))
    stop = min(n, start + target)  # mergekit's slice indices[start : start + target] stops at n too
    mask = torch.zeros(n, dtype=tensor.dtype)
    split = False
    if stop > start:
        low, low_below, low_equal = _select(keys, start)
        high, high_below, high_equal = _select(keys, stop - 1)
        if low == high:
            _keep_equal(mask, keys, low, start - low_below, stop - low_below)
            split = start > low_below or stop < low_below + low_equal
        else:
            _fill(mask, keys, lambda part: (part > low) & (part < high))
            _keep_equal(mask, keys, low, start - low_below, low_equal)
            _keep_equal(mask, keys, high, 0, stop - high_below)
            split = start > low_below or stop < high_below + high_equal
    _count(stats, split=split)
    return sparsify.rescaled_masked_tensor(tensor, mask.reshape_as(tensor), rescale_norm)


def _lean_applies(tensor: torch.Tensor, exact_max: int | None) -> bool:
    limit = EXACT_MAX_ELEMENTS if exact_max is None else exact_max
    return tensor.device.type == "cpu" and tensor.dtype in _BITS and tensor.numel() > limit


def _exact(fallback, stats, tensor, density, rescale_norm, **extra):
    if stats is not None:
        stats.exact += 1
    return fallback(tensor, density, rescale_norm=rescale_norm, **extra)


def _count(stats: LeanStats | None, split: bool) -> None:
    if stats is not None:
        stats.lean += 1
        stats.index_order_ties += split


def _magnitude_keys(flat: torch.Tensor) -> torch.Tensor:
    """The bit patterns of |x| as signed integers (sign bit cleared): ordered exactly like the magnitudes.
    A view plus one tensor of the element size; mergekit compares |x| in float32, which is exact for these dtypes."""
    int_type, width = _BITS[flat.dtype]
    return flat.contiguous().view(int_type) & ((1 << (width - 1)) - 1)


def _has_nan(keys: torch.Tensor, dtype: torch.dtype) -> bool:
    infinity = int(torch.tensor(float("inf"), dtype=dtype).view(keys.dtype))
    return any(bool((part > infinity).any()) for part in keys.split(CHUNK))


def _select(keys: torch.Tensor, rank: int) -> tuple[int, int, int]:
    """The key at 0-based ascending `rank`, with how many keys are smaller and how many equal it: radix
    selection on 16-bit digits, one chunked histogram pass per digit."""
    width = 8 * keys.element_size()
    prefix, remaining, below = 0, rank, 0
    counts = torch.zeros(0)
    for shift in range(width - _DIGIT, -1, -_DIGIT):
        counts = torch.zeros(2**_DIGIT, dtype=torch.int64)
        for part in keys.split(CHUNK):
            part = part.to(torch.int64)
            if shift + _DIGIT < width:
                part = part[(part >> (shift + _DIGIT)) == prefix]
            counts += torch.bincount((part >> shift) & (2**_DIGIT - 1), minlength=2**_DIGIT)
        cumulative = counts.cumsum(0)
        digit = int(torch.searchsorted(cumulative, remaining, right=True))
        smaller = int(cumulative[digit] - counts[digit])
        remaining -= smaller
        below += smaller
        prefix = (prefix << _DIGIT) | digit
    return prefix, below, int(counts[prefix & (2**_DIGIT - 1)])


def _fill(mask: torch.Tensor, keys: torch.Tensor, keep) -> None:
    for mask_part, part in zip(mask.split(CHUNK), keys.split(CHUNK), strict=True):
        mask_part.copy_(keep(part))


def _keep_equal(mask: torch.Tensor, keys: torch.Tensor, value: int, first: int, stop: int) -> None:
    """Set the mask for the elements whose key equals `value` and whose position among them, in index order,
    is in [first, stop)."""
    seen = 0
    for offset in range(0, keys.numel(), CHUNK):
        if seen >= stop:
            return
        where = (keys[offset : offset + CHUNK] == value).nonzero().flatten()
        chosen = where[max(0, first - seen) : max(0, stop - seen)]
        mask[offset + chosen] = 1
        seen += where.numel()
