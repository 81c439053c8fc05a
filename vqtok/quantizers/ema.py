"""The EMA codebook step, the same on one process and under torch.distributed.

N_i <- g N_i + (1-g) n_i;  m_i <- g m_i + (1-g) sum_j z_ij;  e_i = m_i / N~_i (Laplace-smoothed).
On one process the fused kernel ``vqtok.kernels.ema_update`` does it all. With several
ranks the batch counts n_i and sums are all-reduced first, so that every rank applies the
same update to the same state and the codebooks stay bit-identical.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqtok.kernels import code_counts_and_sums, ema_update, embed_from_stats
from vqtok.quantizers.distributed import all_reduce_sum, world_size


@torch.no_grad()
def ema_codebook_step(
    cluster_size: Tensor,
    embed_sum: Tensor,
    z: Tensor,
    indices: Tensor,
    *,
    decay: float,
    eps: float,
    backend: str = "auto",
) -> Tensor:
    """Update ``cluster_size`` (K,) and ``embed_sum`` (K, D) fp32 in place from z (N, D) and
    indices (N,) int64; returns the new codebook (K, D) fp32."""
    if world_size() == 1:
        # indices come from nearest_code: skip the range check's host sync on each step
        return ema_update(
            cluster_size,
            embed_sum,
            z,
            indices,
            decay=decay,
            eps=eps,
            backend=backend,
            check_indices=False,
        )
    counts, sums = code_counts_and_sums(z, indices, cluster_size.shape[0])
    all_reduce_sum(counts, sums)
    cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)
    return embed_from_stats(cluster_size, embed_sum, eps)
