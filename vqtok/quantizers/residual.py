"""Residual vector quantization (SoundStream, Zeghidour et al. 2021).

Level i quantizes what levels 0..i-1 left over, so each level refines the previous ones and
the first q levels alone already give a coarse latent. Quantizer dropout trains exactly
that: in training a sample keeps only a random number of leading levels, so that
``decode(codes[:, :q])`` is a good latent for every q.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from vqtok.quantizers.base import Quantizer, RowOutput, straight_through
from vqtok.quantizers.rotation import rotate_through
from vqtok.quantizers.usage import usage_stats
from vqtok.quantizers.vq import VectorQuantizer, VQConfig
from vqtok.registry import register_quantizer


@dataclass
class RVQConfig(VQConfig):
    """Options of :class:`ResidualVQ`: those of :class:`VQConfig` for every level, plus

    num_levels: Q quantizers in the stack.
    quantizer_dropout: share of training samples whose z_q keeps only the first q ~ U{1..Q}
        levels (every level still quantizes, and learns from, every sample).
    ``codebook_dim`` projects once, before the stack, so all levels share one space;
    ``metric`` must be "l2" (residuals of unit vectors are not unit vectors).
    ``rotation_trick`` rotates the latent onto the sum of the kept levels' code vectors.
    """

    num_levels: int = 4
    quantizer_dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be at least 1, got {self.num_levels}")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")
        if self.metric != "l2":
            raise ValueError("residual VQ needs metric='l2'")
        if self.center:
            # Each level would centre its own residual and lose the mean from z_q.
            raise ValueError("residual VQ does not centre latents (center=True)")

    def level_config(self) -> VQConfig:
        """The config of one level: this one's VQ options, in the shared lookup space."""
        options = {f.name: getattr(self, f.name) for f in fields(VQConfig)}
        # A level's output only gives its value (see ResidualVQ.quantize_rows): the gradient
        # estimator is the stack's, so the levels keep the plain copy.
        return VQConfig(
            **{**options, "dim": self.lookup_dim, "codebook_dim": None, "rotation_trick": False}
        )


class ResidualVQ(Quantizer):
    """A stack of Q VQ levels on successive residuals. Codes: int64 (B, Q, *spatial)."""

    def __init__(self, config: RVQConfig) -> None:
        super().__init__(
            config,
            codebook_size=config.codebook_size,
            num_levels=config.num_levels,
            lookup_dim=config.lookup_dim,
        )
        self.levels = nn.ModuleList(
            VectorQuantizer(config.level_config()) for _ in range(config.num_levels)
        )

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        z = self.project_in(x)
        residual = z
        values, codes, outputs = [], [], []
        for level in self.levels:
            out = level.quantize_rows(residual, batch_size)
            value = out.z_q.detach()  # the forward value of a level's output is its code vector
            residual = residual - value
            values.append(value)
            codes.append(out.codes)
            outputs.append(out)
        kept = self._levels_kept(z.shape[0], batch_size, z.device)
        quantized = sum(v * (kept > i).unsqueeze(1) for i, v in enumerate(values))
        through = rotate_through if self.config.rotation_trick else straight_through
        return RowOutput(
            z_q=self.project_out(through(z, quantized)),
            codes=torch.stack(codes, dim=1),
            losses=sum_losses(o.losses for o in outputs),
            stats=combine_stats([o.stats for o in outputs]),
        )

    @torch.no_grad()
    def encode_rows(self, x: Tensor) -> Tensor:
        residual = self.project_in(x)
        codes = []
        for level in self.levels:
            level_codes = level.encode_rows(residual)
            residual = residual - level.decode_rows(level_codes)
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    def decode_rows(self, codes: Tensor) -> Tensor:
        """codes (N, q) with q <= Q: the sum of the first q levels' code vectors."""
        quantized = sum(
            level.decode_rows(codes[:, i]) for i, level in enumerate(self.levels[: codes.shape[1]])
        )
        return self.project_out(quantized)

    def usage(self) -> dict[str, float]:
        return combine_stats(
            [
                usage_stats(level.usage_window.histogram, self.config.dead_code_threshold)
                for level in self.levels
            ]
        )

    def _levels_kept(self, rows: int, batch_size: int, device: torch.device) -> Tensor:
        return levels_kept(
            self.num_levels,
            self.config.quantizer_dropout if self.learning() else 0.0,
            rows,
            batch_size,
            device,
        )


def levels_kept(
    num_levels: int, dropout: float, rows: int, batch_size: int, device: torch.device
) -> Tensor:
    """Levels each row keeps (N,) int64: Q, or for a share ``dropout`` of the samples a
    per-sample q ~ U{1..Q}; rows are ``batch_size`` samples' in order."""
    kept = torch.full((batch_size,), num_levels, dtype=torch.int64, device=device)
    if dropout > 0:
        dropped = torch.rand(batch_size, device=device) < dropout
        kept[dropped] = torch.randint(1, num_levels + 1, (int(dropped.sum()),), device=device)
    return kept.repeat_interleave(rows // batch_size)


def sum_losses(per_level: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Each loss summed over the levels that have it."""
    total: dict[str, Tensor] = {}
    for losses in per_level:
        for name, value in losses.items():
            total[name] = total[name] + value if name in total else value
    return total


def combine_stats(per_level: list[dict[str, float]]) -> dict[str, float]:
    """Means over levels (dead codes and restarts summed), plus each level's perplexity."""
    combined: dict[str, float] = {}
    for name in per_level[0]:
        values = [s[name] for s in per_level]
        summed = name in ("dead_codes", "restarted_codes", "restarted_total")
        combined[name] = sum(values) if summed else sum(values) / len(values)
    for i, s in enumerate(per_level):
        combined[f"perplexity/level{i}"] = s["perplexity"]
    return combined


@register_quantizer("rvq")
def build_rvq(**options) -> ResidualVQ:
    """``QUANTIZERS.create("rvq", dim=..., codebook_size=..., num_levels=..., **options)``.

    See :class:`RVQConfig`.
    """
    return ResidualVQ(RVQConfig(**options))
