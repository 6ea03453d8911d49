"""The teacher top-K cache in both forms: round trips (exact to the stored dtypes; compressed: ids exact, log-probs
within the quantisation step), sizes, resume after kill -9, and refusal of mismatched or partial caches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from workbench.distill.topk_cache import (
    MANIFEST,
    CacheIdentity,
    build_topk_cache,
    open_topk_cache,
    teacher_topk,
)
from workbench.distill.topk_codec import CODE_BITS, HEADER, STEP
from workbench.errors import StageError

# A teacher and corpus anyone can rebuild from a seed: the kill test's subprocess builds the same ones.
SETUP = """
import numpy as np, torch
from transformers import Lfm2Config, Lfm2ForCausalLM
from workbench.distill.topk_cache import CacheIdentity

def setup(vocab=300, blocks=10, seq_len=16, k=8, shard_blocks=2, form="exact"):
    torch.manual_seed(0)
    config = Lfm2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, full_attn_idxs=[1],
                        block_auto_adjust_ff_dim=False)
    teacher = Lfm2ForCausalLM(config).eval()
    ids = np.random.default_rng(0).integers(0, vocab, size=(blocks, seq_len)).astype(np.uint16)
    identity = CacheIdentity(teacher="t", teacher_hash="a" * 64, tokenizer_hash="b" * 64, corpus_digest="c" * 64,
                             k=k, seq_len=seq_len, blocks=blocks, vocab_size=vocab, shard_blocks=shard_blocks,
                             form=form)
    return teacher, ids, identity
"""
namespace: dict = {}
exec(SETUP, namespace)
setup = namespace["setup"]


def expected_of(identity: CacheIdentity) -> dict:
    return {"tokenizer_hash": identity.tokenizer_hash, "teacher_hash": identity.teacher_hash}


def test_round_trip_is_exact_to_the_stored_dtypes(tmp_path):
    teacher, blocks, identity = setup()
    manifest, reused = build_topk_cache(teacher, blocks, tmp_path, identity, batch_size=3)
    assert reused == 0 and manifest["tokens"] == 10 * 16 and manifest["shards"] == 5
    assert manifest["ids_dtype"] == "uint16" and manifest["logprobs_dtype"] == "float16"
    assert manifest["bytes_per_token"] == 8 * (2 + 2)
    cache = open_topk_cache(tmp_path, expected_of(identity), min_k=8)
    order = [7, 0, 9, 4]  # across shards, out of order
    ids, logprobs = cache.rows(order)
    want_ids, want_lp = teacher_topk(teacher, torch.from_numpy(blocks[order].astype(np.int64)), 8)
    assert ids.dtype == np.uint16 and logprobs.dtype == np.float16
    np.testing.assert_array_equal(ids, want_ids.numpy().astype(np.uint16))
    np.testing.assert_array_equal(logprobs, want_lp.numpy().astype(np.float16))
    full = torch.log_softmax(teacher(input_ids=torch.from_numpy(blocks[order].astype(np.int64))).logits, -1)
    mass = torch.logsumexp(torch.from_numpy(logprobs.astype(np.float32)), -1).exp()
    assert torch.all(mass <= 1.001) and torch.allclose(
        mass, full.exp().gather(-1, torch.from_numpy(ids.astype(np.int64))).sum(-1), atol=2e-3
    ), "the stored log-probs come from the full-vocabulary softmax, so P_T is recoverable"


def peaked(teacher):
    """Sharper predictions than a random init gives (gaps of several nats between the top-K log-probs)."""
    with torch.no_grad():
        teacher.lm_head.weight.mul_(10)
    return teacher


def test_compressed_round_trip_keeps_ids_exact_and_log_probs_within_a_step(tmp_path):
    teacher, blocks, identity = setup(form="compressed")
    manifest, _ = build_topk_cache(peaked(teacher), blocks, tmp_path, identity, batch_size=3)
    assert manifest["form"] == "compressed" and manifest["logprob_step"] == STEP
    assert manifest["logprob_code_bits"] == CODE_BITS
    cache = open_topk_cache(tmp_path, expected_of(identity), min_k=8)
    order = [7, 0, 9, 4]
    ids, logprobs = cache.rows(order)
    assert ids.dtype == np.uint16 and logprobs.dtype == np.float16 and ids.shape == (4, 16, 8), "as the exact form"
    want_ids, want_lp = teacher_topk(teacher, torch.from_numpy(blocks[order].astype(np.int64)), 8)
    want_ids, want_lp = want_ids.numpy(), want_lp.numpy()
    np.testing.assert_array_equal(np.sort(ids, -1), np.sort(want_ids, -1))
    assert np.all(np.diff(logprobs.astype(np.float32), axis=-1) <= 0), "sorted by decreasing log-prob"
    got = np.take_along_axis(logprobs.astype(np.float32), np.argsort(ids, -1), -1)
    want = np.take_along_axis(want_lp, np.argsort(want_ids, -1), -1)
    kept = want.max(-1, keepdims=True) - want < (2**CODE_BITS - 1) * STEP
    assert kept.mean() > 0.95 and (want.max(-1) - want.min(-1)).mean() > 2, "the teacher spreads its top K"
    assert np.abs(got - want)[kept].max() <= STEP


def test_compressed_cache_size_is_the_forms_arithmetic(tmp_path):
    """2 bytes of base and ceil(7K/8) of log-prob codes a position; a block's id record takes its Golomb code's
    bits, each of its three streams padded to a byte, after a 4-byte parameter; one int64 offset a block."""
    teacher, blocks, identity = setup(form="compressed")
    manifest, _ = build_topk_cache(peaked(teacher), blocks, tmp_path, identity)
    ids, _ = teacher_topk(teacher, torch.from_numpy(blocks.astype(np.int64)), 8)
    gaps = np.diff(np.sort(ids.numpy(), -1), axis=-1, prepend=-1) - 1
    record_bytes = 0
    for block in range(10):
        shard, row = divmod(block, 2)
        index = np.load(tmp_path / f"shard-{shard:05d}.idindex.npy")
        record = np.load(tmp_path / f"shard-{shard:05d}.ids.npy")[index[row] : index[row + 1]]
        m = int(record[:HEADER].view("<u4")[0])
        b = (m - 1).bit_length()
        quotient, remainder = np.divmod(gaps[block].ravel(), m)
        streams = [len(quotient) * max(b - 1, 0), int(np.sum(remainder >= (1 << b) - m)) if b else 0,
                   len(quotient) + int(quotient.sum())]  # fmt: skip
        assert len(record) == HEADER + sum(-(-bits // 8) for bits in streams), block
        record_bytes += len(record)
    tokens = 10 * 16
    expected = (tokens * (2 + 7) + record_bytes + 8 * (10 + 5)) / tokens
    assert manifest["bytes_per_token"] == pytest.approx(expected)
    assert manifest["bytes_per_token"] < 8 * (2 + 2), "smaller than the exact form"


def test_a_cache_is_read_only_in_the_form_it_was_written_in(tmp_path):
    teacher, blocks, identity = setup()
    build_topk_cache(teacher, blocks, tmp_path, identity)
    compressed = replace(identity, form="compressed")
    manifest, reused = build_topk_cache(teacher, blocks, tmp_path, compressed)
    assert reused == 0 and manifest["form"] == "compressed", "another form is another build"
    assert (
        not list(tmp_path.glob("*.logprobs.npy"))
        and json.loads((tmp_path / "build.json").read_text())["form"] == "compressed"
    )
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"form": "exact"}))
    with pytest.raises(StageError, match="a shard is unreadable"):
        open_topk_cache(tmp_path, expected_of(identity), min_k=8)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"form": "zip"}))
    with pytest.raises(StageError, match="form 'zip' is none of exact, compressed"):
        open_topk_cache(tmp_path, expected_of(identity), min_k=8)


def test_uint32_ids_for_large_vocabularies():
    _, _, identity = setup()
    assert replace(identity, vocab_size=65536).ids_dtype == "uint16"
    assert replace(identity, vocab_size=65537).ids_dtype == "uint32"


def test_mismatched_manifest_is_refused_with_every_reason(tmp_path):
    teacher, blocks, identity = setup()
    build_topk_cache(teacher, blocks, tmp_path, identity)
    wrong = {"tokenizer_hash": "d" * 64, "teacher_hash": "e" * 64, "corpus_digest": "f" * 64}
    with pytest.raises(StageError) as error:
        open_topk_cache(tmp_path, wrong, min_k=16)
    message = str(error.value)
    assert "refused" in message
    for reason in ("tokenizer differs", "teacher differs", "corpus blocks differ", "K=8 tokens a position, k=16"):
        assert reason in message, reason
    assert open_topk_cache(tmp_path, expected_of(identity), min_k=4).k == 8, "a smaller k is served by a larger K"


def test_a_different_build_replaces_stale_shards(tmp_path):
    teacher, blocks, identity = setup()
    build_topk_cache(teacher, blocks, tmp_path, identity)
    (tmp_path / MANIFEST).unlink()  # as if killed before the end
    other = replace(identity, k=4)
    manifest, reused = build_topk_cache(teacher, blocks, tmp_path, other)
    assert reused == 0 and manifest["k"] == 4
    assert np.load(tmp_path / "shard-00000.ids.npy").shape == (2, 16, 4)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["exact", "compressed"])
def test_killed_build_resumes_and_partial_cache_is_never_used(tmp_path, form):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    script = (
        SETUP
        + f"""
import sys, time
from pathlib import Path
from workbench.distill.topk_cache import build_topk_cache
teacher, ids, identity = setup(form={form!r})
def slow(shard):
    print("shard", shard, flush=True)
    time.sleep(0.5)
build_topk_cache(teacher, ids, Path({str(killed)!r}), identity, batch_size=1, after_shard=slow)
"""
    )
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        start_new_session=True, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while len(list(killed.glob("shard-*.ids.npy"))) < 2:
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "no shards appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    written = len(list(killed.glob("shard-*.ids.npy")))
    assert 2 <= written < 5 and not (killed / MANIFEST).exists()
    teacher, blocks, identity = setup(form=form)
    with pytest.raises(StageError, match=rf"incomplete \({written} shards written"):
        open_topk_cache(killed, expected_of(identity), min_k=8)

    manifest, reused = build_topk_cache(teacher, blocks, killed, identity)
    assert reused == written, "whole shards from before the kill are kept"
    build_topk_cache(teacher, blocks, clean, identity)
    assert json.loads((clean / MANIFEST).read_text()) == manifest
    for shard in sorted(clean.glob("shard-*.npy")):
        assert (killed / shard.name).read_bytes() == shard.read_bytes(), shard.name
    assert not list(killed.glob("*.partial"))
