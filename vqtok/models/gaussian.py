"""Diagonal Gaussian algebra shared by the VAEs: sampling, densities, KL, precision weighting.

All functions are elementwise over tensors of any shape; ``logvar`` is log sigma^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)
MIN_VARIANCE = 1e-4


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): the reparameterization of Kingma and Welling
    (2014), so that the gradient of E_q[f(z)] flows to (mu, sigma) through a sample."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def log_normal(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mu, sigma^2) = -(log 2 pi + log sigma^2 + (x - mu)^2 / sigma^2) / 2, elementwise."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))


def log_standard_normal(x: Tensor) -> Tensor:
    """log N(x; 0, 1), elementwise."""
    return -0.5 * (LOG_2PI + x.pow(2))


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """D_KL(N(mu, sigma^2) || N(0, 1)) = (mu^2 + sigma^2 - 1 - log sigma^2) / 2, elementwise:
    the closed-form KL term of the ELBO for the prior p(z) = N(0, I)."""
    return 0.5 * (mu.pow(2) + torch.exp(logvar) - 1.0 - logvar)


def kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """D_KL(N(mu_q, s_q^2) || N(mu_p, s_p^2))
    = (log s_p^2 - log s_q^2 + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1) / 2, elementwise."""
    return 0.5 * (
        logvar_p
        - logvar_q
        + (torch.exp(logvar_q) + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p)
        - 1.0
    )


def log_mixture_normal(z: Tensor, mu: Tensor, logvar: Tensor, logits: Tensor) -> Tensor:
    """log sum_m pi_m N(z; mu_m, diag sigma_m^2) of each latent vector.

    z: (*S, B, K); mu, logvar: (B, M, K), M diagonal Gaussians per batch row; logits: (B, M),
    pi = softmax(logits). Returns (*S, B). The sum runs in log space (logsumexp)."""
    per_component = log_normal(z.unsqueeze(-2), mu, logvar).sum(dim=-1)
    return torch.logsumexp(per_component + torch.log_softmax(logits, dim=-1), dim=-1)


def sample_mixture_normal(mu: Tensor, logvar: Tensor, logits: Tensor) -> Tensor:
    """One draw per batch row from the mixture of ``log_mixture_normal``: (B, K). Not
    differentiable in the component choice; for sampling only."""
    pick = torch.multinomial(torch.softmax(logits.float(), dim=-1), 1).squeeze(1)
    rows = torch.arange(mu.shape[0], device=mu.device)
    return reparameterize(mu[rows, pick], logvar[rows, pick])


def precision_weighted(
    mu_a: Tensor, logvar_a: Tensor, mu_b: Tensor, logvar_b: Tensor
) -> tuple[Tensor, Tensor]:
    """The product of two Gaussians, renormalized (Sonderby et al. 2016, eq. 17-18):
    sigma^2 = 1 / (1/s_a^2 + 1/s_b^2), mu = (mu_a / s_a^2 + mu_b / s_b^2) sigma^2.
    Returns (mu, logvar). Computed in log space: mu_a's weight sigma^2 / s_a^2 is
    sigmoid(log s_b^2 - log s_a^2), so no precision is formed that could overflow."""
    weight_a = torch.sigmoid(logvar_b - logvar_a)
    logvar = -torch.logaddexp(-logvar_a, -logvar_b)
    return weight_a * mu_a + (1.0 - weight_a) * mu_b, logvar


def gaussian_from(raw: Tensor) -> tuple[Tensor, Tensor]:
    """A network's output (B, 2K, ...) -> (mu, logvar), each (B, K, ...), with sigma^2 =
    softplus(.) + MIN_VARIANCE as in Sonderby et al. (2016): a variance that grows linearly,
    not exponentially, with the output and never reaches 0, which keeps deep ladders finite."""
    mu, raw_variance = raw.chunk(2, dim=1)
    return mu, torch.log(F.softplus(raw_variance) + MIN_VARIANCE)


def flat_sum(x: Tensor) -> Tensor:
    """(B, ...) -> (B,): the sum over every axis but the batch axis."""
    return x.reshape(x.shape[0], -1).sum(dim=1)
