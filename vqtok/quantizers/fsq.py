"""Finite scalar quantization.

Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple".

Each of a few channels is bounded and rounded to one of L_c levels; the implicit codebook is
the grid of prod(L_c) points, so there is nothing to learn, no codebook loss and no dead
codes to restart. A position's code is the mixed-radix number of its per-channel levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vqtok.quantizers.base import Quantizer, RowOutput, straight_through
from vqtok.quantizers.usage import CodeUsage, usage_stats
from vqtok.registry import register_quantizer

BOUND_EPS = 1e-3  # keeps tanh's range just wider than the outermost levels

# The paper's recommended levels (its Table 1) for target codebook sizes 2^8 .. 2^16.
PAPER_LEVELS: dict[int, tuple[int, ...]] = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}


@dataclass
class FSQConfig:
    """Options of :class:`FSQ`.

    dim: channels D of the encoder output. levels: L_c per channel. codebook_size: instead of
    ``levels``, a target size 2^8, 2^10, ..., 2^16 that picks the paper's levels (the actual
    size is prod(levels), e.g. 1000 for 1024); after construction it holds prod(levels).
    Neither given: [8, 5, 5, 5]. usage_window: tokens per rank in the usage histogram.
    """

    dim: int
    levels: tuple[int, ...] | None = None
    codebook_size: int | None = None
    usage_window: int = 65536

    def __post_init__(self) -> None:
        if self.levels is None:
            target = 2**10 if self.codebook_size is None else self.codebook_size
            if target not in PAPER_LEVELS:
                raise ValueError(
                    f"FSQ codebook_size must be one of {sorted(PAPER_LEVELS)}, or pass levels"
                )
            self.levels = PAPER_LEVELS[target]
        self.levels = tuple(int(n) for n in self.levels)
        if self.dim < 1 or not self.levels or min(self.levels) < 2:
            raise ValueError(
                f"need dim >= 1 and at least one level count >= 2; got {self.dim}, {self.levels}"
            )
        size = math.prod(self.levels)
        if (
            self.codebook_size not in (None, size)
            and PAPER_LEVELS.get(self.codebook_size) != self.levels
        ):
            raise ValueError(
                f"levels {list(self.levels)} give {size} codes, "
                f"not codebook_size={self.codebook_size}"
            )
        self.codebook_size = size


class FSQ(Quantizer):
    """Finite scalar quantizer. Codes: int64 (B, *spatial) in [0, prod(levels))."""

    def __init__(self, config: FSQConfig) -> None:
        super().__init__(
            config, codebook_size=config.codebook_size, num_levels=1, lookup_dim=len(config.levels)
        )
        levels = torch.tensor(config.levels, dtype=torch.int64)
        basis = torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.usage_window = CodeUsage(self.codebook_size, config.usage_window)

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        del batch_size  # every row is quantized alike
        bounded = self._bound(self.project_in(x))
        rounded = straight_through(bounded, bounded.round())
        codes = self._codes(rounded.detach())
        stats = self.usage_window.step_stats(codes, record=self.learning())
        return RowOutput(self.project_out(rounded / self._half_width()), codes, {}, stats)

    @torch.no_grad()
    def encode_rows(self, x: Tensor) -> Tensor:
        return self._codes(self._bound(self.project_in(x)).round())

    def decode_rows(self, codes: Tensor) -> Tensor:
        digits = (codes.unsqueeze(1) // self.basis) % self.levels
        return self.project_out((digits - self._half_width()).float() / self._half_width())

    def usage(self) -> dict[str, float]:
        return usage_stats(self.usage_window.histogram)

    def _half_width(self) -> Tensor:
        return self.levels // 2

    def _bound(self, z: Tensor) -> Tensor:
        """Squash each channel so that rounding gives its L integers -(L//2) .. L - 1 - L//2.

        Even L needs a half-step offset (its levels are asymmetric); the tanh is shifted so
        that z = 0 still maps to 0.
        """
        levels = self.levels.float()
        half = (levels - 1) * (1 + BOUND_EPS) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _codes(self, rounded: Tensor) -> Tensor:
        """Rounded levels (N, C) from :meth:`_bound` -> mixed-radix codes (N,) int64."""
        digits = rounded.long() + self._half_width()
        return (digits * self.basis).sum(1)


@register_quantizer("fsq")
def build_fsq(**options) -> FSQ:
    """``QUANTIZERS.create("fsq", dim=..., levels=[8, 5, 5, 5])``.

    Or ``(dim=..., codebook_size=1024)``; see :class:`FSQConfig`.
    """
    return FSQ(FSQConfig(**options))
