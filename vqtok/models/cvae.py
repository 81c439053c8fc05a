"""The conditional VAE (Kingma et al. 2014; Sohn et al. 2015): q(z|x,c), p(x|z,c), and either
the prior p(z) (z and c independent) or a learned prior p(z|c) (dependent), minimizing, as
derived in the lecture,

    -E_q [log p(x|z,c)] + beta D_KL(q(z|x,c) || p(z|c))   (dependent case)
    -E_q [log p(x|z,c)] + beta D_KL(q(z|x,c) || p(z))     (independent case).

The condition c is a one-hot class (``num_classes`` values) or any (B, num_classes) float
vector of attributes; integer labels (B,) are one-hot encoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtok.models.vae import VAE, Prior
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_nets import mlp


class ConditionalVAE(VAE):
    """A flat VAE whose encoder, decoder and (with ``learned_prior``) prior see c."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config, condition=config.num_classes)
        width = config.hidden[-1] if config.hidden else config.latent_dim
        self.prior_net = mlp([config.num_classes, width, 2 * config.latent_dim]) if config.learned_prior else None

    def condition(self, c: Tensor | None) -> Tensor:
        """Labels (B,) int -> one-hot (B, M) float; (B, M) float vectors pass through."""
        if c is None:
            raise ValueError("a conditional VAE needs the condition c (labels or attribute vectors)")
        if c.dim() == 1:
            if c.is_floating_point():
                raise ValueError("labels must be integers; attribute vectors must be (B, M)")
            return F.one_hot(c.long(), self.config.num_classes).float()
        if c.shape[1] != self.config.num_classes:
            raise ValueError(f"condition vectors need {self.config.num_classes} values, got {c.shape[1]}")
        return c.float()

    def prior(self, c: Tensor | None) -> Prior:
        if self.prior_net is None:
            return None
        mu, logvar = self.prior_net(c).chunk(2, dim=1)
        return mu, logvar

    def posterior(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super().posterior(x, self.condition(c))

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        return super().forward(x, self.condition(c))

    @torch.no_grad()
    def sample(self, n: int, c: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        """Conditional samples: c holds n labels (or (n, M) vectors); x ~ mean p(x|z,c), z ~ p(z[|c])."""
        c = self.condition(c)
        if c.shape[0] != n:
            raise ValueError(f"need one condition per sample: {n} samples, {c.shape[0]} conditions")
        return super().sample(n, c, size)

    def log_importance_weights(self, x: Tensor, samples: int, c: Tensor | None = None) -> Tensor:
        return super().log_importance_weights(x, samples, self.condition(c))

    def log_prior_weights(self, x: Tensor, samples: int, c: Tensor | None = None) -> Tensor:
        return super().log_prior_weights(x, samples, self.condition(c))

    @torch.no_grad()
    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return super().encode(x, self.condition(c))

    def decode(self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        return super().decode(z, self.condition(c), size)
