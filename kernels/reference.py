"""PyTorch implementations of the kernels: exact, chunked, and valid on any device.

They define the contract that the Triton kernels must meet, and they are what runs on
CPU or wherever Triton is missing.
"""

from __future__ import annotations

import torch

DEFAULT_MEMORY_BUDGET = 64 * 2**20  # bytes of scratch a fallback call may allocate


def _row_chunk(n: int, k: int, budget_bytes: int) -> int:
    # The (rows x K) fp32 score block is what grows with the chunk; the rest is O(rows * D).
    per_row = max(k, 1) * 4 + 64
    return max(1, min(n, budget_bytes // per_row)) if n else 1


def nearest_code_torch(
    x: torch.Tensor,
    codebook: torch.Tensor,
    metric: str = "l2",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook row for each row of ``x``.

    Ties go to the lowest index. Extra memory stays near ``memory_budget`` bytes whatever
    N, K.

    Args:
        x: (N, D) float.
        codebook: (K, D) float.
        metric: "l2" (squared euclidean, clamped at 0) or "cosine" (1 - cos).
        memory_budget: Scratch memory to aim for, in bytes.

    Returns:
        (indices (N,) int64, distances (N,) float32).

    Raises:
        ValueError: The metric is unknown.
    """
    n, k = x.shape[0], codebook.shape[0]
    x32 = x.float()
    c32 = codebook.float()
    if metric == "cosine":
        x32 = torch.nn.functional.normalize(x32, dim=1)
        c32 = torch.nn.functional.normalize(c32, dim=1)
    elif metric != "l2":
        raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    # Centering on the codebook mean keeps ||x||^2 - 2x.e + ||e||^2 accurate for data far
    # from the origin (distances are translation invariant; cosine is already unit-norm).
    if metric == "l2" and k > 0:
        center = c32.mean(0, keepdim=True)
        x32 = x32 - center
        c32 = c32 - center
    # score(x, e) = ||e||^2 - 2 x.e = [x, 1] . [-2e, ||e||^2]: the bias rides in the matmul
    # instead of a separate pass over every (rows x K) block.
    augmented_codes = (
        torch.cat([-2.0 * c32, (c32 * c32).sum(1, keepdim=True)], dim=1).t().contiguous()
    )
    x_norm = (x32 * x32).sum(1)
    indices = torch.empty(n, dtype=torch.int64, device=x.device)
    distances = torch.empty(n, dtype=torch.float32, device=x.device)
    rows = _row_chunk(n, k, memory_budget)
    scores = torch.empty(rows, k, dtype=torch.float32, device=x.device)
    augmented_x = torch.ones(rows, x32.shape[1] + 1, dtype=torch.float32, device=x.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        augmented_x[:m, :-1].copy_(x32[start:stop])
        torch.mm(augmented_x[:m], augmented_codes, out=scores[:m])
        torch.min(scores[:m], dim=1, out=(distances[start:stop], indices[start:stop]))
    distances.add_(x_norm)
    if metric == "cosine":
        distances.mul_(0.5)  # ||a - b||^2 = 2 - 2cos for unit vectors
    distances.clamp_min_(0.0)
    return indices, distances


def code_counts_and_sums(
    z: torch.Tensor, indices: torch.Tensor, num_codes: int, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code counts and sums of the rows of ``z``.

    Args:
        z: (N, D) float.
        indices: (N,) int64 in [0, K), the code of each row.
        num_codes: K.
        deterministic: On CUDA, sort first so that the additions happen in a fixed order
            (index_add_ uses atomics).

    Returns:
        counts (K,) fp32 and sums (K, D) fp32.
    """
    z32 = z.float()
    counts = torch.bincount(indices, minlength=num_codes).to(torch.float32)
    if deterministic and z.is_cuda:
        # Sort by code, then take differences of a float64 running sum at segment ends:
        # a fixed order of additions, unlike index_add_'s atomics.
        order = torch.argsort(indices, stable=True)
        csum = torch.cumsum(z32[order].double(), 0)
        csum = torch.cat([csum.new_zeros(1, z.shape[1]), csum])
        ends = torch.cumsum(counts.to(torch.int64), 0)
        sums = (csum[ends] - csum[ends - counts.to(torch.int64)]).float()
    else:
        sums = torch.zeros(num_codes, z.shape[1], dtype=torch.float32, device=z.device)
        sums.index_add_(0, indices, z32)
    return counts, sums


def ema_update_torch(
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    z: torch.Tensor,
    indices: torch.Tensor,
    decay: float,
    eps: float = 1e-5,
    deterministic: bool = False,
) -> torch.Tensor:
    """The EMA codebook step of VQ-VAE (van den Oord et al. 2017, appendix), in place.

    N <- g N + (1-g) n;  m <- g m + (1-g) sum z;  N~ = (N + eps) / (sum N + K eps) * sum N.

    Args:
        cluster_size: N, (K,) fp32, updated in place.
        embed_sum: m, (K, D) fp32, updated in place.
        z: (N, D) float.
        indices: (N,) int64 in [0, K).
        decay: g.
        eps: The Laplace smoothing.
        deterministic: Reproducible sums on CUDA (see ``code_counts_and_sums``).

    Returns:
        The new codebook e = m / N~ as (K, D) fp32.
    """
    k = cluster_size.shape[0]
    counts, sums = code_counts_and_sums(z, indices, k, deterministic)
    cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)
    return embed_from_stats(cluster_size, embed_sum, eps)


def smoothed_cluster_size(cluster_size: torch.Tensor, eps: float) -> torch.Tensor:
    """Laplace-smoothed sizes N~ = (N + eps) / (sum N + K eps) * sum N.

    Args:
        cluster_size: N, (K,) fp32.
        eps: The smoothing.

    Returns:
        (K,) fp32, never 0, so that a code nobody picked does not divide by zero.
    """
    k = cluster_size.shape[0]
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + k * eps) * total
    return smoothed.clamp_min_(torch.finfo(torch.float32).tiny)


def embed_from_stats(
    cluster_size: torch.Tensor, embed_sum: torch.Tensor, eps: float
) -> torch.Tensor:
    """The codebook e = m / N~ from the EMA statistics.

    Args:
        cluster_size: N, (K,) fp32.
        embed_sum: m, (K, D) fp32.
        eps: The Laplace smoothing of N.

    Returns:
        (K, D) fp32.
    """
    return embed_sum / smoothed_cluster_size(cluster_size, eps).unsqueeze(1)
