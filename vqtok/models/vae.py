"""The VAE (and beta-VAE, and the deterministic autoencoder set against it) on flat or conv inputs.

The objective of Kingma and Welling (2014), per sample and in nats:

    ELBO(x) = E_{z ~ q(z|x)} [log p(x|z)] - D_KL(q(z|x) || p(z)),

with q(z|x) = N(mu(x), diag sigma^2(x)), z = mu + sigma * eps (the reparameterization),
p(z) = N(0, I) and the closed-form KL sum_k (mu_k^2 + sigma_k^2 - 1 - log sigma_k^2) / 2.
Training minimizes the beta-VAE loss of Higgins et al. (2017),

    L_BETA = -E_q [log p(x|z)] + beta D_KL(q(z|x) || p(z)),

returned as losses {"nll": -E_q log p(x|z), "kl": beta_t * KL} whose sum is L_BETA per
sample (batch mean), where beta_t = beta * min(1, step / kl_warmup_steps) (KL warm-up) and,
with free bits, each latent unit's batch-mean KL counts at least ``free_bits`` nats. The
unweighted ELBO, KL and bits per dimension are reported in the stats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqtok.models.gaussian import (
    flat_sum,
    kl_normal,
    kl_standard_normal,
    log_normal,
    log_standard_normal,
    reparameterize,
)
from vqtok.models.identity import content_hash
from vqtok.models.likelihoods import DATA_BIN_WIDTH, bits_per_dim, make_likelihood
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_nets import build_decoder, build_encoder, latent_shape

ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E_q[z_u]) > 0.01

Prior = tuple[Tensor, Tensor] | None  # (mu, logvar) of p(z|c), or None for N(0, I)


def active_units(posterior_means: Tensor) -> int:
    """Units whose posterior mean varies across inputs: Var_x(E_q[z_u]) > 0.01.

    Args:
        posterior_means: (N, *units) float, one row per input (N >= 2).

    Returns:
        The number of active units.
    """
    return int((posterior_means.flatten(1).float().var(dim=0) > ACTIVE_UNIT_VARIANCE).sum())


class LatentModel(nn.Module):
    """What every continuous-latent model shares.

    Its config, content id, the KL schedule and the step hook the trainer calls before each
    training step.

    Args:
        config: The architecture and objective.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.likelihood = make_likelihood(config.likelihood, config.sigma)
        self.step = 0

    @property
    def model_id(self) -> str:
        """Content hash of config and weights (16 hex chars), as for the tokenizers."""
        return content_hash(self.config.identity_dict(), self.state_dict())

    def set_step(self, step: int) -> None:
        """Record the training step about to run; it drives the KL warm-up.

        Args:
            step: The step, counted from 0.
        """
        self.step = step

    def kl_weight(self, latent_units: int, input_values: int) -> float:
        """beta_t: the configured beta (or beta_norm * n / K) times the warm-up ramp.

        Args:
            latent_units: K, the number of latent units of one sample.
            input_values: n, the number of values of the same sample (C * prod(spatial)).

        Returns:
            The KL weight for this step (no ramp in eval mode).
        """
        warmup = self.config.kl_warmup_steps
        ramp = min(1.0, self.step / warmup) if warmup and self.training else 1.0
        return self.config.kl_weight(latent_units, input_values) * ramp

    def penalized_kl(self, kl: Tensor) -> Tensor:
        """Batch-mean KL in nats with free bits: sum_u max(free_bits, mean_x KL_u).

        Args:
            kl: (B, *units) elementwise KL.

        Returns:
            A scalar fp32 tensor.
        """
        per_unit = kl.float().mean(dim=0)
        if self.config.free_bits:
            per_unit = per_unit.clamp_min(self.config.free_bits)
        return per_unit.sum()

    def log_likelihood(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) per sample in nats, computed in fp32.

        Args:
            params: The decoder's output, the likelihood's parameters.
            x: (B, C, *spatial) float, the data.

        Returns:
            (B,) fp32.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            return flat_sum(self.likelihood.log_prob(params.float(), x.float()))

    def objective(
        self, log_px: Tensor, kl: Tensor, units: int, x: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Losses and stats of a batch.

        Args:
            log_px: (B,) log p(x|z) in nats.
            kl: (B, *units) elementwise KL.
            units: K, the number of latent units of one sample.
            x: (B, C, *spatial) the data, for bits per dimension.

        Returns:
            Losses {"nll", "kl"} (KL weighted, with free bits) and stats (elbo, kl, nll,
            bits_per_dim, kl_weight).
        """
        weight = self.kl_weight(units, x[0].numel())  # n and K of this very input
        nll, kl_nats = -log_px.mean(), flat_sum(kl.detach().float()).mean()
        elbo = -float(nll.detach() + kl_nats)
        losses = {"nll": nll, "kl": weight * self.penalized_kl(kl)}
        stats = {
            "elbo": elbo,
            "nll": float(nll.detach()),
            "kl": float(kl_nats),
            "kl_weight": weight,
            # Per quantized value of the data for a density too: comparable, see likelihoods.
            "bits_per_dim": bits_per_dim(
                -elbo, x[0].numel(), self.likelihood.discrete,
                DATA_BIN_WIDTH[self.config.modality],
            ),
        }
        return losses, stats


class VAE(LatentModel):
    """Gaussian-latent VAE, beta-VAE, or (family "ae") the deterministic autoencoder.

    x: (B, C, *spatial) float in [-1, 1] (flat networks: spatial = input_size); latents z:
    (B, K) flat or (B, K, *spatial / strides) conv. Subclasses may condition on c: (B, M).

    Args:
        config: The architecture and objective.
        condition: M, the size of the condition c (0: unconditional).
    """

    def __init__(self, config: VAEConfig, condition: int = 0) -> None:
        super().__init__(config)
        self.deterministic = config.family == "ae"
        moments = 1 if self.deterministic else 2
        self.encoder = build_encoder(config, moments * config.latent_dim, condition)
        self.decoder = build_decoder(config, self.likelihood.params_per_channel, condition)

    def posterior(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The approximate posterior q(z|x[, c]).

        Args:
            x: (B, C, *spatial) float.
            c: (B, M) condition, or None.

        Returns:
            (mu, logvar), each (B, *latent); for the autoencoder logvar is -30 (unused).
        """
        h = self.encoder(x, c)
        if self.deterministic:
            return h, torch.full_like(h, -30.0)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def prior(self, c: Tensor | None) -> Prior:
        """The prior p(z[|c]).

        Args:
            c: (B, M) condition, or None.

        Returns:
            (mu, logvar), each (B, *latent) or broadcastable to it (a conv prior may be
            (B, K, 1, ...), the same at every position); None for the standard normal prior.
        """
        return None

    def kl(self, mu: Tensor, logvar: Tensor, c: Tensor | None = None) -> Tensor:
        """D_KL(q(z|x[, c]) || p(z[|c])) in closed form, elementwise.

        Args:
            mu: (B, *latent) posterior mean.
            logvar: (B, *latent) posterior log-variance.
            c: (B, M) condition, or None.

        Returns:
            (B, *units) KL in nats.
        """
        prior = self.prior(c)
        if prior is None:
            return kl_standard_normal(mu, logvar)
        return kl_normal(mu, logvar, *prior)

    def log_prior(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """log p(z[|c]) of each latent.

        Args:
            z: (S, B, *latent) samples.
            c: (B, M) condition, or None.

        Returns:
            (S, B) log-densities in nats.
        """
        prior = self.prior(c)
        log_p = log_standard_normal(z) if prior is None else log_normal(z, *prior)
        return log_p.flatten(2).sum(dim=2)

    def forward(
        self, x: Tensor, c: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        """Reconstruct ``x`` with the training losses.

        Args:
            x: (B, C, *spatial) float.
            c: (B, M) condition, or None.

        Returns:
            x_hat (the likelihood's mean, x's shape), losses and stats. VAE losses:
            {"nll", "kl"}, summing to the (beta-)negative ELBO per sample in nats (one z
            sample). Autoencoder: {"nll"}, -log p(x | z = mu(x)), no KL and no bound.
        """
        mu, logvar = self.posterior(x, c)
        z = mu if self.deterministic else reparameterize(mu, logvar)
        params = self.decoder(z, c, x.shape[2:])
        log_px = self.log_likelihood(params, x)
        x_hat = self.likelihood.mean(params)
        if self.deterministic:
            nll = -log_px.mean()
            return x_hat, {"nll": nll}, {"nll": float(nll.detach())}
        losses, stats = self.objective(log_px, self.kl(mu, logvar, c), mu[0].numel(), x)
        if x.shape[0] > 1:
            stats["active_units"] = float(active_units(mu.detach()))
        return x_hat, losses, stats

    @torch.no_grad()
    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """The posterior mean E_q[z], without gradients.

        Args:
            x: (B, C, *spatial) float.
            c: (B, M) condition, or None.

        Returns:
            (B, *latent) float.
        """
        return self.posterior(x, c)[0]

    def decode(
        self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        """The mean of p(x|z[, c]).

        Args:
            z: (B, *latent) latents.
            c: (B, M) condition, or None.
            size: Spatial size of the output (default ``input_size``; fixed for flat nets).

        Returns:
            (B, C, *size) float.
        """
        return self.likelihood.mean(self.decoder(z, c, size or self.config.input_size))

    def latent_shape(self, size: Sequence[int] | None = None) -> tuple[int, ...]:
        """Shape of one z for inputs of spatial ``size``.

        Args:
            size: Spatial size of the input (default ``input_size``).

        Returns:
            The latent shape, without the batch axis.
        """
        return latent_shape(self.config, size or self.config.input_size)

    def sample_prior(
        self, n: int, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        """Draw z ~ p(z[|c]).

        Args:
            n: The number of draws.
            c: (n, M) condition, or None.
            size: Spatial size of the inputs the latents stand for (default ``input_size``).

        Returns:
            (n, *latent) float.
        """
        shape = (n, *self.latent_shape(size))
        prior = self.prior(c)
        if prior is None:
            return torch.randn(shape, device=self._device())
        mu, logvar = prior
        return reparameterize(mu.expand(shape), logvar.expand(shape))

    @torch.no_grad()
    def sample(self, n: int, c: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        """Samples x = mean of p(x|z) for z ~ p(z[|c]), without gradients.

        Args:
            n: The number of samples.
            c: (n, M) condition, or None.
            size: Spatial size of the samples (default ``input_size``).

        Returns:
            (n, C, *size) float.
        """
        return self.decode(self.sample_prior(n, c, size), c, size)

    def log_importance_weights(self, x: Tensor, samples: int, c: Tensor | None = None) -> Tensor:
        """log p(x, z_k) - log q(z_k|x) for z_k ~ q(z|x).

        Their mean over k estimates the ELBO; log mean_k exp of them is the importance-weighted
        bound of Burda et al. (2016).

        Args:
            x: (B, C, *spatial) float.
            samples: K, the number of z_k per input.
            c: (B, M) condition, or None.

        Returns:
            (samples, B) float32.
        """
        mu, logvar = self.posterior(x, c)
        z = reparameterize(mu.expand(samples, *mu.shape), logvar.expand(samples, *mu.shape))
        log_q = log_normal(z, mu, logvar).flatten(2).sum(dim=2)
        return self._log_px(z, x, c) + self.log_prior(z, c) - log_q

    def log_prior_weights(self, x: Tensor, samples: int, c: Tensor | None = None) -> Tensor:
        """log p(x|z_k) for z_k ~ p(z[|c]).

        log mean_k exp of them is the naive Monte Carlo estimate of log p(x) =
        log E_{p(z)} p(x|z), the marginal likelihood of Kingma and Welling (2014).

        Args:
            x: (B, C, *spatial) float.
            samples: K, the number of z_k per input.
            c: (B, M) condition, or None.

        Returns:
            (samples, B) float32.
        """
        z = torch.stack([self.sample_prior(x.shape[0], c, x.shape[2:]) for _ in range(samples)])
        return self._log_px(z, x, c)

    def _log_px(self, z: Tensor, x: Tensor, c: Tensor | None) -> Tensor:
        """z: (S, B, *latent) -> log p(x|z): (S, B)."""
        samples, batch = z.shape[:2]
        c_rep = None if c is None else tile_batch(c, samples)
        params = self.decoder(z.reshape(samples * batch, *z.shape[2:]), c_rep, x.shape[2:])
        return self.log_likelihood(params, tile_batch(x, samples)).view(samples, batch)

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def tile_batch(t: Tensor, samples: int) -> Tensor:
    """``samples`` copies of the batch, sample-major.

    Args:
        t: (B, ...) tensor.
        samples: The number of copies.

    Returns:
        (samples * B, ...).
    """
    return t.unsqueeze(0).expand(samples, *t.shape).reshape(samples * t.shape[0], *t.shape[1:])
