"""The compressed top-K form: bit packing and Golomb coding are lossless, ids round-trip exactly, log-probs within
the quantisation step, and the decoded top-K mass is the teacher's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.distill.topk_codec import (
    CODE_BITS,
    HEADER,
    STEP,
    best_golomb,
    code_bytes,
    decode,
    encode,
    golomb_bits,
    golomb_decode,
    golomb_encode,
    pack_bits,
    unpack_bits,
)

FP16 = 2**-6  # float16 spacing of log-probs in [-16, -8]: decoded values are float16, as in the exact form


@pytest.mark.parametrize("width", [1, 2, 7, 8, 10, 13, 17, 24, 25])
def test_bit_packing_round_trips_every_width(width):
    values = np.random.default_rng(width).integers(0, 1 << width, size=(3, 37))
    packed = pack_bits(values, width)
    assert packed.shape == (3, -(-37 * width // 8)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(packed, width, 37), values)


@pytest.mark.parametrize(
    "gaps",
    [
        np.diff(np.sort(np.random.default_rng(0).choice(65536, 32, replace=False)), prepend=-1) - 1,  # spread out
        np.zeros(64, np.int64),  # consecutive ids: m = 1, quotients only
        np.random.default_rng(1).integers(0, 4, 300),  # small gaps
        np.random.default_rng(2).integers(0, 1 << 22, 50),  # a vocabulary of millions
        np.full(40, 1023),  # m a power of two (a Rice code): every remainder has its last bit
    ],
    ids=["uniform", "consecutive", "small", "wide", "rice"],
)
def test_golomb_records_round_trip_and_take_the_bits_they_should(gaps):
    record = golomb_encode(gaps)
    np.testing.assert_array_equal(golomb_decode(record, len(gaps)), gaps)
    m = int(record[:HEADER].view("<u4")[0])
    assert m == best_golomb(gaps)
    assert golomb_bits(gaps, m) <= min(golomb_bits(gaps, 1 << k) for k in range(25)), "no worse than any Rice code"
    # three streams, each padded to a whole byte
    assert -(-golomb_bits(gaps, m) // 8) <= len(record) - HEADER <= -(-golomb_bits(gaps, m) // 8) + 2


def test_a_truncated_record_is_an_error_not_a_short_block():
    record = golomb_encode(np.arange(100))
    with pytest.raises(ValueError, match="gaps, 100 expected"):
        golomb_decode(record[:-4], 100)


def teacher_rows(blocks: int, seq_len: int, vocab: int, k: int, scale: float, seed: int):
    """Top-k (ids, float32 log-probs), sorted by decreasing log-prob, of random logits times `scale`."""
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(blocks, seq_len, vocab, generator=generator)
    values, ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    return ids.numpy(), values.numpy()


@pytest.mark.parametrize(("vocab", "scale"), [(65536, 3.0), (300, 1.0), (1 << 20, 3.0)])
def test_ids_round_trip_exactly_and_log_probs_within_the_quantisation_step(vocab, scale):
    ids, logprobs = teacher_rows(3, 16, vocab, 32, scale, seed=vocab)
    base, codes, records = encode(ids, logprobs)
    assert base.shape == (3, 16) and base.dtype == np.float16
    assert codes.shape == (3, 16, code_bytes(32)) == (3, 16, 28) and len(records) == 3
    got_ids, got_logprobs = decode(base, codes, records, 32)
    assert got_ids.shape == ids.shape and got_logprobs.dtype == np.float16
    np.testing.assert_array_equal(np.sort(got_ids, axis=-1), np.sort(ids, axis=-1))
    assert np.all(np.diff(got_logprobs.astype(np.float32), axis=-1) <= 0), "sorted by decreasing log-prob"
    # each id's log-prob, aligned by id: the gap below the top one is exact to half a step (and float16 rounding)
    by_id = np.take_along_axis(logprobs, np.argsort(ids, axis=-1), -1)
    got_by_id = np.take_along_axis(got_logprobs.astype(np.float64), np.argsort(got_ids, axis=-1), -1)
    gaps = by_id.max(-1, keepdims=True) - by_id
    got_gaps = got_by_id.max(-1, keepdims=True) - got_by_id
    kept = gaps < (2**CODE_BITS - 1) * STEP
    assert kept.mean() > 0.9
    assert np.abs(got_gaps - gaps)[kept].max() <= STEP / 2 + 2 * FP16
    assert np.all(got_gaps[~kept] == pytest.approx((2**CODE_BITS - 1) * STEP, abs=2 * FP16)), "clipped at 7.9 nats"
    # the base keeps the teacher's top-K mass: log P_T of the decoded rows is the teacher's, to float16 rounding
    # (bases here lie in [-8, 0], spaced <= 2^-9); with the top-1's log-prob as the base it is off by up to 0.009
    mass = torch.logsumexp(torch.from_numpy(by_id.astype(np.float64)), -1)
    got_mass = torch.logsumexp(torch.from_numpy(got_by_id), -1)
    assert base.min() > -8 and torch.allclose(got_mass, mass, rtol=0, atol=2**-8)
    assert np.abs(got_by_id - by_id)[kept].max() <= STEP, "each log-prob within one step"


def test_the_compressed_form_meets_its_size_at_k32_over_65536_tokens():
    """Ids spread uniformly (the worst case for the id coding): 2 + 28 bytes of log-probs and ~49.7 of ids."""
    ids = np.stack([np.random.default_rng(i).choice(65536, 32, replace=False) for i in range(4 * 256)])
    logprobs = np.sort(np.random.default_rng(0).normal(-6, 2, size=ids.shape), axis=-1)[:, ::-1]
    base, codes, records = encode(ids.reshape(4, 256, 32), logprobs.reshape(4, 256, 32).astype(np.float32))
    per_token = (base.nbytes + codes.nbytes + sum(r.nbytes for r in records) + 8 * 5) / ids.shape[0]
    assert 79 < per_token <= 80
