"""Lookup-free quantization (LFQ).

Yu et al. 2023, "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation"
(MAGVIT-v2).

Each of d channels is quantized to its sign, -1 or +1; the implicit codebook is {-1, 1}^d with
2^d codes, and a position's code is the binary number of its bits (channel i is bit i, set
when the channel is positive). Nothing is looked up and nothing learned in the quantizer
itself, so no codebook loss and no dead-code restarts; instead an entropy penalty keeps
the codes both confident per position and diverse over the batch:

    L_entropy = w * (E_z[H(q(c | z))] - gamma * H(E_z[q(c | z)])),
    q(c | z) ∝ exp(-||z - c||^2 / t)

in nats, plus the commitment loss beta * ||z - sg[c]||^2. Because ||z - c||^2 = ||z||^2 + d
- 2 z.c, q(c | z) is a product of one Bernoulli per channel, P(bit i) = sigmoid(4 z_i / t),
so the per-position entropy is a sum of binary entropies. The batch distribution is not a
product; its entropy is computed exactly over the 2^b codes of groups of at most b =
``entropy_group_bits`` channels and summed over groups (exact with one group; an upper bound
of the joint entropy otherwise, at N * 2^b memory instead of N * 2^d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtok.quantizers.base import Quantizer, RowOutput, straight_through
from vqtok.quantizers.usage import CodeUsage, usage_stats
from vqtok.registry import register_quantizer

# Usage statistics keep a dense (K,) int64 histogram per quantizer (and so do fit-prior and
# the validation metrics): 2^24 codes (128 MiB of counts) is as far as that stays practical,
# and well inside the int32 that code files store.
MAX_BITS = 24


@dataclass
class LFQConfig:
    """Options of :class:`LFQ`.

    dim: channels D of the encoder output.
    codebook_size: K = 2^d codes, d bits per position; a linear map projects D -> d (and
        back) when d != D. None takes d = D (the paper's form, no projection); after
        construction it holds 2^d. d must lie in [1, 24].
    beta: commitment weight.
    entropy_weight: w, the weight of the entropy penalty (0 turns it off).
    codebook_entropy_weight: gamma, the weight of the batch (codebook) entropy inside it.
    temperature: t of q(c | z).
    entropy_group_bits: b, the most channels over which the batch entropy is taken jointly.
    usage_window: tokens per rank in the usage histogram.
    """

    dim: int
    codebook_size: int | None = 1024
    beta: float = 0.25
    entropy_weight: float = 0.1
    codebook_entropy_weight: float = 1.0
    temperature: float = 1.0
    entropy_group_bits: int = 10
    usage_window: int = 65536

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be positive, got {self.dim}")
        size = 2**self.dim if self.codebook_size is None else self.codebook_size
        bits = size.bit_length() - 1 if size >= 1 else -1
        if size < 2 or 2**bits != size:
            raise ValueError(f"LFQ needs a codebook_size that is a power of 2 >= 2, got {size}")
        if bits > MAX_BITS:
            source = (
                f"latent_dim {self.dim} gives" if self.codebook_size is None else "codebook_size"
            )
            raise ValueError(
                f"LFQ: {source} 2^{bits} codes, more than LFQ allows (2^{MAX_BITS}: usage "
                "statistics keep a dense histogram of every code); pass codebook_size=2^d with "
                f"d <= {MAX_BITS} (a projection maps the latent to d bits) or a smaller latent_dim"
            )
        self.codebook_size = size
        if self.beta < 0 or self.entropy_weight < 0 or self.codebook_entropy_weight < 0:
            raise ValueError("beta, entropy_weight and codebook_entropy_weight must be >= 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 1 <= self.entropy_group_bits <= 16:
            raise ValueError(
                f"entropy_group_bits must lie in [1, 16], got {self.entropy_group_bits}"
            )

    @property
    def bits(self) -> int:
        """d, the channels quantized to signs (log2 of the codebook size)."""
        return int(math.log2(self.codebook_size))


class LFQ(Quantizer):
    """Lookup-free quantizer. Codes: int64 (B, *spatial) in [0, 2^d).

    State: the projections (parameters, when D != d) and the transient usage window.
    """

    def __init__(self, config: LFQConfig) -> None:
        super().__init__(
            config, codebook_size=config.codebook_size, num_levels=1, lookup_dim=config.bits
        )
        self.register_buffer(
            "bit_values", 2 ** torch.arange(config.bits, dtype=torch.int64), persistent=False
        )
        self.usage_window = CodeUsage(self.codebook_size, config.usage_window)

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        del batch_size  # every row is quantized alike
        z = self.project_in(x)
        signs = self._signs(z.detach())
        codes = self._codes(signs)
        losses = {"commitment": self.config.beta * F.mse_loss(z, signs)}
        if self.config.entropy_weight > 0:
            losses["entropy"] = self.config.entropy_weight * self.entropy_penalty(z)
        stats = self.usage_window.step_stats(codes, record=self.learning())
        return RowOutput(self.project_out(straight_through(z, signs)), codes, losses, stats)

    @torch.no_grad()
    def encode_rows(self, x: Tensor) -> Tensor:
        return self._codes(self._signs(self.project_in(x)))

    def decode_rows(self, codes: Tensor) -> Tensor:
        bits = (codes.unsqueeze(1) & self.bit_values) != 0
        return self.project_out(bits.float() * 2 - 1)

    def usage(self) -> dict[str, float]:
        return usage_stats(self.usage_window.histogram)

    def entropy_penalty(self, z: Tensor) -> Tensor:
        """The penalty before its weight w: E[H(q(c | z))] - gamma H(E[q(c | z)]) in nats.

        Args:
            z: (N, d) fp32 latents in the sign space (after ``project_in``).

        Returns:
            () fp32, differentiable with respect to ``z``.
        """
        logits = 4 * z / self.config.temperature  # log-odds of each bit being set
        p = torch.sigmoid(logits)
        # H(Bernoulli(sigmoid(l))) = softplus(l) - p l, finite for any logit.
        per_sample = (F.softplus(logits) - p * logits).sum(dim=1).mean()
        codebook = sum(
            _entropy(self._group_probs(group).mean(dim=0))
            for group in z.split(self.config.entropy_group_bits, dim=1)
        )
        return per_sample - self.config.codebook_entropy_weight * codebook

    def _group_probs(self, z: Tensor) -> Tensor:
        """q over the 2^b sign patterns of a group of b channels: (N, b) -> (N, 2^b)."""
        b = z.shape[1]
        shifts = torch.arange(b, device=z.device)
        patterns = (torch.arange(2**b, device=z.device).unsqueeze(1) >> shifts) & 1
        corners = patterns.to(z.dtype) * 2 - 1  # (2^b, b); row c is code c's sign pattern
        # -||z - c||^2 / t up to a term constant over c
        return torch.softmax(2 * z @ corners.t() / self.config.temperature, dim=1)

    @staticmethod
    def _signs(z: Tensor) -> Tensor:
        """+1 where a channel is positive, else -1 (zero counts as negative, as its code bit 0)."""
        return torch.where(z > 0, 1.0, -1.0).to(z.dtype)

    def _codes(self, signs: Tensor) -> Tensor:
        return ((signs > 0).long() * self.bit_values).sum(dim=1)


def _entropy(p: Tensor) -> Tensor:
    """Entropy in nats of a distribution p (K,) whose entries may be 0."""
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum()


@register_quantizer("lfq")
def build_lfq(**options) -> LFQ:
    """``QUANTIZERS.create("lfq", dim=..., codebook_size=2**d, **options)``.

    See :class:`LFQConfig`.
    """
    return LFQ(LFQConfig(**options))
