"""The few collectives that keep codebook state identical on every rank.

Each helper is a no-op outside an initialized process group of more than one rank, so the
quantizers call them unconditionally. Callers must reach them on every rank in the same
order (the quantizers only do so in training forwards, see ``Quantizer.learning``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Ranks in the default process group; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_rank0() -> bool:
    return world_size() == 1 or dist.get_rank() == 0


def all_reduce_sum(*tensors: Tensor) -> None:
    """Sum each tensor over ranks, in place, in one collective per dtype."""
    if world_size() == 1:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for t, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
            t.copy_(part.view_as(t))


def broadcast_from_rank0(tensor: Tensor) -> Tensor:
    """Overwrite ``tensor`` on every rank with rank 0's values, in place; returns it."""
    if world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor
