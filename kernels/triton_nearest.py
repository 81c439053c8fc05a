"""Triton nearest-code search: stream codebook tiles, keep a running (min, argmin) per row.

One program owns BLOCK_N rows of x. It walks the codebook in BLOCK_K tiles, in order, and
for each tile accumulates x . e over BLOCK_D slices in fp32. The N x K distance matrix is
never written. Ties go to the lowest index: within a tile through ``tl.min``'s left tie
break, across tiles through a strict ``<``, so the result equals ``torch.argmin``'s.

Precision: ||x||^2 - 2 x.e + ||e||^2 cancels badly when x and e lie far from the origin, so
both are shifted by the codebook mean first (the codebook in the wrapper, x on load).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs() -> list[triton.Config]:
    if _INTERPRET:  # autotuning under the interpreter only costs time
        return [triton.Config({"BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4)]
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (128, 64, 4, 3),
            (128, 128, 8, 3),
            (64, 128, 4, 3),
            (256, 64, 8, 3),
            (128, 32, 4, 4),
        ]
    ]


@triton.jit
def _load_shifted_rows(
    x_ptr, center_ptr, rows, row_ok, d0, D, stride_xn, stride_xd, BLOCK_D: tl.constexpr
):
    """x[rows, d0:d0+BLOCK_D] - center as fp32, zero outside the matrix."""
    dims = d0 + tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    xs = tl.load(x_ptr + rows[:, None] * stride_xn + dims[None, :] * stride_xd,
                 mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
    center = tl.load(center_ptr + dims, mask=dim_ok, other=0.0)
    return tl.where(dim_ok[None, :], xs - center[None, :], 0.0)


@triton.autotune(configs=_configs(), key=["K", "D", "BLOCK_D", "IEEE"])
@triton.jit
def _nearest_code_kernel(
    x_ptr, codebook_ptr, code_norm_ptr, center_ptr, index_ptr, distance_ptr,
    N, K, D,
    stride_xn, stride_xd, stride_ck, stride_cd,
    BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N

    x_norm = tl.zeros([BLOCK_N], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        xs = _load_shifted_rows(
            x_ptr, center_ptr, rows, row_ok, d0, D, stride_xn, stride_xd, BLOCK_D
        )
        x_norm += tl.sum(xs * xs, axis=1)

    best = tl.full([BLOCK_N], float("inf"), dtype=tl.float32)
    best_index = tl.zeros([BLOCK_N], dtype=tl.int64)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        code_ok = codes < K
        dot = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            xs = _load_shifted_rows(
                x_ptr, center_ptr, rows, row_ok, d0, D, stride_xn, stride_xd, BLOCK_D
            )
            dims = d0 + tl.arange(0, BLOCK_D)
            dim_ok = dims < D
            cs = tl.load(codebook_ptr + codes[None, :] * stride_ck + dims[:, None] * stride_cd,
                         mask=code_ok[None, :] & dim_ok[:, None], other=0.0)
            if IEEE:
                dot = tl.dot(xs, cs, dot, input_precision="ieee")
            else:  # half-precision inputs: tensor cores, fp32 accumulation
                dot = tl.dot(xs.to(cs.dtype), cs, dot)
        code_norm = tl.load(code_norm_ptr + codes, mask=code_ok, other=0.0)
        score = code_norm[None, :] - 2.0 * dot
        score = tl.where(code_ok[None, :], score, float("inf"))
        tile_best, tile_index = tl.min(
            score, axis=1, return_indices=True, return_indices_tie_break_left=True
        )
        better = tile_best < best  # strict: an earlier tile keeps a tie
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, tile_index.to(tl.int64) + k0, best_index)

    distance = tl.maximum(best + x_norm, 0.0)
    tl.store(index_ptr + rows, best_index, mask=row_ok)
    tl.store(distance_ptr + rows, distance, mask=row_ok)


def nearest_code_triton(
    x: torch.Tensor, codebook: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton backend of ``vqtok.kernels.nearest_code``; arguments already checked."""
    n, d = x.shape
    k = codebook.shape[0]
    half = x.dtype == codebook.dtype and x.dtype in (torch.float16, torch.bfloat16)
    if metric == "cosine":
        # Cosine distance is half the squared L2 distance of unit vectors.
        x = torch.nn.functional.normalize(x.float(), dim=1)
        codebook = torch.nn.functional.normalize(codebook.float(), dim=1)
        half = False
    if half:
        # Products of half-precision values are exact in fp32; shifting would round them
        # again, so half inputs go to the tensor cores as they are.
        center = torch.zeros(d, dtype=torch.float32, device=x.device)
        shifted = codebook.contiguous()
    else:
        x = x.float() if x.dtype == torch.float64 else x
        c32 = codebook.float()
        center = c32.mean(0) if metric == "l2" else torch.zeros_like(c32[0])
        shifted = (c32 - center).contiguous()
    code_norm = shifted.float().pow(2).sum(1)
    indices = torch.empty(n, dtype=torch.int64, device=x.device)
    distances = torch.empty(n, dtype=torch.float32, device=x.device)
    block_d = min(64, max(16, triton.next_power_of_2(d)))
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _nearest_code_kernel[grid](
        x, shifted, code_norm, center, indices, distances,
        n, k, d,
        x.stride(0), x.stride(1), shifted.stride(0), shifted.stride(1),
        BLOCK_D=block_d, IEEE=not half,
    )
    if metric == "cosine":
        distances.mul_(0.5)
    return indices, distances
