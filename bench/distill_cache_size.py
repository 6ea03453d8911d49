"""Teacher-cache size: bytes per token at K = 32 for a 65,536-token vocabulary, against full fp16 logits
(131,072 bytes per token) and DistillKit's published ~114-300 bytes per token, plus compressed forms and how
much each changes the KD loss. Goals: exact form <= 128 bytes per token; a compressed form <= 80 bytes per token
whose KD loss differs from the exact one by < 1e-3 relative.

The exact form is what `teacher_cache` writes (uint16 ids + float16 log-probs). The compressed forms keep the
top-1 log-prob (float16) and store every other log-prob as its gap below the top-1 in 1/16-nat steps, 8 or 7 bits
(gaps past 7.9 nats are clipped: such tokens carry < 0.04% of the top-1's probability). `rice ids` also drops the
fixed 16 bits per id: a position's ids are sorted and their gaps Rice-coded (k = 10), with the log-prob codes
stored in the same id order, since the loss needs ids and log-probs aligned, not ranked. Sizes are the stored
arrays' bytes (plus one uint32 offset per 256-position block for random access). Teacher distributions are
synthetic Zipf-like (exponent 1.2-2.0 per position, token order uniformly random, the worst case for Rice coding)
and the student is the teacher plus Gaussian logit noise; the difference is of the mean L_B + L_T against the
float32 top-K. The compressed forms are measured here only; the stage writes the exact form.

`--quick` checks that the bench still runs end to end in seconds: 64 positions in one chunk; the sizes are
the same kind of figure, the loss differences noisier, and neither is judged against the goals.

    .venv/bin/python bench/distill_cache_size.py [--positions 1024] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from workbench.losses.topk_distill import TopKDistillConfig, decoupled_topk_kd_loss

VOCAB, K = 65536, 32
FULL_FP16 = VOCAB * 2
DISTILLKIT = (114, 300)


def synthetic_logits(positions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, VOCAB + 1, dtype=torch.float32)
    exponents = 1.2 + 0.8 * torch.rand(positions, 1, generator=generator)
    sorted_logits = -exponents * ranks.log() + 0.3 * torch.randn(positions, VOCAB, generator=generator)
    order = torch.argsort(torch.rand(positions, VOCAB, generator=generator), dim=-1)
    teacher = torch.empty_like(sorted_logits).scatter_(-1, order, sorted_logits)
    student = teacher + torch.randn(positions, VOCAB, generator=generator)
    return teacher, student


def quantize_gaps(logprobs: np.ndarray, bits: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The top-1 log-prob (float16) and the K-1 others as gaps below it, in `step` units, clipped to `bits` bits."""
    top = logprobs[:, :1].astype(np.float16)
    gaps = np.clip(np.rint((top.astype(np.float32) - logprobs[:, 1:]) / step), 0, 2**bits - 1).astype(np.uint8)
    return top, gaps


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Each value as `bits` bits, all rows concatenated into one byte stream."""
    columns = (values[..., None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(columns.astype(np.uint8).ravel())


def unpack_bits(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    columns = np.unpackbits(packed)[: int(np.prod(shape)) * bits].reshape(*shape, bits)
    return (columns.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(-1)


def rice_encode(ids: np.ndarray, k: int) -> np.ndarray:
    """Each row's ids sorted ascending, as Rice-coded gaps (unary quotient, k-bit remainder), one bit stream."""
    ordered = np.sort(ids.astype(np.int64), axis=1)
    gaps = np.diff(ordered, axis=1, prepend=-1) - 1
    bits = []
    for gap in gaps.ravel().tolist():
        bits += [1] * (gap >> k) + [0] + [(gap >> b) & 1 for b in range(k - 1, -1, -1)]
    return np.packbits(np.array(bits, dtype=np.uint8))


def rice_decode(packed: np.ndarray, k: int, rows: int) -> np.ndarray:
    bits, position, gaps = np.unpackbits(packed).tolist(), 0, []
    for _ in range(rows * K):
        quotient = 0
        while bits[position]:
            quotient, position = quotient + 1, position + 1
        remainder = int("".join(map(str, bits[position + 1 : position + 1 + k])), 2)
        gaps.append((quotient << k) + remainder)
        position += 1 + k
    return np.cumsum(np.array(gaps).reshape(rows, K) + 1, axis=1) - 1


def fixed_width(ids, logprobs, bits: int, step: float):
    """uint16 ids in teacher order + float16 top-1 + packed `bits`-bit gaps."""
    top, gaps = quantize_gaps(logprobs, bits, step)
    stored = {"ids": ids.astype(np.uint16), "top": top, "gaps": pack_bits(gaps, bits)}
    restored = top.astype(np.float32) - unpack_bits(stored["gaps"], bits, gaps.shape) * step
    return stored, ids, np.concatenate([top.astype(np.float32), restored], axis=1)


def rice_ids(ids, logprobs, bits: int, step: float, k: int = 10):
    """Rice-coded sorted ids + float16 top-1 + `bits`-bit gaps stored in id order (no permutation needed: the
    loss only needs ids and log-probs aligned). One uint32 offset per 256-position block for random access."""
    order = np.argsort(ids, axis=1)
    top, gaps = quantize_gaps(logprobs, bits, step)
    values = np.concatenate([np.zeros((len(ids), 1), np.int64), gaps.astype(np.int64)], axis=1)
    sorted_gaps = np.take_along_axis(values, order, axis=1)
    stored = {
        "ids": rice_encode(ids, k),
        "top": top,
        "gaps": pack_bits(sorted_gaps, bits),
        "offsets": np.zeros(-(-len(ids) // 256), np.uint32),
    }
    restored_ids = rice_decode(stored["ids"], k, len(ids))
    assert np.array_equal(restored_ids, np.sort(ids, axis=1)), "Rice coding is lossless"
    restored = top.astype(np.float32) - unpack_bits(stored["gaps"], bits, sorted_gaps.shape) * step
    return stored, restored_ids, restored


def exact(ids, logprobs):
    stored = {"ids": ids.astype(np.uint16), "logprobs": logprobs.astype(np.float16)}
    return stored, stored["ids"], stored["logprobs"].astype(np.float32)


FORMS = {
    "exact uint16+fp16": exact,
    "q8 gaps (1/16 nat)": lambda i, lp: fixed_width(i, lp, 8, 1 / 16),
    "q7 gaps (1/16 nat)": lambda i, lp: fixed_width(i, lp, 7, 1 / 16),
    "rice ids + q7 gaps": lambda i, lp: rice_ids(i, lp, 7, 1 / 16),
}


def nbytes(stored: dict[str, np.ndarray]) -> int:
    return sum(array.nbytes for array in stored.values())


def kd_loss(student: torch.Tensor, ids: np.ndarray, logprobs: np.ndarray, labels: torch.Tensor) -> float:
    parts = decoupled_topk_kd_loss(
        student[None],
        torch.from_numpy(ids.astype(np.int64))[None],
        torch.from_numpy(logprobs.astype(np.float32))[None],
        labels[None],
        TopKDistillConfig(k=K),
    )
    return (parts.binary + parts.topk).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="few positions, seconds: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.positions = args.chunk = 64
    if args.positions < args.chunk or args.positions % args.chunk:
        parser.error("--positions must be a multiple of --chunk")
    sizes, losses, reference, masses = dict.fromkeys(FORMS, 0), dict.fromkeys(FORMS, 0.0), 0.0, []
    for chunk in range(args.positions // args.chunk):
        teacher, student = synthetic_logits(args.chunk, seed=chunk)
        logprobs, ids = torch.log_softmax(teacher, -1).topk(K, dim=-1)
        ids, logprobs = ids.numpy(), logprobs.numpy()
        labels = torch.randint(0, VOCAB, (args.chunk,), generator=torch.Generator().manual_seed(chunk))
        masses.append(np.exp(logprobs).sum(-1))
        reference += kd_loss(student, ids, logprobs, labels)
        for name, form in FORMS.items():
            stored, restored_ids, restored = form(ids, logprobs)
            sizes[name] += nbytes(stored)
            losses[name] += kd_loss(student, restored_ids, restored, labels)
    mass = np.concatenate(masses)
    print(f"{args.positions} positions, V={VOCAB}, K={K}; synthetic teacher top-K mass P_T mean {mass.mean():.3f}")
    print(f"full fp16 logits: {FULL_FP16} bytes/token; DistillKit: {DISTILLKIT[0]}-{DISTILLKIT[1]} bytes/token")
    print(
        f"{'form':<22}{'bytes/token':>12}{'fp16 logits / form':>20}{'DistillKit / form':>20}{'KD loss rel. diff':>20}"
    )
    for name in FORMS:
        size = sizes[name] / args.positions
        diff = abs(losses[name] - reference) / reference
        kit = f"{DISTILLKIT[0] / size:.2f}-{DISTILLKIT[1] / size:.2f}x"
        print(f"{name:<22}{size:>12.1f}{FULL_FP16 / size:>19.0f}x{kit:>20}{diff:>20.2e}")
    if args.quick:
        print(f"quick run ({args.positions} positions), goals not judged")
    else:
        print("goals: exact <= 128 bytes/token; compressed <= 80 bytes/token with KD loss rel. diff < 1e-3")


if __name__ == "__main__":
    main()
