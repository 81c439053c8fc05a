"""Entropy coding of codes with a static prior: asymmetric numeral systems (constriction).

All levels of a code array go into one ANS stream: level q of every position is coded with
the prior's row q. The prior is exact fixed-point (see `prior.PRIOR_TOTAL`) and the coder
works in integers, so the stream is the same on every machine. `constriction` is imported
here only, on first use, so `import vqtok` does not need it.
"""

from __future__ import annotations

import math

import numpy as np

from vqtok.compress.prior import PRIOR_TOTAL, as_levels, check_prior, from_levels

CODER = "ans-static"


class PayloadError(ValueError):
    """An entropy-coded payload does not decode to the announced number of codes."""


def encode_payload(codes: np.ndarray, prior: np.ndarray) -> bytes:
    """Entropy-code `codes` with `prior` (int64 `(Q, K)` frequencies).

    codes: integer `(N, Q, *latent)` when Q > 1, else any shape, all in [0, K); ValueError otherwise.
    Returns the ANS stream as little-endian 32-bit words; `decode_payload` needs `codes.shape`.
    """
    prior = check_prior(prior)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":  # a float or bool array would be truncated silently
        raise ValueError(f"codes must be an integer array, not {codes.dtype}")
    levels = as_levels(codes, prior.shape[0])
    if levels.size and (levels.min() < 0 or levels.max() >= prior.shape[1]):
        raise ValueError(f"codes must lie in [0, {prior.shape[1]})")
    coder = _stack().AnsCoder()
    # ANS is a stack: push the last level first so that decoding pops level 0 first.
    for row, level in zip(reversed(prior), reversed(levels), strict=True):
        coder.encode_reverse(level.astype(np.int32), _model(row))
    return coder.get_compressed().astype("<u4").tobytes()


def decode_payload(payload: bytes, prior: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `encode_payload`: the int64 codes of `shape`.

    Raises PayloadError when the payload is not a whole number of words or does not hold
    exactly the codes of `shape` under `prior`.
    """
    prior = check_prior(prior)
    if len(payload) % 4:
        raise PayloadError(f"payload of {len(payload)} bytes is not a whole number of 32-bit words")
    num_levels = prior.shape[0]
    per_level = math.prod(shape) // num_levels
    if per_level > _max_codes_per_level(len(payload), prior):
        raise PayloadError(f"{len(payload)} payload bytes cannot hold codes of shape {tuple(shape)}")
    coder = _stack().AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    try:
        levels = np.stack([coder.decode(_model(row), per_level) for row in prior]).astype(np.int64)
    except Exception as error:  # constriction raises plain exceptions on malformed streams
        raise PayloadError(f"payload does not decode: {error}") from None
    if not coder.is_empty():
        raise PayloadError("payload holds more data than the announced codes")
    return from_levels(levels, tuple(shape), num_levels)


def _max_codes_per_level(payload_bytes: int, prior: np.ndarray) -> float:
    """An upper bound on positions a payload can hold: each costs at least the most likely
    codes' bits, and the coder's 64-bit state is the only other content. Guards allocation."""
    min_bits = float(-np.log2(prior.max(axis=1) / PRIOR_TOTAL).sum())
    return (8 * payload_bytes + 64) / min_bits if min_bits > 0 else math.inf


def ideal_bits(codes: np.ndarray, prior: np.ndarray) -> float:
    """The cross-entropy bound: sum of -log2 p(code) under `prior`, in bits."""
    levels = as_levels(np.asarray(codes), prior.shape[0])
    probabilities = np.take_along_axis(prior, levels, axis=1) / PRIOR_TOTAL
    return float(-np.log2(probabilities).sum())


def empirical_entropy_bits(codes: np.ndarray, num_levels: int) -> float:
    """Sum over levels of M * H(empirical code distribution of that level), in bits."""
    levels = as_levels(np.asarray(codes), num_levels)
    counts = [np.bincount(level) for level in levels]
    return float(sum(level.size * entropy(c) for level, c in zip(levels, counts, strict=True)))


def entropy(counts: np.ndarray) -> float:
    """Entropy in bits per symbol of the distribution proportional to `counts` (K,) (0 when empty)."""
    counts = np.asarray(counts)
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _model(frequencies: np.ndarray):
    """A constriction categorical model from integer frequencies summing to PRIOR_TOTAL."""
    import constriction

    probabilities = frequencies.astype(np.float64) / PRIOR_TOTAL
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _stack():
    import constriction

    return constriction.stream.stack
