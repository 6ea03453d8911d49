"""Teacher-cache size: bytes per token of the two forms `teacher_cache` writes (`format: exact | compressed`) at
K = 32 for a 65,536-token vocabulary, against full fp16 logits (131,072 bytes per token) and DistillKit's
published ~114-300 bytes per token, and how much each form changes the KD loss. Goals: exact <= 128 bytes per
token; compressed <= 80 bytes per token with a KD loss within 1e-3 (relative) of the exact form's.
`bench/distill_throughput.py` measures the distill stage's tokens/s reading each form.

Both caches are written by `build_topk_cache` and read back through `TopKCache.rows`, the stage's own code: sizes
are the stored arrays' bytes (per-block id offsets and Golomb parameters included, `.npy` headers not).
The teacher is synthetic: Zipf-like distributions (exponent 1.2-2.0 per position, token order uniformly random,
the worst case for the compressed form's id coding), one block of `--block` positions per seed. The student is
the teacher plus Gaussian logit noise; the loss is the mean L_B + L_T over all positions, compared between each
form's rows and the teacher's float32 top-K.

`--quick` checks that the bench still runs end to end in seconds: 64 positions in one block; the sizes are the
same kind of figure, the loss differences noisier, and neither is judged against the goals.

    .venv/bin/python bench/distill_cache_size.py [--positions 1024] [--block 256] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from workbench.distill.topk_cache import FORMS, CacheIdentity, build_topk_cache, open_topk_cache
from workbench.losses.topk_distill import TopKDistillConfig, decoupled_topk_kd_loss

VOCAB, K = 65536, 32
FULL_FP16 = VOCAB * 2
DISTILLKIT = (114, 300)
GOALS = {"exact": 128, "compressed": 80}
MAX_LOSS_DIFF = 1e-3


def teacher_logits(positions: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, VOCAB + 1, dtype=torch.float32)
    exponents = 1.2 + 0.8 * torch.rand(positions, 1, generator=generator)
    sorted_logits = -exponents * ranks.log() + 0.3 * torch.randn(positions, VOCAB, generator=generator)
    order = torch.argsort(torch.rand(positions, VOCAB, generator=generator), dim=-1)
    return torch.empty_like(sorted_logits).scatter_(-1, order, sorted_logits)


class SyntheticTeacher(torch.nn.Module):
    """A teacher for `build_topk_cache`: a block whose tokens are all b gets `teacher_logits(len, seed=b)`."""

    device = torch.device("cpu")

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.stack([teacher_logits(len(row), int(row[0])) for row in input_ids]))


def kd_loss(student: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, labels: torch.Tensor) -> float:
    parts = decoupled_topk_kd_loss(student[None], ids[None].long(), logprobs[None].float(), labels[None],
                                   TopKDistillConfig(k=K))  # fmt: skip
    return (parts.binary + parts.topk).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--block", type=int, default=256, help="positions per block (the cache's seq_len)")
    parser.add_argument("--quick", action="store_true", help="few positions, seconds: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.positions = args.block = 64
    if args.positions < args.block or args.positions % args.block:
        parser.error("--positions must be a multiple of --block")
    count = args.positions // args.block
    blocks = np.repeat(np.arange(count, dtype=np.uint16)[:, None], args.block, axis=1)
    sizes, caches = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for form in FORMS:
            identity = CacheIdentity("synthetic", "0" * 64, "0" * 64, "0" * 64, K, args.block, count, VOCAB, 4, form)
            manifest, _ = build_topk_cache(SyntheticTeacher(), blocks, Path(work) / form, identity, batch_size=1)
            sizes[form], caches[form] = manifest["bytes_per_token"], open_topk_cache(Path(work) / form, {}, K)
        losses, masses = dict.fromkeys(["float32", *FORMS], 0.0), []
        for b in range(count):
            teacher = teacher_logits(args.block, seed=b)
            generator = torch.Generator().manual_seed(10_000 + b)
            student = teacher + torch.randn(teacher.shape, generator=generator)
            labels = torch.randint(0, VOCAB, (args.block,), generator=generator)
            logprobs, ids = torch.log_softmax(teacher, -1).topk(K, dim=-1)
            masses.append(logprobs.exp().sum(-1))
            losses["float32"] += kd_loss(student, ids, logprobs, labels)
            for form, cache in caches.items():
                form_ids, form_logprobs = cache.rows([b])
                losses[form] += kd_loss(student, torch.from_numpy(form_ids[0].astype(np.int64)),
                                        torch.from_numpy(form_logprobs[0]), labels)  # fmt: skip
    mass = torch.cat(masses)
    print(f"{args.positions} positions, V={VOCAB}, K={K}; synthetic teacher top-K mass P_T mean {mass.mean():.3f}")
    print(f"full fp16 logits: {FULL_FP16} bytes/token; DistillKit: {DISTILLKIT[0]}-{DISTILLKIT[1]} bytes/token")
    header = ["form", "bytes/token", "fp16 logits / form", "DistillKit / form", "loss vs float32", "loss vs exact"]
    print(f"{header[0]:<12}" + "".join(f"{h:>20}" for h in header[1:]))
    for form in FORMS:
        size = sizes[form]
        kit = f"{DISTILLKIT[0] / size:.2f}-{DISTILLKIT[1] / size:.2f}x"
        vs_float = abs(losses[form] - losses["float32"]) / losses["float32"]
        vs_exact = abs(losses[form] - losses["exact"]) / losses["exact"]
        print(f"{form:<12}{size:>20.1f}{FULL_FP16 / size:>19.0f}x{kit:>20}{vs_float:>20.2e}{vs_exact:>20.2e}")
    diff = abs(losses["compressed"] - losses["exact"]) / losses["exact"]
    print(f"compressed KD loss relative difference from exact: {diff:.2e}")
    if args.quick:
        print(f"quick run ({args.positions} positions), goals not judged")
        return
    met = all(sizes[form] <= goal for form, goal in GOALS.items()) and diff < MAX_LOSS_DIFF
    print(
        f"goals: exact <= {GOALS['exact']} bytes/token; compressed <= {GOALS['compressed']} bytes/token with KD loss "
        f"rel. diff from exact < {MAX_LOSS_DIFF:g}: {'met' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
