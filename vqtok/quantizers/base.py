"""The interface every quantizer meets, and the layout plumbing they share.

A quantizer consumes encoder outputs ``z: (B, D, *spatial)`` and works on rows ``(N, D)``
with ``N = B * prod(spatial)``. The base class does the reshaping and makes the quantizer an
fp32 island under autocast, so subclasses only implement the row-wise operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What a quantizer's forward returns.

    z_q: (B, D, *spatial) float32; forward value is the quantized latent, gradient flows
        straight through to the encoder output.
    codes: int64 (B, *spatial) for one level, (B, Q, *spatial) for Q levels.
    losses: scalar tensors, already weighted; add them to the training loss.
    stats: plain floats for logging (perplexity, used_fraction, dead_codes, entropy_bits).
    """

    z_q: Tensor
    codes: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, float]


@dataclass
class RowOutput:
    """A quantizer's result on rows: z_q (N, D) fp32, codes (N,) or (N, Q) int64."""

    z_q: Tensor
    codes: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, float]


def straight_through(z: Tensor, quantized: Tensor) -> Tensor:
    """Forward value ``quantized``; the gradient at the output is copied to ``z``."""
    return z + (quantized - z).detach()


def to_rows(z: Tensor) -> Tensor:
    """(B, D, *spatial) -> (B * prod(spatial), D), channels last."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def from_rows(rows: Tensor, batch: int, spatial: tuple[int, ...]) -> Tensor:
    """(N, C) -> (B, C, *spatial), the inverse of :func:`to_rows`."""
    return rows.reshape(batch, *spatial, rows.shape[-1]).movedim(-1, 1)


def projection(d_in: int, d_out: int) -> nn.Module:
    """A linear map d_in -> d_out on rows, or identity when the sizes agree."""
    return nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out)


class Quantizer(nn.Module):
    """Base class: maps encoder outputs to discrete codes and back.

    ``config`` is the subclass's config dataclass (it has ``dim``); codes are looked up in
    ``lookup_dim`` channels, between the projections ``project_in`` (D -> lookup_dim) and
    ``project_out`` (identities when the two agree). Subclasses implement ``quantize_rows``,
    ``encode_rows``, ``decode_rows`` and ``usage``.
    """

    def __init__(
        self, config: Any, *, codebook_size: int, num_levels: int, lookup_dim: int
    ) -> None:
        super().__init__()
        self.config = config
        self.dim: int = config.dim
        self.codebook_size = codebook_size
        self.num_levels = num_levels
        self.project_in = projection(self.dim, lookup_dim)
        self.project_out = projection(lookup_dim, self.dim)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z: (B, D, *spatial) float of any dtype. Runs in fp32 whatever the autocast state."""
        self._check_latent(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            out = self.quantize_rows(to_rows(z.float()), batch_size=z.shape[0])
        batch, spatial = z.shape[0], tuple(z.shape[2:])
        return QuantizerOutput(
            z_q=from_rows(out.z_q, batch, spatial),
            codes=self._codes_from_rows(out.codes, batch, spatial),
            losses=out.losses,
            stats=out.stats,
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """z: (B, D, *spatial) float -> codes int64 (B, *spatial) or (B, Q, *spatial).

        Inference only: no codebook state changes and no collectives.
        """
        self._check_latent(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self.encode_rows(to_rows(z.float()))
        return self._codes_from_rows(codes, z.shape[0], tuple(z.shape[2:]))

    def decode(self, codes: Tensor) -> Tensor:
        """codes int64 (B, *spatial), or (B, q, *spatial) with q <= Q levels -> (B, D, *spatial)
        fp32."""
        if self.num_levels == 1:
            batch, spatial = codes.shape[0], tuple(codes.shape[1:])
            rows = codes.reshape(-1)
        else:
            if codes.dim() < 2 or not 1 <= codes.shape[1] <= self.num_levels:
                raise ValueError(
                    f"codes must be (B, q, *spatial) with 1 <= q <= {self.num_levels}; "
                    f"got {tuple(codes.shape)}"
                )
            batch, spatial = codes.shape[0], tuple(codes.shape[2:])
            rows = to_rows(codes)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            return from_rows(self.decode_rows(rows.long()), batch, spatial)

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        """x: (N, D) fp32, rows of ``batch_size`` samples in order -> RowOutput.

        May update codebook state when ``self.learning()``.
        """
        raise NotImplementedError

    def encode_rows(self, x: Tensor) -> Tensor:
        """x: (N, D) fp32 -> codes (N,) or (N, Q) int64, without side effects."""
        raise NotImplementedError

    def decode_rows(self, codes: Tensor) -> Tensor:
        """codes (N,) or (N, q) int64 -> (N, D) fp32."""
        raise NotImplementedError

    def usage(self) -> dict[str, float]:
        """Code usage over the recent training window (see :mod:`vqtok.quantizers.usage`)."""
        raise NotImplementedError

    def learning(self) -> bool:
        """True when this forward should update codebook state: training mode with grad on.

        Eval mode and no_grad inference never touch state, so they never run a collective.
        """
        return self.training and torch.is_grad_enabled()

    def _check_latent(self, z: Tensor) -> None:
        if z.dim() < 3 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, *spatial); got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"z must be floating point, got {z.dtype}")

    def _codes_from_rows(self, codes: Tensor, batch: int, spatial: tuple[int, ...]) -> Tensor:
        if codes.dim() == 1:
            return codes.reshape(batch, *spatial)
        return from_rows(codes, batch, spatial)
