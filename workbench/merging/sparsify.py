"""Memory-lean replacements for mergekit's magnitude pruning (`ties`, `breadcrumbs`, `breadcrumbs_ties`) and
DELLA's magnitude-ranked sampling (`della`, `della_linear`).

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

DELLA ranks magnitudes within each row and keeps each element with a probability that grows with its rank; its
scratch is two int64 argsorts and four float copies of the tensor (40+ bytes per element). The lean path does the
same per block of rows (a row is never split, so every rank is mergekit's), and matches the rescaling norm over the
whole tensor in a second pass. The keep probabilities are mergekit's exactly; the Bernoulli draws are made per
block, so for the same seed they differ from mergekit's single draw (the same distribution, other samples).
LFM2's depthwise convolution weights, (channels, 1, kernel), on which mergekit's own DELLA fails (it ranks along
the size-1 dimension), are ranked within each channel's kernel, whatever their size.
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
    original = module.magnitude, module.magnitude_outliers, module.della_magprune

    def magnitude(tensor, density, rescale_norm=None):
        return lean_magnitude(tensor, density, rescale_norm, stats=stats, fallback=original[0])

    def magnitude_outliers(tensor, density, rescale_norm=None, gamma=0.01):
        return lean_magnitude_outliers(tensor, density, rescale_norm, gamma, stats=stats, fallback=original[1])

    def della_magprune(tensor, density, epsilon, rescale_norm=None):
        return lean_della_magprune(tensor, density, epsilon, rescale_norm, stats=stats, fallback=original[2])

    module.magnitude, module.magnitude_outliers, module.della_magprune = magnitude, magnitude_outliers, della_magprune
    try:
        yield stats
    finally:
        module.magnitude, module.magnitude_outliers, module.della_magprune = original


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


def lean_della_magprune(
    tensor, density, epsilon, rescale_norm=None, *, stats=None, fallback=None, exact_max=None, rows_per_block=None
):
    """`mergekit.sparsify.della_magprune` a block of rows at a time (module docstring)."""
    from mergekit import sparsify

    fallback = fallback or sparsify.della_magprune
    # LFM2's depthwise conv weights are (channels, 1, kernel): mergekit ranks along the size-1 dimension, divides
    # 0 by 0 and fails in torch.bernoulli. Ranked within each channel's kernel instead, whatever their size.
    depthwise = tensor.dim() > 2 and tensor.shape[1] == 1 and tensor.device.type == "cpu" and tensor.dtype in _BITS
    small_or_other = tensor.dim() > 2 or not _lean_applies(tensor, exact_max)
    if density >= 1 or density <= 0 or (small_or_other and not depthwise):
        return _exact(fallback, stats, tensor, density, rescale_norm, epsilon=epsilon)
    if density + epsilon >= 1 or density - epsilon <= 0:  # mergekit's own check, before any work
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")
    work_dtype = torch.bfloat16 if tensor.dtype == torch.bfloat16 else torch.float32
    if depthwise:
        rows = tensor.reshape(tensor.shape[0], -1)
    else:
        rows = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
    out = torch.empty(rows.shape, dtype=work_dtype)
    step = rows_per_block or max(1, CHUNK // 4 // max(1, rows.shape[1]))
    before, after = _NormSums(rescale_norm), _NormSums(rescale_norm)
    for start in range(0, rows.shape[0], step):
        block = rows[start : start + step].to(work_dtype)
        # mergekit: ranks 1..n of |x| per row, normalised to [0, 1] (its min and max are 1 and n)
        ranks = block.abs().argsort(dim=1).argsort(dim=1).to(work_dtype) + 1
        low, high = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
        probs = (density - epsilon) + ((ranks - low) / (high - low)).clamp(0, 1) * 2 * epsilon
        del ranks
        masked = block * torch.bernoulli(probs).to(work_dtype)
        before.add(block)
        after.add(masked)
        out[start : start + step] = masked
    scale = _rescale(before.value(), after.value())
    if scale is not None:
        out.mul_(scale)
    _count(stats, split=False)
    return out.to(tensor.dtype).reshape(tensor.shape)


class _NormSums:
    """A norm of a tensor seen a block at a time (l1: sum of |x|, l2: sqrt of the sum of squares, linf: max)."""

    def __init__(self, norm):
        self.norm, self.total = norm, 0.0

    def add(self, block: torch.Tensor) -> None:
        if self.norm is None:
            return
        kind = getattr(self.norm, "value", self.norm)
        if kind == "l1":
            self.total += float(block.abs().sum(dtype=torch.float64))
        elif kind == "l2":
            self.total += float(block.to(torch.float64).square().sum())
        elif kind == "linf":
            self.total = max(self.total, float(block.abs().max()))
        else:
            raise NotImplementedError(self.norm)

    def value(self) -> float | None:
        if self.norm is None:
            return None
        return self.total**0.5 if getattr(self.norm, "value", self.norm) == "l2" else self.total


def _rescale(before: float | None, after: float | None, eps: float = 1e-7) -> float | None:
    """mergekit's `rescaled_masked_tensor` factor (None: leave the masked tensor as it is)."""
    if before is None or after is None or before < eps or after < eps:
        return None
    return before / after


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
