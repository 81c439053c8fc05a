"""The continuous models' mathematics: KL, likelihoods, PPCA and importance-weighted bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import MultivariateNormal, Normal

from vqtok.models.bounds import iwae_bound, naive_bound
from vqtok.models.gaussian import (
    MIN_VARIANCE,
    gaussian_from,
    kl_normal,
    kl_standard_normal,
    log_mixture_normal,
    log_normal,
    precision_weighted,
    sample_mixture_normal,
)
from vqtok.models.likelihoods import make_likelihood
from vqtok.models.ppca import PPCA


def test_closed_form_kl_matches_monte_carlo() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q = torch.tensor([0.7, -1.2, 0.0]), torch.tensor([-0.5, 0.3, -2.0])
    mu_p, logvar_p = torch.tensor([0.2, 0.5, -0.4]), torch.tensor([0.4, -0.2, 0.1])
    z = mu_q + torch.exp(0.5 * logvar_q) * torch.randn(400_000, 3, generator=g)
    mc = (log_normal(z, mu_q, logvar_q) - log_normal(z, mu_p, logvar_p)).mean(dim=0)
    torch.testing.assert_close(kl_normal(mu_q, logvar_q, mu_p, logvar_p), mc, atol=0.01, rtol=0.01)
    mc_standard = (
        log_normal(z, mu_q, logvar_q) - log_normal(z, torch.zeros(3), torch.zeros(3))
    ).mean(dim=0)
    torch.testing.assert_close(
        kl_standard_normal(mu_q, logvar_q), mc_standard, atol=0.01, rtol=0.01
    )


def mixture_of_three() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two batch rows, each a mixture of 3 diagonal Gaussians in 2-D.

    Returns (2, 3, 2), (2, 3, 2), (2, 3).
    """
    mu = torch.tensor(
        [[[-4.0, 0.0], [0.0, 3.0], [5.0, -1.0]], [[1.0, 1.0], [-2.0, 0.5], [0.0, -6.0]]]
    )
    logvar = torch.tensor(
        [[[0.0, -1.0], [0.5, 0.0], [-0.5, 0.2]], [[-1.0, -1.0], [0.0, 0.3], [0.4, 0.0]]]
    )
    return mu, logvar, torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])


def test_mixture_density_matches_torch_distributions() -> None:
    from torch.distributions import Categorical, Independent, MixtureSameFamily

    mu, logvar, logits = mixture_of_three()
    reference = MixtureSameFamily(
        Categorical(logits=logits), Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    )
    z = torch.randn(5, 2, 2) * 3
    torch.testing.assert_close(log_mixture_normal(z, mu, logvar, logits), reference.log_prob(z))
    # One component, or M equal ones, is the plain diagonal Gaussian.
    single = log_normal(z, mu[:, :1].squeeze(1), logvar[:, :1].squeeze(1)).sum(dim=-1)
    torch.testing.assert_close(
        log_mixture_normal(z, mu[:, :1], logvar[:, :1], logits[:, :1]), single
    )
    same = log_mixture_normal(
        z, mu[:, :1].expand(2, 4, 2), logvar[:, :1].expand(2, 4, 2), torch.randn(2, 4)
    )
    torch.testing.assert_close(same, single)


def test_mixture_samples_have_the_mixture_moments() -> None:
    """E z = sum_m pi_m mu_m and E z^2 = sum_m pi_m (sigma_m^2 + mu_m^2), per row and unit."""
    torch.manual_seed(0)
    mu, logvar, logits = mixture_of_three()
    n = 200_000
    rows = torch.arange(2).repeat(n)
    z = sample_mixture_normal(mu[rows], logvar[rows], logits[rows]).view(n, 2, 2)
    weights = torch.softmax(logits, dim=1).unsqueeze(2)
    torch.testing.assert_close(z.mean(0), (weights * mu).sum(1), atol=0.03, rtol=0)
    torch.testing.assert_close(
        z.pow(2).mean(0), (weights * (logvar.exp() + mu.pow(2))).sum(1), atol=0.1, rtol=0.01
    )


def test_precision_weighting_is_the_normalized_product_of_gaussians() -> None:
    mu_a, logvar_a, mu_b, logvar_b = (
        torch.tensor(1.0),
        torch.tensor(0.5),
        torch.tensor(-2.0),
        torch.tensor(-1.0),
    )
    mu, logvar = precision_weighted(mu_a, logvar_a, mu_b, logvar_b)
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    density = torch.exp(
        log_normal(grid, mu_a.double(), logvar_a.double())
        + log_normal(grid, mu_b.double(), logvar_b.double())
    )
    density = density / torch.trapezoid(density, grid)
    mean = torch.trapezoid(grid * density, grid)
    variance = torch.trapezoid((grid - mean) ** 2 * density, grid)
    assert float(mu) == pytest.approx(float(mean), abs=1e-4)
    assert float(logvar.exp()) == pytest.approx(float(variance), rel=1e-4)


def test_precision_weighting_and_softplus_variances_stay_finite_at_extremes() -> None:
    logvar_a = torch.tensor([-200.0, 0.0, 200.0, -90.0], requires_grad=True)
    logvar_b = torch.tensor([200.0, 0.0, -200.0, -90.0])
    mu, logvar = precision_weighted(torch.ones(4), logvar_a, -torch.ones(4), logvar_b)
    assert torch.allclose(mu, torch.tensor([1.0, 0.0, -1.0, 0.0]))  # the far more precise one wins
    assert torch.allclose(
        logvar, torch.tensor([-200.0, -math.log(2.0), -200.0, -90.0 - math.log(2.0)])
    )
    (mu.sum() + logvar.sum()).backward()
    assert torch.isfinite(logvar_a.grad).all()
    _, bounded = gaussian_from(torch.tensor([[0.0, -1e4]]))  # (mu, raw variance) of one unit
    assert float(bounded) == pytest.approx(math.log(MIN_VARIANCE), rel=1e-6)


def test_bernoulli_and_gaussians_match_torch_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    params = torch.randn(2, 1, 4, 4, generator=g)
    bits = (torch.rand(2, 1, 4, 4, generator=g) > 0.5).float()
    ours = make_likelihood("bernoulli").log_prob(params, 2 * bits - 1)
    torch.testing.assert_close(ours, TorchBernoulli(logits=params).log_prob(bits))
    x = torch.rand(2, 1, 4, 4, generator=g) * 2 - 1
    for name in ("gaussian", "gaussian_learned"):
        ours = make_likelihood(name, sigma=0.3).log_prob(params, x)
        torch.testing.assert_close(ours, Normal(params, 0.3).log_prob(x))


def test_discretized_logistic_masses_sum_to_one_over_the_256_levels() -> None:
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1.0
    likelihood = make_likelihood("logistic")
    for mu, log_scale in [(0.0, -2.0), (0.93, -4.0), (-1.0, -6.0), (0.2, 1.0)]:
        params = torch.tensor([mu, log_scale]).view(1, 2, 1).expand(1, 2, 256)
        total = likelihood.log_prob(params, levels.view(1, 1, 256)).exp().sum()
        assert float(total) == pytest.approx(1.0, abs=1e-4)


def test_discretized_logistic_bits_per_dim_span_zero_to_eight() -> None:
    likelihood = make_likelihood("logistic")
    x = torch.round(torch.rand(1, 1, 1000) * 255) / 127.5 - 1.0
    sharp = torch.cat([x, torch.full_like(x, -7.0)], dim=1)
    vague = torch.cat([torch.zeros_like(x), torch.full_like(x, -0.5)], dim=1)
    bits = lambda params: float(-likelihood.log_prob(params, x).mean() / math.log(2))  # noqa: E731
    assert bits(sharp) < 0.05  # the narrowest allowed logistic still leaks a little mass
    assert 8.0 < bits(vague) < 9.0  # a bit worse than uniform over the 256 levels


def _ppca_data(n: int = 4000, d: int = 10, q: int = 3, seed: int = 0) -> tuple[PPCA, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = PPCA(
        W=torch.randn(d, q, dtype=torch.float64, generator=g),
        b=torch.randn(d, dtype=torch.float64, generator=g),
        sigma2=torch.tensor(0.3, dtype=torch.float64),
    )
    return truth, truth.sample(n, g)


def test_ppca_fit_is_the_maximum_likelihood_solution() -> None:
    truth, x = _ppca_data()
    fit = PPCA.fit(x, 3)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T, bias=True)))[::-1]
    assert float(fit.sigma2) == pytest.approx(eigenvalues[3:].mean(), rel=1e-10)
    torch.testing.assert_close(fit.covariance, truth.covariance, atol=0.15, rtol=0.1)
    wrong_noise = PPCA(W=fit.W, b=fit.b, sigma2=fit.sigma2 * 1.2)
    assert fit.log_prob(x).mean() > max(truth.log_prob(x).mean(), wrong_noise.log_prob(x).mean())


def test_ppca_log_likelihood_and_posterior_match_a_direct_gaussian_evaluation() -> None:
    _, x = _ppca_data(n=500)
    fit = PPCA.fit(x, 3)
    direct = MultivariateNormal(
        fit.b, covariance_matrix=fit.W @ fit.W.T + fit.sigma2 * torch.eye(10, dtype=torch.float64)
    )
    torch.testing.assert_close(fit.log_prob(x[:20]), direct.log_prob(x[:20]))
    # Gaussian conditioning of the joint (z, x): E[z|x] = W^T C^-1 (x - b), Cov = I - W^T C^-1 W.
    c_inv = torch.linalg.inv(fit.covariance)
    means, cov = fit.posterior(x[:20])
    torch.testing.assert_close(means, (fit.W.T @ c_inv @ (x[:20] - fit.b).T).T)
    torch.testing.assert_close(cov, torch.eye(3, dtype=torch.float64) - fit.W.T @ c_inv @ fit.W)
    assert (
        torch.count_nonzero(cov - torch.diag(cov.diagonal()).abs() > 1e-9) == 0
    )  # diagonal: W's columns orthogonal


class _ExactLinearGaussian:
    """A PPCA in the models' weight interface, with a deliberately imperfect posterior."""

    def __init__(self, ppca: PPCA) -> None:
        self.ppca = ppca

    def log_importance_weights(self, x: torch.Tensor, samples: int, c=None) -> torch.Tensor:
        means, cov = self.ppca.posterior(x)
        std = cov.diagonal().sqrt() * 1.5
        z = means + std * torch.randn(samples, *means.shape, dtype=torch.float64)
        log_q = Normal(means, std).log_prob(z).sum(-1)
        log_joint = (
            Normal(z @ self.ppca.W.T + self.ppca.b, self.ppca.sigma2.sqrt()).log_prob(x).sum(-1)
        )
        return log_joint + Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q

    def log_prior_weights(self, x: torch.Tensor, samples: int, c=None) -> torch.Tensor:
        z = torch.randn(samples, x.shape[0], self.ppca.W.shape[1], dtype=torch.float64)
        return Normal(z @ self.ppca.W.T + self.ppca.b, self.ppca.sigma2.sqrt()).log_prob(x).sum(-1)


def test_iwae_bound_lies_above_the_elbo_rises_with_k_and_stays_below_log_p() -> None:
    torch.manual_seed(0)
    truth, x = _ppca_data(n=64)
    model, exact = _ExactLinearGaussian(truth), truth.log_prob(x)
    bounds = {k: iwae_bound(model, x, k, chunk=37) for k in (1, 10, 1000)}
    iwae_1000, elbo = bounds[1000]
    assert torch.all(iwae_1000 >= elbo)
    means = [float(bounds[k][0].mean()) for k in (1, 10, 1000)]
    assert means[0] < means[1] < means[2] <= float(exact.mean()) + 1e-3
    assert float(exact.mean()) - means[2] < 0.1 * (float(exact.mean()) - means[0])
    assert float(naive_bound(model, x, 10).mean()) < means[1]  # prior samples explain x worse
