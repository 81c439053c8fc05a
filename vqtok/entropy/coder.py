"""Entropy coding of codes with asymmetric numeral systems (constriction), two ways.

- `ans-static`: every code of level q is coded with the prior's row q.
- `ans-adaptive`: level q starts from the prior's row q and, every `ADAPT_BLOCK` codes,
  adds what this file has shown so far: each code seen adds `ADAPT_INCREMENT` to its
  frequency (so the prior weighs as much as 64 seen codes). The counts halve, rounding
  down, whenever they pass `ADAPT_LIMIT`, which keeps the prior's share of the mass at
  least 1/65 and bounds how many codes a payload can claim to hold.

All levels go into one ANS stream, level 0 first, positions in order. The frequencies are
integers and their probabilities `f / sum(f)` are correctly rounded IEEE divisions, which
constriction turns into its fixed-point model deterministically, so the stream is the same
on every machine. `constriction` is imported here only, on first use, so `import vqtok`
does not need it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from vqtok.entropy.prior import PRIOR_TOTAL, as_levels, check_prior, from_levels

CODER = "ans-static"
ADAPTIVE_CODER = "ans-adaptive"
CODERS = (CODER, ADAPTIVE_CODER)
ADAPT_BLOCK = 16
ADAPT_INCREMENT = PRIOR_TOTAL // 64
ADAPT_LIMIT = 4096


class PayloadError(ValueError):
    """An entropy-coded payload does not decode to the announced number of codes."""


def encode_payload(codes: np.ndarray, prior: np.ndarray, coder: str = CODER) -> bytes:
    """Entropy-code `codes` with `prior` and `coder`.

    Args:
        codes: integer `(N, Q, *latent)` when Q > 1, else any shape, all in [0, K).
        prior: int64 `(Q, K)` frequencies (see `check_prior`).
        coder: One of CODERS.

    Returns:
        The ANS stream as little-endian 32-bit words; `decode_payload` needs `codes.shape`.

    Raises:
        ValueError: `codes` are not integers, lie outside [0, K) or lack the level axis, the
            prior is invalid, or the coder is unknown.
    """
    prior = check_prior(prior)
    _check_coder(coder)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":  # a float or bool array would be truncated silently
        raise ValueError(f"codes must be an integer array, not {codes.dtype}")
    levels = as_levels(codes, prior.shape[0])
    if levels.size and (levels.min() < 0 or levels.max() >= prior.shape[1]):
        raise ValueError(f"codes must lie in [0, {prior.shape[1]})")
    stack = _stack().AnsCoder()
    # ANS is a stack: push the last block of the last level first, so decoding pops in order.
    for row, level in zip(reversed(prior), reversed(levels), strict=True):
        blocks = list(_blocks(row, level, coder))
        for (start, stop), frequencies in reversed(blocks):
            stack.encode_reverse(level[start:stop].astype(np.int32), _model(frequencies))
    return stack.get_compressed().astype("<u4").tobytes()


def decode_payload(
    payload: bytes, prior: np.ndarray, shape: tuple[int, ...], coder: str = CODER
) -> np.ndarray:
    """Inverse of `encode_payload`.

    Args:
        payload: The bytes `encode_payload` returned.
        prior: The int64 `(Q, K)` frequencies it was coded with.
        shape: The shape of the codes it holds.
        coder: The coder it was coded with, one of CODERS.

    Returns:
        The int64 codes of `shape`.

    Raises:
        PayloadError: The payload is not a whole number of words or does not hold exactly
            the codes of `shape` under `prior` and `coder`.
        ValueError: The prior is invalid or the coder is unknown.
    """
    prior = check_prior(prior)
    _check_coder(coder)
    if len(payload) % 4:
        raise PayloadError(f"payload of {len(payload)} bytes is not a whole number of 32-bit words")
    num_levels = prior.shape[0]
    per_level = math.prod(shape) // num_levels
    if per_level > _max_codes_per_level(len(payload), prior, coder):
        raise PayloadError(
            f"{len(payload)} payload bytes cannot hold codes of shape {tuple(shape)}"
        )
    stack = _stack().AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    levels = np.zeros((num_levels, per_level), dtype=np.int64)
    try:
        for row, level in zip(prior, levels, strict=True):
            # _blocks reads `level` up to each block's start only, which is decoded by then.
            for (start, stop), frequencies in _blocks(row, level, coder):
                level[start:stop] = stack.decode(_model(frequencies), stop - start)
    except Exception as error:  # constriction raises plain exceptions on malformed streams
        raise PayloadError(f"payload does not decode: {error}") from None
    if not stack.is_empty():
        raise PayloadError("payload holds more data than the announced codes")
    return from_levels(levels, tuple(shape), num_levels)


def _blocks(
    prior_row: np.ndarray, level: np.ndarray, coder: str
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """((start, stop), int64 frequencies (K,)) for each block of one level's codes `level` (M,).

    Static: one block with the prior. Adaptive: blocks of ADAPT_BLOCK codes, each coded with
    the prior plus the counts of the codes before it; reads `level[:start]` only.
    """
    if coder == CODER:
        yield (0, level.size), prior_row
        return
    seen = np.zeros_like(prior_row)
    for start in range(0, level.size, ADAPT_BLOCK):
        if start:
            seen += np.bincount(level[start - ADAPT_BLOCK : start], minlength=prior_row.size)
            if seen.sum() > ADAPT_LIMIT:
                seen //= 2
        yield (start, min(start + ADAPT_BLOCK, level.size)), prior_row + ADAPT_INCREMENT * seen


def _max_codes_per_level(payload_bytes: int, prior: np.ndarray, coder: str) -> float:
    """An upper bound on positions a payload can hold.

    Each costs at least the bits of the likeliest code under the most peaked model the coder
    can reach, and the coder's 64-bit state is the only other content. Guards allocation and
    decoding time.
    """
    adapted = ADAPT_INCREMENT * ADAPT_LIMIT if coder == ADAPTIVE_CODER else 0
    p_max = (prior.max(axis=1) + adapted) / (PRIOR_TOTAL + adapted)
    min_bits = float(-np.log2(p_max).sum())
    return (8 * payload_bytes + 64) / min_bits if min_bits > 0 else math.inf


def ideal_bits(codes: np.ndarray, prior: np.ndarray, coder: str = CODER) -> float:
    """The cross-entropy bound: sum of -log2 p(code) under `prior` and `coder`'s model.

    Args:
        codes: Integer codes as for `encode_payload`, all in [0, K).
        prior: int64 `(Q, K)` frequencies.
        coder: One of CODERS.

    Returns:
        The bound in bits, what an ideal coder would spend.

    Raises:
        ValueError: `codes` lack the level axis of a Q > 1 prior.
    """
    levels = as_levels(np.asarray(codes), prior.shape[0])
    bits = 0.0
    for row, level in zip(prior, levels, strict=True):
        for (start, stop), frequencies in _blocks(row, level, coder):
            bits -= float(np.log2(frequencies[level[start:stop]] / frequencies.sum()).sum())
    return bits


def empirical_entropy_bits(codes: np.ndarray, num_levels: int) -> float:
    """Sum over levels of M * H(empirical code distribution of that level).

    Args:
        codes: Non-negative integer codes, `(N, Q, *latent)` when `num_levels > 1`.
        num_levels: Q.

    Returns:
        The sum in bits.

    Raises:
        ValueError: `codes` lack the level axis of size `num_levels`.
    """
    levels = as_levels(np.asarray(codes), num_levels)
    counts = [np.bincount(level) for level in levels]
    return float(sum(level.size * entropy(c) for level, c in zip(levels, counts, strict=True)))


def entropy(counts: np.ndarray) -> float:
    """Entropy of the distribution proportional to `counts`.

    Args:
        counts: (K,) non-negative counts.

    Returns:
        Bits per symbol, 0 when all counts are 0.
    """
    counts = np.asarray(counts)
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _check_coder(coder: str) -> None:
    if coder not in CODERS:
        raise ValueError(f"unknown coder {coder!r}; expected one of {', '.join(CODERS)}")


def _model(frequencies: np.ndarray):
    """A constriction categorical model from positive integer frequencies (K,)."""
    import constriction

    probabilities = frequencies.astype(np.float64) / float(frequencies.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _stack():
    import constriction

    return constriction.stream.stack
