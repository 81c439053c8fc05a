"""The two hot operations of a VQ-VAE: nearest-code search and the EMA codebook update.

Each has a Triton kernel for CUDA tensors and a PyTorch implementation that gives the same
answer on any device. ``backend="auto"`` picks Triton for CUDA tensors when it imports;
the environment variable ``VQTOK_KERNEL_BACKEND=torch|triton`` overrides the choice.
"""

from __future__ import annotations

from vqtok.kernels.dispatch import (
    available_backends,
    choose_backend,
    ema_update,
    nearest_code,
    triton_available,
)
from vqtok.kernels.reference import DEFAULT_MEMORY_BUDGET, code_counts_and_sums, embed_from_stats

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "available_backends",
    "choose_backend",
    "code_counts_and_sums",
    "ema_update",
    "embed_from_stats",
    "nearest_code",
    "triton_available",
]
