"""Residual FSQ: finite scalar quantization applied to successive residuals.

FSQ (Mentzer et al. 2023) on each level, stacked as in residual VQ (SoundStream, Zeghidour
et al. 2021). A level's grid has steps of 1 / (L // 2) per channel, so what it leaves over is
at most half a step; level i therefore quantizes the residual scaled up by (2 (L // 2))^i, and
its output is scaled back down, so that each level refines the previous ones on a grid that
many times finer. As in residual VQ, quantizer dropout trains every prefix of levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqtok.quantizers.base import Quantizer, RowOutput
from vqtok.quantizers.fsq import FSQ, FSQConfig
from vqtok.quantizers.residual import combine_stats, levels_kept
from vqtok.quantizers.usage import usage_stats
from vqtok.registry import register_quantizer


@dataclass
class RFSQConfig(FSQConfig):
    """Options of :class:`ResidualFSQ`: those of :class:`FSQConfig` for every level, plus

    num_levels: Q FSQ levels in the stack, all with the same ``levels``.
    quantizer_dropout: share of training samples whose z_q keeps only the first q ~ U{1..Q}
        levels.
    """

    num_levels: int = 4
    quantizer_dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be at least 1, got {self.num_levels}")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")


class ResidualFSQ(Quantizer):
    """A stack of Q FSQ levels on successive, rescaled residuals. Codes: int64 (B, Q, *spatial).

    State: the projections (parameters, when D != len(levels)) and each level's transient
    usage window; ``scales`` (Q, C) is derived from the config and not saved.
    """

    def __init__(self, config: RFSQConfig) -> None:
        channels = len(config.levels)
        super().__init__(
            config,
            codebook_size=config.codebook_size,
            num_levels=config.num_levels,
            lookup_dim=channels,
        )
        level_config = FSQConfig(
            dim=channels, levels=config.levels, usage_window=config.usage_window
        )
        self.levels = nn.ModuleList(FSQ(level_config) for _ in range(config.num_levels))
        step_ratio = torch.tensor([2 * (n // 2) for n in config.levels], dtype=torch.float32)
        powers = torch.arange(config.num_levels, dtype=torch.float32).unsqueeze(1)
        self.register_buffer("scales", step_ratio.pow(-powers), persistent=False)

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        z = self.project_in(x)
        residual = z
        values, codes, stats = [], [], []
        for level, scale in zip(self.levels, self.scales, strict=True):
            out = level.quantize_rows(residual / scale, batch_size)
            # Each level's output carries FSQ's gradient through its bound; the residual
            # handed on does not, as in residual VQ.
            value = out.z_q * scale
            residual = residual - value.detach()
            values.append(value)
            codes.append(out.codes)
            stats.append(out.stats)
        kept = levels_kept(
            self.num_levels,
            self.config.quantizer_dropout if self.learning() else 0.0,
            z.shape[0],
            batch_size,
            z.device,
        )
        quantized = sum(v * (kept > i).unsqueeze(1) for i, v in enumerate(values))
        return RowOutput(
            z_q=self.project_out(quantized),
            codes=torch.stack(codes, dim=1),
            losses={},
            stats=combine_stats(stats),
        )

    @torch.no_grad()
    def encode_rows(self, x: Tensor) -> Tensor:
        residual = self.project_in(x)
        codes = []
        for level, scale in zip(self.levels, self.scales, strict=True):
            level_codes = level.encode_rows(residual / scale)
            residual = residual - level.decode_rows(level_codes) * scale
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    def decode_rows(self, codes: Tensor) -> Tensor:
        """codes (N, q) with q <= Q: the sum of the first q levels' rescaled grid points."""
        quantized = sum(
            level.decode_rows(codes[:, i]) * self.scales[i]
            for i, level in enumerate(self.levels[: codes.shape[1]])
        )
        return self.project_out(quantized)

    def usage(self) -> dict[str, float]:
        return combine_stats([usage_stats(level.usage_window.histogram) for level in self.levels])


@register_quantizer("rfsq")
def build_rfsq(**options) -> ResidualFSQ:
    """``QUANTIZERS.create("rfsq", dim=..., levels=[8, 5, 5, 5], num_levels=4)``.

    See :class:`RFSQConfig`.
    """
    return ResidualFSQ(RFSQConfig(**options))
