"""Distillation throughput: tokens/s of `DistillTrainer` steps with teacher targets read from the top-K cache, in
each of its forms (`exact`, and `compressed`, decoded batch by batch as the trainer reads it), against online
distillation (the teacher runs on every batch): same student, batch and steps, one run after the other in one
process; the cached runs alternate `--repeats` times and the best of each counts. The teacher has about 4x the
student's parameters. Goals: cached (exact) / online >= 1.5; compressed / exact >= 0.9.

`--quick` checks that the bench still runs end to end in seconds: the same models, 2 steps of batch 2 at
sequence length 64, one repeat; the ratios are not judged against the goals.

    .venv/bin/python bench/distill_throughput.py [--steps 12] [--batch-size 8] [--seq-len 256] [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Lfm2Config, Lfm2ForCausalLM, TrainingArguments

from workbench.distill.topk_cache import FORMS, CacheIdentity, build_topk_cache, open_topk_cache
from workbench.distill.training import BlockCollator, BlockDataset, DistillTrainer
from workbench.losses.topk_distill import TopKDistillConfig

VOCAB = 2048  # the quickstart tokenizer's size
STUDENT = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4)  # tiny-lfm2
TEACHER = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=5, num_attention_heads=8)
COMMON = dict(
    vocab_size=VOCAB, num_key_value_heads=2, block_auto_adjust_ff_dim=False, conv_L_cache=3, tie_word_embeddings=True
)


def model(shape: dict, layers_with_attention: list[int], seed: int) -> Lfm2ForCausalLM:
    torch.manual_seed(seed)
    return Lfm2ForCausalLM(Lfm2Config(**shape, **COMMON, full_attn_idxs=layers_with_attention)).float()


def parameters(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tokens_per_second(student, blocks, cache, teacher, args: argparse.Namespace, out: Path) -> float:
    training = TrainingArguments(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_steps=10_000, dataloader_num_workers=0,
        remove_unused_columns=False, train_sampling_strategy="sequential", disable_tqdm=True,
    )  # fmt: skip
    trainer = DistillTrainer(
        model=copy.deepcopy(student),
        args=training,
        train_dataset=BlockDataset(np.arange(len(blocks))),
        data_collator=BlockCollator(blocks, cache),
        loss_config=TopKDistillConfig(k=args.k),
        teacher=teacher,
    )
    runtime = trainer.train().metrics["train_runtime"]
    return args.steps * args.batch_size * args.seq_len / runtime


def read_time(cache, count: int, batch_size: int) -> float:
    """Seconds `cache.rows` takes for one batch (the best of three passes over every batch): the compressed form's
    decoding, which the steps above include."""
    batches = [list(range(start, start + batch_size)) for start in range(0, count, batch_size)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for batch in batches:
            cache.rows(batch)
        best = min(best, (time.perf_counter() - started) / len(batches))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="few short steps, seconds: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.seq_len, args.repeats = 2, 2, 64, 1
    student, teacher = model(STUDENT, [1, 3], seed=0), model(TEACHER, [1, 3], seed=1)
    ratio = parameters(teacher) / parameters(student)
    print(f"student {parameters(student):,} parameters, teacher {parameters(teacher):,} ({ratio:.2f}x)")
    count = args.steps * args.batch_size
    blocks = np.random.default_rng(0).integers(0, VOCAB, size=(count, args.seq_len)).astype(np.uint16)
    cached = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        caches = {}
        for form in FORMS:
            identity = CacheIdentity(
                "bench", "0" * 64, "0" * 64, "0" * 64, args.k, args.seq_len, count, VOCAB, 64, form
            )
            manifest, _ = build_topk_cache(teacher, blocks, work / form, identity, batch_size=args.batch_size)
            caches[form] = open_topk_cache(work / form, {}, min_k=args.k)  # built untimed
            print(f"{form} cache: {manifest['bytes_per_token']:.1f} bytes/token at V={VOCAB}, K={args.k}")
        reading = {form: read_time(cache, count, args.batch_size) for form, cache in caches.items()}
        warm = argparse.Namespace(**{**vars(args), "steps": 1})
        tokens_per_second(student, blocks[: args.batch_size], caches["exact"], None, warm, work / "warm")
        for repeat in range(args.repeats):
            for form, cache in caches.items():
                speed = tokens_per_second(student, blocks, cache, None, args, work / f"{form}-{repeat}")
                cached[form] = max(cached.get(form, 0.0), speed)
        online = tokens_per_second(student, blocks, None, teacher, args, work / "online")
    for form, speed in cached.items():
        print(
            f"cached teacher, {form}: {speed:,.0f} tokens/s ({reading[form] * 1e3:.2f} ms a batch to read the targets)"
        )
    print(f"online teacher: {online:,.0f} tokens/s")
    quick = "quick run, goal not judged"
    print(f"ratio cached / online: {cached['exact'] / online:.2f}x ({quick if args.quick else 'goal >= 1.5'})")
    print(
        f"ratio compressed / exact: {cached['compressed'] / cached['exact']:.2f}x ({quick if args.quick else 'goal >= 0.9'})"
    )


if __name__ == "__main__":
    main()
