"""Dead-code restart: move unused codes onto recent encoder outputs.

A restarted code gets a new vector and its EMA statistics are reset *together*
(size 1, sum = the new vector). Resetting only the vector, as EnCodec does, is undone by
the next EMA step, which recomputes e = m / N from the stale statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqtok.quantizers.distributed import broadcast_from_rank0, is_rank0
from vqtok.quantizers.kmeans import at_least_k_rows


@torch.no_grad()
def draw_replacements(
    recent: Tensor, count: int, generator: torch.Generator | None = None
) -> Tensor:
    """``count`` rows of ``recent`` (N, D) chosen at random on rank 0 and broadcast.

    Returns (count, D) fp32.

    Rows are drawn without replacement. When fewer rows than ``count`` are at hand (audio
    at 50 tokens per second can bring 200 latents to re-seed 1000 dead codes), jittered
    copies make up the rest: exact copies would be tied codes, of which the nearest-code
    search always picks the first, so they would stay dead.
    """
    out = torch.empty(count, recent.shape[1], dtype=torch.float32, device=recent.device)
    if is_rank0():
        pool = at_least_k_rows(recent.float(), count, generator)
        rows = torch.randperm(pool.shape[0], generator=generator, device="cpu")[:count]
        out.copy_(pool[rows.to(pool.device)])
    return broadcast_from_rank0(out)


@torch.no_grad()
def restart_codes(
    dead: Tensor,
    replacements: Tensor,
    codebook: Tensor,
    cluster_size: Tensor | None = None,
    embed_sum: Tensor | None = None,
) -> None:
    """Set codebook rows ``dead`` (bool (K,)) to ``replacements`` (M, D), M = dead.sum(), in place.

    With EMA statistics given, the same rows get cluster_size 1 and embed_sum = the new vector,
    so that e = m / N keeps the new vector after the next EMA step.
    """
    codebook[dead] = replacements.to(codebook.dtype)
    if cluster_size is not None and embed_sum is not None:
        cluster_size[dead] = 1.0
        embed_sum[dead] = replacements
