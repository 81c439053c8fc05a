"""Monte Carlo bounds on log p(x) from a model's log importance weights.

With K samples z_k ~ q(z|x) and weights w_k = p(x, z_k) / q(z_k|x):

    ELBO  = mean_k log w_k   <=   IWAE_K = log (1/K) sum_k w_k   <=   log p(x)

(Burda et al. 2016; IWAE_K rises with K towards log p(x)). The naive estimate of the
marginal likelihood p(x) = E_{p(z)} p(x|z) (Kingma and Welling 2014),
log (1/K) sum_k p(x|z_k) with z_k ~ p(z), is consistent but, for any K a
computer affords, falls far below: prior samples rarely explain x.
Log-sum-exps accumulate in float64 over chunks of samples, so K = 1000 fits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

WeightFn = Callable[[int], Tensor]  # samples -> (samples, B) log weights


@torch.no_grad()
def log_mean_exp(weights: WeightFn, samples: int, chunk: int = 100) -> tuple[Tensor, Tensor]:
    """(log (1/K) sum_k exp(w_k), mean_k w_k), each (B,) float64, drawing K = ``samples``
    log weights ``chunk`` at a time."""
    total, mean, drawn = None, None, 0
    while drawn < samples:
        size = min(chunk, samples - drawn)
        w = weights(size).double()
        part = torch.logsumexp(w, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        mean = w.sum(dim=0) if mean is None else mean + w.sum(dim=0)
        drawn += size
    return total - math.log(samples), mean / samples


def iwae_bound(
    model, x: Tensor, samples: int, c: Tensor | None = None, chunk: int = 100
) -> tuple[Tensor, Tensor]:
    """(IWAE_K, ELBO) per input, (B,) float64 each, from K = ``samples`` posterior samples."""
    return log_mean_exp(lambda k: model.log_importance_weights(x, k, c), samples, chunk)


def naive_bound(
    model, x: Tensor, samples: int, c: Tensor | None = None, chunk: int = 100
) -> Tensor:
    """log (1/K) sum_k p(x|z_k), z_k ~ p(z): the naive Monte Carlo estimate, (B,) float64."""
    return log_mean_exp(lambda k: model.log_prior_weights(x, k, c), samples, chunk)[0]
