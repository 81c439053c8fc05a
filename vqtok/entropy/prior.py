"""Static code priors: measured code counts, quantized to integer frequencies.

A prior is an int64 array `(Q, K)` of frequencies per residual level (Q = 1 for a single
quantizer) that sum to `PRIOR_TOTAL` on every level, each at least 1 so that every code
stays codable. It is stored in the checkpoint, so encoder and decoder read the same table on
any machine, and `prior_id` names it in compressed files.

Fitting: the counts of codes rarely seen in training say little about their frequency on
new data, so `smoothed_prior` mixes the measured frequencies with the uniform distribution,
with the mixing weight per level that gives the least cross-entropy on held-out folds of
the fitting data (cross-validation). Uniform is among the candidates, so on data like the
fitting data the prior never costs much more than log2 K bits per code. The mixture and
its quantization are integer arithmetic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import torch

# A power of two at most 2**24: the coder's fixed-point precision, so frequencies are exact.
PRIOR_TOTAL = 2**20
# Candidate weights of the uniform distribution in a smoothed prior, 2**(-j/2) for j = 0..31
# rounded to integer fractions of UNIFORM_DENOMINATOR (all distinct); the first (1) is the
# uniform prior itself.
UNIFORM_DENOMINATOR = 2**16
UNIFORM_WEIGHTS = tuple(round(UNIFORM_DENOMINATOR * 2 ** (-j / 2)) for j in range(32))
# Without two folds holding codes there is nothing to cross-validate: weigh uniform by 1/2.
DEFAULT_UNIFORM_WEIGHT = UNIFORM_DENOMINATOR // 2


def code_counts(
    codes: np.ndarray | torch.Tensor, codebook_size: int, num_levels: int
) -> np.ndarray:
    """How often each code occurs, per level.

    Args:
        codes: integer `(N, Q, *latent)` when `num_levels > 1`, else `(N, *latent)`.
        codebook_size: K.
        num_levels: Q.

    Returns:
        int64 `(Q, K)` counts.

    Raises:
        ValueError: A code lies outside [0, K), or the codes lack the level axis.
    """
    levels = as_levels(np.asarray(codes), num_levels)
    if levels.size and (levels.min() < 0 or levels.max() >= codebook_size):
        raise ValueError(
            f"codes must lie in [0, {codebook_size}), got [{levels.min()}, {levels.max()}]"
        )
    return np.stack([np.bincount(level, minlength=codebook_size) for level in levels]).astype(
        np.int64
    )


def as_levels(codes: np.ndarray, num_levels: int) -> np.ndarray:
    """The codes of each level as one row.

    Args:
        codes: `(N, Q, *latent)` (or `(N, *latent)` for Q = 1).
        num_levels: Q.

    Returns:
        int64 `(Q, M)`, one row per level.

    Raises:
        ValueError: Q > 1 and the codes lack a level axis of size Q after the first.
    """
    if num_levels == 1:
        return codes.reshape(1, -1).astype(np.int64)
    if codes.ndim < 2 or codes.shape[1] != num_levels:
        raise ValueError(
            f"codes of shape {codes.shape} lack a level axis of size {num_levels} after the first"
        )
    return np.moveaxis(codes, 1, 0).reshape(num_levels, -1).astype(np.int64)


def from_levels(levels: np.ndarray, shape: tuple[int, ...], num_levels: int) -> np.ndarray:
    """Inverse of `as_levels`.

    Args:
        levels: `(Q, M)`, one row per level.
        shape: The codes' shape, `(N, Q, *latent)` (or `(N, *latent)` for Q = 1).
        num_levels: Q.

    Returns:
        The codes of `shape`.
    """
    if num_levels == 1:
        return levels.reshape(shape)
    moved = (shape[1], shape[0], *shape[2:])
    return np.moveaxis(levels.reshape(moved), 0, 1)


@torch.no_grad()
def fit_prior(model: torch.nn.Module, batches: Iterable[tuple[int | np.ndarray, torch.Tensor]],
              folds: int = 1) -> np.ndarray:
    """Count the codes `model` gives to batches, per fold.

    Keep each source (a photo, a recording) in one fold, so that folds are held out honestly.

    Args:
        model: A tokenizer (``encode``, ``num_levels``, ``codebook_size``).
        batches: `(fold, inputs)` pairs: inputs `(B, C, *spatial)` float in [-1, 1], fold in
            [0, folds) for the whole batch or an int array `(B,)`, one per input.
        folds: F, the number of folds.

    Returns:
        int64 counts `(folds, Q, K)`; turn them into a prior with `smoothed_prior`.
    """
    counts = np.zeros((folds, model.num_levels, model.codebook_size), dtype=np.int64)
    device = next(model.parameters()).device
    for fold, batch in batches:
        codes = model.encode(batch.to(device)).cpu()
        per_input = np.broadcast_to(np.asarray(fold), (codes.shape[0],))
        for f in np.unique(per_input):
            counts[f] += code_counts(
                codes[torch.from_numpy(per_input == f)], model.codebook_size, model.num_levels
            )
    return counts


def smoothed_prior(fold_counts: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """A prior from code counts, mixed with the uniform distribution by cross-validation.

    Level q's prior is `(1 - w) * counts / n + w / K` over all folds, quantized with
    `quantize_counts`, where w among UNIFORM_WEIGHTS minimizes the cross-entropy of each fold
    under the other folds' counts.

    Args:
        fold_counts: int `(F, Q, K)` code counts of F disjoint parts of the fitting data.

    Returns:
        (prior int64 `(Q, K)`, the uniform weight chosen per level).

    Raises:
        ValueError: `fold_counts` is not an `(F, Q, K)` array of non-negative integers.
    """
    fold_counts = np.asarray(fold_counts)
    if (
        fold_counts.ndim != 3
        or not np.issubdtype(fold_counts.dtype, np.integer)
        or (fold_counts < 0).any()
    ):
        raise ValueError("fold counts must be a (F, Q, K) array of non-negative integers")
    weights = [_cross_validated_weight(level) for level in np.moveaxis(fold_counts, 1, 0)]
    totals = fold_counts.sum(axis=0)
    mixed = np.stack([_mix_uniform(row, w) for row, w in zip(totals, weights, strict=True)])
    return quantize_counts(mixed), [w / UNIFORM_DENOMINATOR for w in weights]


def _cross_validated_weight(folds: np.ndarray) -> int:
    """The numerator in UNIFORM_WEIGHTS with the least held-out bits.

    folds: (F, K) counts of one level.
    """
    held_out = [f for f in range(len(folds)) if folds[f].sum()]
    if len(held_out) < 2:
        return DEFAULT_UNIFORM_WEIGHT
    total = folds.sum(axis=0)

    def bits(weight: int) -> float:
        w = weight / UNIFORM_DENOMINATOR
        cost = 0.0
        for f in held_out:
            train = total - folds[f]
            p = (1 - w) * train / train.sum() + w / train.size
            seen = folds[f] > 0
            cost -= float((folds[f][seen] * np.log2(p[seen])).sum())
        return cost

    return min(UNIFORM_WEIGHTS, key=bits)  # ties: the first, i.e. the larger weight


def _mix_uniform(counts: np.ndarray, weight: int) -> np.ndarray:
    """Integer weights proportional to `(1 - w) * counts / n + w / K`.

    w = weight / UNIFORM_DENOMINATOR.
    """
    n, size = int(counts.sum()), counts.size
    if n == 0:
        return np.zeros_like(counts)  # quantize_counts makes it uniform
    return (UNIFORM_DENOMINATOR - weight) * size * counts.astype(np.int64) + weight * n


def quantize_counts(counts: np.ndarray, total: int = PRIOR_TOTAL) -> np.ndarray:
    """Integer frequencies from counts.

    Every code gets 1, the remaining mass is shared in proportion to the counts (floor),
    and what flooring left over goes to the largest remainders, ties to the lower code.
    A level without any counts becomes uniform.

    Args:
        counts: non-negative integers `(Q, K)`.
        total: What every row sums to, in [K, 2**24].

    Returns:
        int64 frequencies `(Q, K)`, each >= 1, every row summing to `total`.

    Raises:
        ValueError: `counts` is not a `(Q, K)` array of non-negative integers, or `total`
            lies outside [K, 2**24].
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("counts must be a (Q, K) array of non-negative integers")
    codebook_size = counts.shape[1]
    if not codebook_size <= total <= 2**24:
        raise ValueError(f"total {total} must lie in [K = {codebook_size}, 2**24]")
    return np.stack([_quantize_level(row.astype(np.int64), total) for row in counts])


def _quantize_level(counts: np.ndarray, total: int) -> np.ndarray:
    if counts.sum() == 0:
        counts = np.ones_like(counts)
    spare = total - counts.size
    # Python ints: counts * spare can overflow int64 for large datasets.
    scaled = [int(c) * spare for c in counts]
    mass = int(counts.sum())
    shares = np.array([s // mass for s in scaled], dtype=np.int64)
    remainders = np.array([s % mass for s in scaled], dtype=object)
    leftover = spare - int(shares.sum())
    order = sorted(range(counts.size), key=lambda k: (-remainders[k], k))
    shares[order[:leftover]] += 1
    return shares + 1


def uniform_prior(codebook_size: int, num_levels: int, total: int = PRIOR_TOTAL) -> np.ndarray:
    """The prior of a model without measured counts: every code equally likely.

    Args:
        codebook_size: K.
        num_levels: Q.
        total: What every row sums to.

    Returns:
        int64 frequencies `(Q, K)`.
    """
    return quantize_counts(np.zeros((num_levels, codebook_size), dtype=np.int64), total)


def check_prior(
    prior: np.ndarray, codebook_size: int | None = None, num_levels: int | None = None
) -> np.ndarray:
    """Validate a `(Q, K)` prior.

    Args:
        prior: The frequencies.
        codebook_size: K of the model it is for, when given.
        num_levels: Q of the model it is for, when given.

    Returns:
        The prior as int64.

    Raises:
        ValueError: The shape does not fit, a frequency is not an integer >= 1, or a level
            does not sum to PRIOR_TOTAL.
    """
    prior = np.asarray(prior)
    want = (num_levels or prior.shape[0], codebook_size or prior.shape[-1])
    if prior.ndim != 2 or prior.shape != want:
        raise ValueError(f"prior has shape {prior.shape}, the model needs {want}")
    if not np.issubdtype(prior.dtype, np.integer) or (prior < 1).any():
        raise ValueError("prior frequencies must be integers >= 1")
    sums = set(prior.sum(axis=1).tolist())
    if len(sums) != 1 or sums.pop() != PRIOR_TOTAL:
        raise ValueError(f"every prior level must sum to {PRIOR_TOTAL}")
    return prior.astype(np.int64)


def prior_id(prior: np.ndarray) -> str:
    """A content hash of the frequencies, stored in compressed files.

    Args:
        prior: `(Q, K)` frequencies.

    Returns:
        16 hex chars.
    """
    table = np.ascontiguousarray(prior, dtype="<i8")
    header = f"{table.shape[0]}x{table.shape[1]}:".encode()
    return hashlib.sha256(header + table.tobytes()).hexdigest()[:16]


def model_prior(model: torch.nn.Module) -> np.ndarray:
    """The prior stored with `model`, or the uniform prior.

    Args:
        model: A tokenizer, whose `code_prior` ((Q, K) int64) may be None.

    Returns:
        int64 frequencies `(Q, K)`.

    Raises:
        ValueError: The stored prior does not fit the model or is invalid.
    """
    stored = getattr(model, "code_prior", None)
    if stored is None:
        return uniform_prior(model.codebook_size, model.num_levels)
    return check_prior(np.asarray(stored), model.codebook_size, model.num_levels)
