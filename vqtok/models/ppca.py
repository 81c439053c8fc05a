"""Probabilistic PCA (Tipping and Bishop 1999) in closed form: a linear latent model, used as
an oracle.

x = W z + b + eps, z ~ N(0, I_q), eps ~ N(0, sigma^2 I_d), hence

    p(x) = N(b, W W^T + sigma^2 I),
    p(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1),  M = W^T W + sigma^2 I.

(sigma^2 M^-1 is the posterior covariance, as Tipping and Bishop write it; its inverse,
sigma^-2 M, is the posterior precision.) Their maximum-likelihood fit from the sample
covariance S = U diag(lambda) U^T (eigenvalues descending): b = mean(x), sigma^2 = the mean of
the d - q discarded eigenvalues, W = U_q (diag(lambda_q) - sigma^2 I)^(1/2) (up to a rotation,
here none, so that W's columns are orthogonal and the exact posterior is diagonal).
Everything is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PPCA:
    """A fitted PPCA: W (d, q), b (d,), sigma2 (scalar), float64."""

    W: Tensor
    b: Tensor
    sigma2: Tensor

    @classmethod
    def fit(cls, x: Tensor, latent_dim: int) -> PPCA:
        """Maximum-likelihood PPCA of the rows of x: (N, d) with q = latent_dim < d."""
        x = x.double().flatten(1)
        n, d = x.shape
        if not 0 < latent_dim < d:
            raise ValueError(f"latent_dim must lie in [1, {d - 1}], got {latent_dim}")
        b = x.mean(dim=0)
        centred = x - b
        eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / n)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        sigma2 = eigenvalues[latent_dim:].mean()
        scale = (eigenvalues[:latent_dim] - sigma2).clamp_min(0.0).sqrt()
        return cls(W=eigenvectors[:, :latent_dim] * scale, b=b, sigma2=sigma2)

    @property
    def covariance(self) -> Tensor:
        """C = W W^T + sigma^2 I: (d, d)."""
        return self.W @ self.W.T + self.sigma2 * torch.eye(self.W.shape[0], dtype=self.W.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, C) in nats: x (N, d) -> (N,) float64."""
        centred = x.double().flatten(1) - self.b
        chol = torch.linalg.cholesky(self.covariance)
        solved = torch.linalg.solve_triangular(chol, centred.T, upper=False)
        log_det = 2.0 * chol.diagonal().log().sum()
        d = centred.shape[1]
        return -0.5 * (d * math.log(2.0 * math.pi) + log_det + solved.pow(2).sum(dim=0))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """p(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1): means (N, q) and the shared covariance
        (q, q)."""
        q = self.W.shape[1]
        m = self.W.T @ self.W + self.sigma2 * torch.eye(q, dtype=self.W.dtype)
        means = torch.linalg.solve(m, self.W.T @ (x.double().flatten(1) - self.b).T).T
        return means, self.sigma2 * torch.linalg.inv(m)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of x = W z + b + eps: (n, d) float64."""
        d, q = self.W.shape
        z = torch.randn(n, q, dtype=torch.float64, generator=generator)
        eps = torch.randn(n, d, dtype=torch.float64, generator=generator)
        return z @ self.W.T + self.b + self.sigma2.sqrt() * eps
