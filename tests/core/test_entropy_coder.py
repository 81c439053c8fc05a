"""Priors and entropy coding: integer frequencies, exact round trips, size at the entropy bound."""

from __future__ import annotations

import numpy as np
import pytest

from vqtok.entropy import (
    ADAPTIVE_CODER,
    CODERS,
    PRIOR_TOTAL,
    PayloadError,
    code_counts,
    decode_payload,
    empirical_entropy_bits,
    encode_payload,
    ideal_bits,
    prior_id,
    quantize_counts,
    uniform_prior,
)


def _zipf_codes(shape: tuple[int, ...], codebook_size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, codebook_size + 1) ** 1.1
    return rng.choice(codebook_size, size=shape, p=weights / weights.sum())


def test_quantized_prior_is_positive_exact_and_follows_counts():
    counts = np.array([[0, 1, 10, 1000, 5000, 0], [3, 3, 3, 3, 3, 3]])
    prior = quantize_counts(counts)
    assert prior.dtype == np.int64 and (prior >= 1).all()
    assert (prior.sum(axis=1) == PRIOR_TOTAL).all()
    assert list(np.argsort(prior[0], kind="stable")) == list(np.argsort(counts[0], kind="stable"))
    assert len(set(prior[1].tolist())) <= 2  # equal counts share the mass up to one unit


def test_empty_counts_give_the_uniform_prior():
    prior = quantize_counts(np.zeros((2, 1024), dtype=np.int64))
    assert (prior == PRIOR_TOTAL // 1024).all()
    assert np.array_equal(prior, uniform_prior(1024, 2))


@pytest.mark.parametrize(
    "counts", [np.ones((4,)), -np.ones((1, 4), dtype=np.int64), np.ones((1, 4)) * 0.5]
)
def test_bad_counts_are_refused(counts):
    with pytest.raises(ValueError):
        quantize_counts(counts)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("shape, levels", [((3, 5, 7), 1), ((2, 4, 6, 5), 4), ((1, 40), 1)])
def test_payload_round_trip_is_exact(shape, levels, coder):
    codes = _zipf_codes(shape, 256)
    prior = quantize_counts(code_counts(codes, 256, levels))
    payload = encode_payload(codes, prior, coder)
    assert np.array_equal(decode_payload(payload, prior, shape, coder), codes)
    assert encode_payload(codes, prior, coder) == payload  # deterministic


def test_adaptive_coder_learns_what_a_file_repeats():
    """Codes skewed differently from the prior (as a new photo's): adaptation pays, and the
    payload stays at its ideal size."""
    rng = np.random.default_rng(3)
    prior = quantize_counts(code_counts(_zipf_codes((1, 5000), 1024), 1024, 1))
    codes = rng.choice(
        rng.choice(1024, 40, replace=False), size=(1, 64, 64)
    )  # 40 codes used, unlike the prior
    static, adaptive = encode_payload(codes, prior), encode_payload(codes, prior, ADAPTIVE_CODER)
    assert len(adaptive) < 0.7 * len(static)
    assert abs(8 * len(adaptive) - ideal_bits(codes, prior, ADAPTIVE_CODER)) <= 8 * 12
    with pytest.raises(PayloadError):  # the same words read as static codes do not fit
        decode_payload(adaptive, prior, codes.shape)


@pytest.mark.parametrize("coder", CODERS)
def test_a_huge_announced_shape_is_refused_before_decoding(coder):
    codes = _zipf_codes((1, 200), 1024)
    prior = quantize_counts(code_counts(codes, 1024, 1))
    with pytest.raises(PayloadError, match="cannot hold"):
        decode_payload(encode_payload(codes, prior, coder), prior, (1, 10**8), coder)


def test_coded_size_is_within_a_few_bytes_of_the_entropy_bound():
    codes = _zipf_codes((4, 64, 64), 1024)
    prior = quantize_counts(code_counts(codes, 1024, 1))
    bound = ideal_bits(codes, prior) / 8
    payload = encode_payload(codes, prior)
    assert bound - 1 <= len(payload) <= bound + 12
    assert ideal_bits(codes, prior) >= empirical_entropy_bits(codes, 1) - 1e-6  # Gibbs' inequality
    assert len(payload) < codes.size * 10 / 8 * 0.9  # well below log2 K bits per code


def test_payload_that_does_not_match_the_shape_is_refused():
    codes = _zipf_codes((2, 30), 64)
    prior = quantize_counts(code_counts(codes, 64, 1))
    payload = encode_payload(codes, prior)
    with pytest.raises(PayloadError, match="more data"):
        decode_payload(payload, prior, (2, 20))
    with pytest.raises(PayloadError):
        decode_payload(payload, prior, (2, 10**9))
    with pytest.raises(PayloadError, match="32-bit"):
        decode_payload(payload[:-1], prior, (2, 30))


def test_codes_outside_the_codebook_are_refused():
    prior = uniform_prior(16, 1)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        encode_payload(np.array([[3, 16]]), prior)


def test_prior_id_names_the_frequencies():
    prior = uniform_prior(32, 2)
    changed = prior.copy()
    changed[1, :2] += [1, -1]
    assert prior_id(prior) == prior_id(prior.copy())
    assert prior_id(prior) != prior_id(changed)
