"""Triton EMA codebook update: per-code sums of the batch, then the decayed, smoothed step.

Two ways to sum the rows of z that each code won:
- fast: every row adds itself to its code's row with fp32 atomics (order varies run to run);
- deterministic: rows are sorted by code and one program per (code, D slice) walks its
  segment in a fixed order, then applies the EMA step itself.
Counts come from ``torch.bincount`` (integer atomics are exact, so always reproducible).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vqtok.kernels.reference import smoothed_cluster_size


@triton.jit
def _scatter_sums_kernel(
    z_ptr, index_ptr, sums_ptr, N, D, stride_zn, stride_zd,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < N
    mask = row_ok[:, None] & (dims < D)[None, :]
    codes = tl.load(index_ptr + rows, mask=row_ok, other=0)
    z = tl.load(z_ptr + rows[:, None] * stride_zn + dims[None, :] * stride_zd, mask=mask, other=0.0)
    tl.atomic_add(sums_ptr + codes[:, None] * D + dims[None, :], z.to(tl.float32), mask=mask)


@triton.jit
def _apply_ema_kernel(
    sums_ptr, embed_sum_ptr, smoothed_ptr, codebook_ptr, K, D, decay,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    codes = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (codes < K)[:, None] & (dims < D)[None, :]
    offsets = codes[:, None] * D + dims[None, :]
    sums = tl.load(sums_ptr + offsets, mask=mask, other=0.0)
    embed_sum = tl.load(embed_sum_ptr + offsets, mask=mask, other=0.0)
    embed_sum = decay * embed_sum + (1.0 - decay) * sums
    smoothed = tl.load(smoothed_ptr + codes, mask=codes < K, other=1.0)
    tl.store(embed_sum_ptr + offsets, embed_sum, mask=mask)
    tl.store(codebook_ptr + offsets, embed_sum / smoothed[:, None], mask=mask)


@triton.jit
def _segment_ema_kernel(
    z_ptr, order_ptr, segment_start_ptr, embed_sum_ptr, smoothed_ptr, codebook_ptr,
    D, stride_zn, stride_zd, decay,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    code = tl.program_id(0)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    start = tl.load(segment_start_ptr + code)
    end = tl.load(segment_start_ptr + code + 1)
    total = tl.zeros([BLOCK_D], dtype=tl.float32)
    for r0 in range(start, end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        row_ok = r < end
        rows = tl.load(order_ptr + r, mask=row_ok, other=0)
        z = tl.load(z_ptr + rows[:, None] * stride_zn + dims[None, :] * stride_zd,
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        total += tl.sum(z.to(tl.float32), axis=0)
    offsets = code.to(tl.int64) * D + dims
    embed_sum = tl.load(embed_sum_ptr + offsets, mask=dim_ok, other=0.0)
    embed_sum = decay * embed_sum + (1.0 - decay) * total
    smoothed = tl.load(smoothed_ptr + code)
    tl.store(embed_sum_ptr + offsets, embed_sum, mask=dim_ok)
    tl.store(codebook_ptr + offsets, embed_sum / smoothed, mask=dim_ok)


def ema_update_triton(
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    z: torch.Tensor,
    indices: torch.Tensor,
    decay: float,
    eps: float,
    deterministic: bool,
) -> torch.Tensor:
    """Triton backend of ``vqtok.kernels.ema_update``; arguments already checked."""
    k, d = embed_sum.shape
    n = z.shape[0]
    if not embed_sum.is_contiguous():
        raise ValueError("embed_sum must be contiguous for the Triton backend")
    counts = torch.bincount(indices, minlength=k)
    cluster_size.mul_(decay).add_(counts.to(torch.float32), alpha=1.0 - decay)
    smoothed = smoothed_cluster_size(cluster_size, eps)
    codebook = torch.empty_like(embed_sum)
    block_d = min(64, triton.next_power_of_2(max(d, 1)))
    if deterministic:
        order = torch.argsort(indices, stable=True)
        segment_start = torch.zeros(k + 1, dtype=torch.int64, device=z.device)
        torch.cumsum(counts, 0, out=segment_start[1:])
        _segment_ema_kernel[(k, triton.cdiv(d, block_d))](
            z, order, segment_start, embed_sum, smoothed, codebook,
            d, z.stride(0), z.stride(1), decay,
            BLOCK_R=32, BLOCK_D=block_d,
        )
        return codebook
    sums = torch.zeros_like(embed_sum)
    if n:
        _scatter_sums_kernel[(triton.cdiv(n, 64), triton.cdiv(d, block_d))](
            z, indices, sums, n, d, z.stride(0), z.stride(1), BLOCK_N=64, BLOCK_D=block_d,
        )
    _apply_ema_kernel[(triton.cdiv(k, 64), triton.cdiv(d, block_d))](
        sums, embed_sum, smoothed, codebook, k, d, decay, BLOCK_K=64, BLOCK_D=block_d,
    )
    return codebook
