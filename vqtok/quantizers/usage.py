"""Exact code usage over a sliding window of recent tokens.

Each rank keeps the last ``window`` codes it produced in a ring buffer. At every training
step the ranks' histograms of their rings are summed, so every rank holds the same global
histogram; from it come the logged statistics and the dead-code decision of the VQ layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqtok.quantizers.distributed import all_reduce_sum, world_size


def usage_stats(histogram: Tensor, dead_below: float = 1.0) -> dict[str, float]:
    """Statistics of a code histogram (K,) of counts.

    used_fraction: share of codes seen at least once; dead_codes: codes with fewer than
    ``dead_below`` hits; entropy_bits: empirical entropy of the code distribution;
    perplexity: 2 ** entropy_bits (K when all codes are equally used).
    """
    counts = histogram.double()
    total = float(counts.sum())
    k = counts.numel()
    if total == 0:
        return {
            "used_fraction": 0.0,
            "dead_codes": float(k),
            "entropy_bits": 0.0,
            "perplexity": 1.0,
        }
    p = counts[counts > 0] / total
    entropy_bits = float(-(p * p.log2()).sum())
    return {
        "used_fraction": float((counts > 0).sum()) / k,
        "dead_codes": float((counts < dead_below).sum()),
        "entropy_bits": entropy_bits,
        "perplexity": math.pow(2.0, entropy_bits),
    }


class CodeUsage(nn.Module):
    """Ring buffer of the last ``window`` codes of this rank and the global histogram.

    The state is transient: the histogram is a non-persistent buffer, and the ring is not a
    buffer at all, because it differs between ranks and DistributedDataParallel's
    ``broadcast_buffers`` would overwrite it with rank 0's.
    """

    def __init__(self, num_codes: int, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"usage window must be at least 1 token, got {window}")
        self.num_codes = num_codes
        self.window = window
        self.register_buffer(
            "histogram", torch.zeros(num_codes, dtype=torch.int64), persistent=False
        )
        self._ring = torch.zeros(0, dtype=torch.int64)
        self._position = 0
        self._filled = 0

    @torch.no_grad()
    def record(self, codes: Tensor) -> None:
        """Add this step's codes (N,) int64 and refresh the global histogram (a collective)."""
        if self._ring.device != codes.device or self._ring.numel() != self.window:
            self._ring = torch.zeros(self.window, dtype=torch.int64, device=codes.device)
            self._position = self._filled = 0
        recent = codes.reshape(-1)[-self.window :]
        head = min(recent.numel(), self.window - self._position)
        self._ring[self._position : self._position + head] = recent[:head]
        self._ring[: recent.numel() - head] = recent[head:]
        self._position = (self._position + recent.numel()) % self.window
        self._filled = min(self._filled + recent.numel(), self.window)
        self.histogram.copy_(torch.bincount(self._ring[: self._filled], minlength=self.num_codes))
        all_reduce_sum(self.histogram)

    def step_stats(
        self, codes: Tensor, *, record: bool, dead_below: float = 1.0
    ) -> dict[str, float]:
        """Statistics for a forward that produced ``codes`` (N,) int64.

        With ``record`` (training) the codes join the window and the stats are the global
        window's; otherwise they describe this batch alone and nothing is communicated.
        """
        if record:
            self.record(codes)
            return usage_stats(self.histogram, dead_below)
        return usage_stats(torch.bincount(codes.reshape(-1), minlength=self.num_codes), dead_below)

    def window_full(self) -> bool:
        """True on every rank alike once all ranks' windows are full.

        Read off the global histogram.
        """
        return int(self.histogram.sum()) >= self.window * world_size()

    def clear(self) -> None:
        """Forget the window (after codes were re-seeded, their old counts no longer apply)."""
        self._position = 0
        self._filled = 0
        self.histogram.zero_()
