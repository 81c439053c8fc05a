"""The ladder VAE of Sonderby et al. (2016): the algorithm, and its flat (MLP) networks.

Generative model, top-down: p(z_L) = N(0, I), p(z_i | z_{i+1}) = N(mu_p, sigma_p^2) by a
network, p(x | z_1) by the decoder. Inference shares the top-down path: a deterministic
bottom-up pass d_i = f_i(d_{i-1}) (d_0 = x) gives Gaussian parameters (mu_hat_i, sigma_hat_i);
then, top-down, q(z_L|x) = N(mu_hat_L, sigma_hat_L^2) and each lower q(z_i|.) is the
precision-weighted merge of (mu_hat_i, sigma_hat_i) with the top-down (mu_p, sigma_p):

    sigma_q^2 = 1 / (sigma_hat^-2 + sigma_p^-2),
    mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2.

ELBO(x) = E_q [log p(x|z_1)] - sum_i E_q [D_KL(q(z_i|.) || p(z_i|z_{i+1}))], the per-layer KLs
in closed form given the sampled z_{i+1}. Layers are numbered from the bottom: layer 1 is next
to x, layer L is the top.

``LadderVAE`` holds the algorithm; its subclasses build the networks: ``FlatLadderVAE``
here (MLPs, latents z_i: (B, d_i)), ``ConvLadderVAE`` in ``vqtok.models.conv_ladder``
(residual conv stages, latents z_i: (B, d_i, *spatial_i)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqtok.models.gaussian import (
    flat_sum,
    gaussian_from,
    kl_normal,
    kl_standard_normal,
    log_normal,
    log_standard_normal,
    precision_weighted,
    reparameterize,
)
from vqtok.models.vae import LatentModel, active_units, tile_batch
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_nets import FlatDecoder, mlp

Gaussian = tuple[Tensor, Tensor]  # (mu, logvar)
Step = tuple[
    Tensor, Gaussian, Gaussian | None
]  # z_i ~ q, q's (mu, logvar), p's or None for N(0, I)


class LadderVAE(LatentModel):
    """The ladder algorithm over the networks a subclass builds: ``up[i]`` (deterministic
    block d_{i-1} -> d_i), ``up_heads[i]`` (d_i -> mu_hat, logvar_hat stacked on axis 1),
    ``down[i]`` (z_{i+1} -> mu_p, logvar_p of z_i, stacked), ``decoder`` (z_1 -> p(x|z_1)'s
    parameters), all 0-based from the bottom, and ``bottom_input``, ``decoder_params`` and
    ``top_shape``.

    x: (B, C, *spatial) float in [-1, 1]; latents z_i: (B, ladder_dims[i - 1], ...)."""

    up: nn.ModuleList
    up_heads: nn.ModuleList
    down: nn.ModuleList
    decoder: nn.Module

    @property
    def layers(self) -> int:
        return len(self.config.ladder_dims)

    def bottom_input(self, x: Tensor) -> Tensor:
        """x as the first bottom-up block takes it (d_0)."""
        raise NotImplementedError

    def decoder_params(self, z: Tensor, size: Sequence[int]) -> Tensor:
        """z_1 -> the likelihood's parameters for inputs of spatial ``size``: (B, P * C, *size)."""
        raise NotImplementedError

    def top_shape(self, size: Sequence[int]) -> tuple[int, ...]:
        """Shape of one z_L for inputs of spatial ``size``."""
        raise NotImplementedError

    def bottom_up(self, x: Tensor) -> list[Gaussian]:
        """(mu_hat_i, logvar_hat_i) for i = 1..L, bottom first."""
        h, out = self.bottom_input(x), []
        for block, head in zip(self.up, self.up_heads, strict=True):
            h = block(h)
            out.append(gaussian_from(head(h)))
        return out

    def conditional_prior(self, i: int, z_above: Tensor) -> Gaussian:
        """(mu_p, logvar_p) of p(z_i | z_{i+1}); ``i`` counts from 0 at the bottom."""
        return gaussian_from(self.down[i](z_above))

    def top_down(self, up: list[Gaussian]) -> list[Step]:
        """Per layer, bottom first: (z_i ~ q, q's (mu, logvar), p's (mu, logvar) or None for
        N(0, I))."""
        q_top = up[-1]
        steps: list[Step] = [(reparameterize(*q_top), q_top, None)]
        for i in reversed(range(self.layers - 1)):
            p = self.conditional_prior(i, steps[-1][0])
            q = precision_weighted(*up[i], *p)
            steps.append((reparameterize(*q), q, p))
        return steps[::-1]

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        """x -> x_hat (the mean of p(x|z_1)), losses {"nll", "kl"} (the beta-weighted negative
        ELBO per sample, nats), stats with the ELBO, ``kl_layer{i}`` and
        ``active_units_layer{i}``."""
        steps = self.top_down(self.bottom_up(x))
        params = self.decoder_params(steps[0][0], x.shape[2:])
        kls = [kl_standard_normal(*q) if p is None else kl_normal(*q, *p) for _, q, p in steps]
        kl = torch.cat([layer_kl.flatten(1) for layer_kl in kls], dim=1)
        losses, stats = self.objective(self.log_likelihood(params, x), kl, kl.shape[1], x)
        for i, (layer_kl, (_, q, _)) in enumerate(zip(kls, steps, strict=True), start=1):
            stats[f"kl_layer{i}"] = float(flat_sum(layer_kl.detach()).mean())
            if x.shape[0] > 1:
                stats[f"active_units_layer{i}"] = float(active_units(q[0].detach()))
        return self.likelihood.mean(params), losses, stats

    @torch.no_grad()
    def encode(self, x: Tensor) -> list[Tensor]:
        """The means of q(z_i|.) per layer, bottom first (top-down with sampled z above)."""
        return [q[0] for _, q, _ in self.top_down(self.bottom_up(x))]

    def decode(
        self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        """z_1 -> the mean of p(x|z_1): (B, C, *size) (default ``input_size``; flat: always)."""
        return self.likelihood.mean(self.decoder_params(z, size or self.config.input_size))

    def generate(
        self, n: int, stochastic_from: int = 1, size: Sequence[int] | None = None
    ) -> Tensor:
        """Ancestral sampling of z_1 for inputs of spatial ``size`` (default ``input_size``):
        z_L ~ N(0, I), z_i ~ p(z_i|z_{i+1}), except that layers below ``stochastic_from`` take
        their conditional mean, which shows what the layers from ``stochastic_from`` up encode."""
        if not 1 <= stochastic_from <= self.layers:
            raise ValueError(
                f"stochastic_from must be a layer in 1..{self.layers}, got {stochastic_from}"
            )
        shape = self.top_shape(size or self.config.input_size)
        z = torch.randn(n, *shape, device=next(self.parameters()).device)
        for i in reversed(range(self.layers - 1)):
            mu, logvar = self.conditional_prior(i, z)
            z = reparameterize(mu, logvar) if i + 1 >= stochastic_from else mu
        return z

    @torch.no_grad()
    def sample(self, n: int, stochastic_from: int = 1, size: Sequence[int] | None = None) -> Tensor:
        """n samples (n, C, *size): the mean of p(x|z_1) under ancestral sampling;
        ``stochastic_from = l`` samples layers l..L only (see ``generate``)."""
        return self.decode(self.generate(n, stochastic_from, size), size=size)

    def log_importance_weights(self, x: Tensor, samples: int, c: Tensor | None = None) -> Tensor:
        """log p(x, z_1..L) - log q(z_1..L | x) for z ~ q: (samples, B)."""
        batch = x.shape[0]
        xs = tile_batch(x, samples)
        steps = self.top_down(self.bottom_up(xs))
        log_w = self.log_likelihood(self.decoder_params(steps[0][0], x.shape[2:]), xs)
        for z, q, p in steps:
            log_p = log_standard_normal(z) if p is None else log_normal(z, *p)
            log_w = log_w + flat_sum(log_p - log_normal(z, *q))
        return log_w.view(samples, batch)

    def log_prior_weights(self, x: Tensor, samples: int, c: Tensor | None = None) -> Tensor:
        """log p(x|z_1) for z ~ p by ancestral sampling: (samples, B)."""
        size = x.shape[2:]
        rows = [
            self.log_likelihood(self.decoder_params(self.generate(x.shape[0], size=size), size), x)
            for _ in range(samples)
        ]
        return torch.stack(rows)


class FlatLadderVAE(LadderVAE):
    """The ladder on flat inputs x: (B, C, *input_size), by MLPs: one deterministic block of
    width ``hidden[i - 1]`` per layer, p(x|z_1) two layers of width ``hidden[0]``; latents
    z_i: (B, ladder_dims[i - 1])."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        dims, hidden = config.ladder_dims, config.hidden
        inputs = (config.input_dim, *hidden[:-1])
        self.up = nn.ModuleList(
            nn.Sequential(mlp([a, h, h]), nn.SiLU()) for a, h in zip(inputs, hidden, strict=True)
        )
        self.up_heads = nn.ModuleList(
            nn.Linear(h, 2 * d) for h, d in zip(hidden, dims, strict=True)
        )
        self.down = nn.ModuleList(
            mlp([dims[i + 1], hidden[i], 2 * dims[i]]) for i in range(len(dims) - 1)
        )
        out_shape = (self.likelihood.params_per_channel * config.channels, *config.input_size)
        # p(x|z_1) mirrors the first bottom-up block, as in Sonderby et al.: the reversed
        # bottom-up widths would squeeze z_1 through the narrow top widths on its way to x.
        self.decoder = FlatDecoder(dims[0], (hidden[0], hidden[0]), out_shape)

    def bottom_input(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def decoder_params(self, z: Tensor, size: Sequence[int]) -> Tensor:
        return self.decoder(z)

    def top_shape(self, size: Sequence[int]) -> tuple[int, ...]:
        return (self.config.ladder_dims[-1],)
