"""k-means for codebook initialization: k-means++ seeding, then Lloyd steps.

Distances always go through ``vqtok.kernels.nearest_code``, so no (N, K) matrix is built.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqtok.kernels import code_counts_and_sums, nearest_code


def _normalize_if(x: Tensor, metric: str) -> Tensor:
    return torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x


def _sample_rows(weights: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """``count`` row indices drawn in proportion to ``weights`` (uniformly when all are 0)."""
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    replacement = count > int((weights > 0).sum())
    return torch.multinomial(weights, count, replacement=replacement, generator=generator)


@torch.no_grad()
def kmeans_plus_plus(
    x: Tensor, k: int, *, metric: str = "l2", generator: torch.Generator | None = None
) -> Tensor:
    """k-means++ seeds: x (N, D) float -> (K, D) fp32 rows of ``x``.

    Seeds are drawn with probability proportional to the distance to the nearest seed so far
    (D^2 sampling). To keep this at the cost of one nearest-code pass rather than K passes,
    seeds are added in rounds that double in size, each round sampling from the distances
    left by the previous ones.
    """
    x = _normalize_if(x.float(), metric)
    first = torch.randint(x.shape[0], (1,), generator=generator, device=x.device)
    seeds = [x[first]]
    _, nearest = nearest_code(x, seeds[0], metric=metric)
    chosen = 1
    while chosen < k:
        count = min(chosen, k - chosen)
        block = x[_sample_rows(nearest, count, generator)]
        _, to_block = nearest_code(x, block, metric=metric)
        nearest = torch.minimum(nearest, to_block)
        seeds.append(block)
        chosen += count
    return torch.cat(seeds)


@torch.no_grad()
def lloyd(x: Tensor, centroids: Tensor, iters: int, *, metric: str = "l2") -> tuple[Tensor, Tensor]:
    """``iters`` Lloyd steps from ``centroids`` (K, D) on x (N, D).

    Returns centroids (K, D) fp32 and the cluster sizes (K,) fp32 of the last assignment.
    A cluster that loses all its points keeps its previous centroid.
    """
    x = _normalize_if(x.float(), metric)
    centroids = centroids.float().clone()
    k = centroids.shape[0]
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        indices, _ = nearest_code(x, centroids, metric=metric)
        counts, sums = code_counts_and_sums(x, indices, k)
        filled = counts > 0
        centroids[filled] = _normalize_if(sums[filled] / counts[filled, None], metric)
    return centroids, counts


# Spread of the jittered copies that fill a batch smaller than K, relative to the data's spread.
JITTER = 0.05


def at_least_k_rows(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """x (N, D) float, or with N < K, x and K - N jittered copies of its rows: (max(N, K), D).

    k-means on fewer rows than centroids would seed exact duplicates; of tied codes the
    nearest-code search always picks the first, so the copies would stay dead. Jittered
    copies are distinct codes next to real data, which the first EMA steps pull apart.
    """
    n = x.shape[0]
    if n >= k:
        return x
    copies = x[torch.randint(n, (k - n,), generator=generator, device=x.device)].float()
    spread = x.float().std(dim=0, keepdim=True) if n > 1 else x.float().abs() + 1.0
    noise = torch.randn(copies.shape, generator=generator, device=x.device)
    return torch.cat([x.float(), copies + JITTER * spread * noise])


def kmeans(
    x: Tensor, k: int, iters: int, *, metric: str = "l2", generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """k-means++ seeding then ``iters`` Lloyd steps: x (N, D) -> centroids (K, D), sizes (K,) fp32.

    With N < K the batch is first filled up to K rows (:func:`at_least_k_rows`), so that the
    K centroids are distinct.
    """
    x = at_least_k_rows(x, k, generator)
    return lloyd(
        x, kmeans_plus_plus(x, k, metric=metric, generator=generator), iters, metric=metric
    )
