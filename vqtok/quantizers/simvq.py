"""SimVQ: vector quantization over a frozen random codebook seen through one learned linear map.

Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
Linear Layer".

The codes are the rows of C W^T, where C (K, C) is drawn at random once and never trained and
W (C, C) is a learned linear map. The codebook and commitment losses act on the projected
codebook, so every step's gradient moves W, and with it every code at once, not only the
codes that were picked: there are no dead codes to restart and no EMA statistics to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.kernels import nearest_code
from vqtok.quantizers.base import Quantizer, RowOutput, straight_through
from vqtok.quantizers.usage import CodeUsage, usage_stats
from vqtok.registry import register_quantizer


@dataclass
class SimVQConfig:
    """Options of :class:`SimVQ`.

    dim: channels D of the encoder output. codebook_size: K codes.
    codebook_dim: look codes up in this smaller dimension (linear projections in and out);
        None looks them up in ``dim``.
    beta: commitment weight (the codebook loss has weight 1).
    seed: seeds the frozen codebook C, so that every rank of a distributed run draws the
        same one without communicating (it is also saved in the state dict).
    usage_window: tokens per rank in the usage histogram.
    backend: kernel backend for ``vqtok.kernels`` ("auto", "torch" or "triton").
    """

    dim: int
    codebook_size: int = 1024
    codebook_dim: int | None = None
    beta: float = 0.25
    seed: int = 0
    usage_window: int = 65536
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.dim < 1 or self.codebook_size < 1:
            raise ValueError(
                f"dim and codebook_size must be positive; got {self.dim}, {self.codebook_size}"
            )
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be positive or None, got {self.codebook_dim}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @property
    def lookup_dim(self) -> int:
        """The dimension codes live in."""
        return self.codebook_dim or self.dim


class SimVQ(Quantizer):
    """SimVQ layer. Codes: int64 (B, *spatial).

    State: ``frozen_codebook`` C (K, C) fp32, a buffer (no gradient, never updated), and
    ``linear`` W, an ``nn.Linear(C, C, bias=False)`` initialised to the identity so that the
    codes start as the random codebook; C = ``config.lookup_dim``.
    """

    def __init__(self, config: SimVQConfig) -> None:
        super().__init__(
            config, codebook_size=config.codebook_size, num_levels=1, lookup_dim=config.lookup_dim
        )
        k, c = config.codebook_size, config.lookup_dim
        generator = torch.Generator().manual_seed(config.seed)
        self.register_buffer("frozen_codebook", torch.randn(k, c, generator=generator))
        self.linear = nn.Linear(c, c, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(c))
        self.usage_window = CodeUsage(k, config.usage_window)

    def codebook(self) -> Tensor:
        """The codes C W^T, (K, C) fp32, differentiable with respect to W."""
        return self.linear(self.frozen_codebook)

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        del batch_size  # every row is quantized alike
        z = self.project_in(x)
        codebook = self.codebook()
        indices, _ = nearest_code(z.detach(), codebook.detach(), backend=self.config.backend)
        e = F.embedding(indices, codebook)
        losses = {
            "commitment": self.config.beta * F.mse_loss(z, e.detach()),
            "codebook": F.mse_loss(z.detach(), e),
        }
        stats = self.usage_window.step_stats(indices, record=self.learning())
        return RowOutput(self.project_out(straight_through(z, e)), indices, losses, stats)

    @torch.no_grad()
    def encode_rows(self, x: Tensor) -> Tensor:
        indices, _ = nearest_code(self.project_in(x), self.codebook(), backend=self.config.backend)
        return indices

    def decode_rows(self, codes: Tensor) -> Tensor:
        return self.project_out(F.embedding(codes, self.codebook()))

    def usage(self) -> dict[str, float]:
        return usage_stats(self.usage_window.histogram)


@register_quantizer("simvq")
def build_simvq(**options) -> SimVQ:
    """``QUANTIZERS.create("simvq", dim=..., codebook_size=..., **options)``.

    See :class:`SimVQConfig`.
    """
    return SimVQ(SimVQConfig(**options))
