"""The conditional VAE (Kingma et al. 2014; Sohn et al. 2015): q(z|x,c), p(x|z,c), and either
the prior p(z) (z and c independent) or a learned prior p(z|c) (dependent), minimizing the
conditional negative ELBO of Sohn et al. (2015) with the KL weighted by beta (Higgins et al.
2017),

    -E_q [log p(x|z,c)] + beta D_KL(q(z|x,c) || p(z|c))   (dependent case)
    -E_q [log p(x|z,c)] + beta D_KL(q(z|x,c) || p(z))     (independent case).

The condition c is a one-hot class (``num_classes`` values) or any (B, num_classes) float
vector of attributes; integer labels (B,) are one-hot encoded. Flat networks append c to
their input features; conv networks (1D/2D/3D, any input size) append it as constant
channels to the encoder's input x and to the decoder's input z. The learned prior's
(mu, logvar) come from c alone: one Gaussian per latent unit for flat latents, one per
channel shared by every position for conv latents (B, K, *spatial). Flat latents may take a
mixture of ``prior_components`` diagonal Gaussians instead: a class's posteriors rarely fill
one Gaussian, and prior samples that land between them decode to no class in particular.
The KL to a mixture has no closed form; training and the reported KL use the one-sample
estimate log q(z|x,c) - log p(z|c) at z ~ q(z|x,c), still an unbiased estimate of the ELBO.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtok.models.gaussian import (
    log_mixture_normal,
    log_normal,
    reparameterize,
    sample_mixture_normal,
)
from vqtok.models.vae import VAE, Prior
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_nets import mlp


class ConditionalVAE(VAE):
    """A VAE (flat or conv) whose encoder, decoder and (with ``learned_prior``) prior see c."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config, condition=config.num_classes)
        components = config.prior_components
        outputs = 2 * config.latent_dim * components + (components if components > 1 else 0)
        self.prior_net = (
            mlp([config.num_classes, _prior_width(config), outputs])
            if config.learned_prior
            else None
        )

    def condition(self, c: Tensor | None) -> Tensor:
        """Labels (B,) int -> one-hot (B, M) float; (B, M) float vectors pass through."""
        if c is None:
            raise ValueError(
                "a conditional VAE needs the condition c (labels or attribute vectors)"
            )
        classes = self.config.num_classes
        if c.dim() == 1:
            if c.is_floating_point():
                raise ValueError("labels must be integers; attribute vectors must be (B, M)")
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= classes):
                raise ValueError(
                    f"labels must lie in 0..{classes - 1}, got {int(c.min())}..{int(c.max())}"
                )
            return F.one_hot(c.long(), classes).float()
        if c.dim() != 2 or c.shape[1] != classes:
            raise ValueError(
                f"conditions must be labels (B,) or vectors (B, {classes}), got {tuple(c.shape)}"
            )
        return c.float()

    @property
    def mixture_prior(self) -> bool:
        return self.config.prior_components > 1

    def prior(self, c: Tensor | None) -> Prior:
        if self.prior_net is None:
            return None
        if self.mixture_prior:
            raise ValueError("a mixture prior p(z|c) has no single (mu, logvar); see prior_mixture")
        moments = self.prior_net(self.condition(c))
        if self.config.network == "conv":  # the same Gaussian at every position
            moments = moments.view(*moments.shape, *([1] * self.config.dims))
        mu, logvar = moments.chunk(2, dim=1)
        return mu, logvar

    def prior_mixture(self, c: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """p(z|c) = sum_m softmax(logits)_m N(mu_m, diag exp(logvar_m)): mu, logvar (B, M, K)
        and logits (B, M), for M = ``prior_components`` (flat latents only)."""
        components, units = self.config.prior_components, self.config.latent_dim
        logits, moments = self.prior_net(self.condition(c)).split(
            [components, 2 * components * units], dim=1
        )
        mu, logvar = moments.view(-1, components, 2 * units).chunk(2, dim=2)
        return mu, logvar, logits

    def kl(self, mu: Tensor, logvar: Tensor, c: Tensor | None = None) -> Tensor:
        """Closed form per unit (B, K), or for a mixture prior the one-sample estimate
        log q(z|x,c) - log p(z|c) of the whole latent: (B, 1)."""
        if not self.mixture_prior:
            return super().kl(mu, logvar, c)
        z = reparameterize(mu, logvar)
        log_q = log_normal(z, mu, logvar).sum(dim=1)
        return (log_q - self.log_prior(z.unsqueeze(0), c)[0]).unsqueeze(1)

    def penalized_kl(self, kl: Tensor) -> Tensor:
        """Free bits for a mixture prior: the whole latent's batch-mean KL counts at least
        K * free_bits nats, the floor K units of free_bits each would have."""
        if not self.mixture_prior:
            return super().penalized_kl(kl)
        return (
            kl.float().mean(dim=0).sum().clamp_min(self.config.free_bits * self.config.latent_dim)
        )

    def log_prior(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        if not self.mixture_prior:
            return super().log_prior(z, c)
        return log_mixture_normal(z, *self.prior_mixture(c))

    def sample_prior(
        self, n: int, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        if not self.mixture_prior:
            return super().sample_prior(n, c, size)
        return sample_mixture_normal(*self.prior_mixture(c))

    def posterior(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super().posterior(x, self.condition(c))

    def forward(
        self, x: Tensor, c: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        return super().forward(x, self.condition(c))

    @torch.no_grad()
    def sample(self, n: int, c: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        """Conditional samples: c holds n labels (or (n, M) vectors).

        x ~ mean p(x|z,c), z ~ p(z[|c]).
        """
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

    def decode(
        self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        return super().decode(z, self.condition(c), size)


def _prior_width(config: VAEConfig) -> int:
    """Hidden width of the prior network p(z|c): that of the layers next to the latent."""
    if config.network == "conv":
        return config.widths[-1]
    return config.hidden[-1] if config.hidden else config.latent_dim
