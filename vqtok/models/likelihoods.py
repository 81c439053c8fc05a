"""Observation models p(x|z) for data x in [-1, 1], as the VAEs' decoders parameterize them.

A decoder emits ``params_per_channel * C`` channels; a likelihood splits them into its
parameters and returns exact log-densities (or log-probabilities for discrete data) in nats,
elementwise, so that the VAE's loss is a true negative ELBO:

- "bernoulli": binary data (x in {-1, 1}, read as bits (x + 1) / 2); one logit per value.
- "gaussian": N(x; mu, sigma^2) with sigma a fixed hyperparameter: p(x|z) = N(f(z), sigma^2 I),
  the Gaussian decoder of Kingma and Welling (2014) with its variance fixed.
- "gaussian_learned": the same with one learned sigma shared by every value (so that a
  linear decoder is exactly probabilistic PCA's p(x|z) = N(Wz + b, sigma^2 I)).
- "logistic": the discretized logistic of PixelCNN++ (Salimans et al. 2017) for 8-bit data:
  the probability mass of the bin of width 2/255 around x, edge bins open to +-infinity;
  its negative log-likelihood divided by (D ln 2) is bits per dimension.

Bits per dimension. For the discrete likelihoods (Bernoulli, discretized logistic) the NLL
is -log P(x), and bits per dimension are NLL / (D ln 2), in [0, 8] for 8-bit data. A
Gaussian is a density on the [-1, 1] scale: its NLL can be negative, and NLL / (D ln 2) is
not comparable with those figures. `bits_per_dim` puts it on the data's own scale instead:
8-bit data lies on bins of width w = 2/255 of [-1, 1] (one level of 0..255), and

    -log2 P(bin) ~= -log2 (p(x) w^D) = (NLL + D ln(1/w)) / (D ln 2),

i.e. (NLL + D ln 127.5) / (D ln 2) for images, bits per 8-bit value (Theis et al. 2016).
Evaluated on uniformly dequantized data x + u, u ~ U(-w/2, w/2) (`dequantize`), its
expectation is an upper bound on the discrete -log2 P(bin) >= 0 (Jensen: E_u[-log p(x+u)]
>= -log of the bin's mass), so it is comparable with 8-bit figures and not negative; on
bin centres alone, as in a training batch, it is only the density-times-width
approximation. Audio uses the bins of 16-bit PCM (w = 1/32768).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.models.gaussian import log_normal

BIN_HALF_WIDTH = 1.0 / 255.0  # 256 levels spread over [-1, 1]
MIN_LOG_SCALE = -7.0


# The width, on the [-1, 1] scale, of one quantization step of the data a modality's files
# hold: 8-bit pixels (v / 127.5 - 1) and 16-bit PCM samples (soundfile reads k / 32768).
DATA_BIN_WIDTH = {"image": 2.0 / 255.0, "video": 2.0 / 255.0, "audio": 1.0 / 32768.0}


class Likelihood(nn.Module):
    """Base: ``log_prob(params, x)`` elementwise log p(x|z); ``mean`` and ``sample`` in data space.

    params: (B, params_per_channel * C, *spatial) float; x: (B, C, *spatial) float in [-1, 1].
    ``discrete``: log_prob is a log-probability (True) or a log-density (False).
    """

    params_per_channel = 1
    discrete = True

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, params: Tensor) -> Tensor:
        raise NotImplementedError


class Bernoulli(Likelihood):
    """p(x|z) = prod_k l_k^{b_k} (1 - l_k)^{1 - b_k} with b = (x + 1) / 2 and
    l = sigmoid(logits)."""

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        bits = (x + 1.0) * 0.5
        return -F.binary_cross_entropy_with_logits(params, bits, reduction="none")

    def mean(self, params: Tensor) -> Tensor:
        return 2.0 * torch.sigmoid(params) - 1.0

    def sample(self, params: Tensor) -> Tensor:
        return 2.0 * torch.bernoulli(torch.sigmoid(params)) - 1.0


class Gaussian(Likelihood):
    """p(x|z) = N(x; mu(z), sigma^2), sigma fixed (``learned=False``) or one learned scalar."""

    discrete = False

    def __init__(self, sigma: float, learned: bool = False) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        log_sigma = torch.tensor([math.log(sigma)])  # (1,): 0-dim tensors cannot be hashed as bytes
        if learned:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return log_normal(x, params, 2.0 * self.log_sigma)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def sample(self, params: Tensor) -> Tensor:
        return params + torch.exp(self.log_sigma) * torch.randn_like(params)


class DiscretizedLogistic(Likelihood):
    """P(x|z) = CDF((x + 1/255 - mu)/s) - CDF((x - 1/255 - mu)/s), with CDF = sigmoid, the
    lowest and highest of the 256 bins extending to -inf and +inf so that the masses sum to 1.
    params: mean and log-scale, (B, 2C, *spatial)."""

    params_per_channel = 2

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mu, log_scale = self._split(params)
        inv_scale = torch.exp(-log_scale)
        upper = inv_scale * (x - mu + BIN_HALF_WIDTH)
        lower = inv_scale * (x - mu - BIN_HALF_WIDTH)
        log_cdf_upper = F.logsigmoid(upper)  # log CDF, for the lowest bin
        log_survival_lower = F.logsigmoid(-lower)  # log (1 - CDF), for the highest bin
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        # Where the bin's mass underflows, the density at its centre times its width is exact
        # to first order and keeps gradients alive.
        centre = inv_scale * (x - mu)
        log_density = centre - log_scale - 2.0 * F.softplus(centre) + math.log(2.0 * BIN_HALF_WIDTH)
        interior = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_density)
        top = x > 1.0 - BIN_HALF_WIDTH
        bottom = x < -1.0 + BIN_HALF_WIDTH
        return torch.where(bottom, log_cdf_upper, torch.where(top, log_survival_lower, interior))

    def mean(self, params: Tensor) -> Tensor:
        return self._split(params)[0].clamp(-1.0, 1.0)

    def sample(self, params: Tensor) -> Tensor:
        mu, log_scale = self._split(params)
        u = torch.rand_like(mu).clamp(1e-5, 1.0 - 1e-5)
        x = mu + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return quantize_8bit(x)

    @staticmethod
    def _split(params: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_scale = params.chunk(2, dim=1)
        return mu, log_scale.clamp_min(MIN_LOG_SCALE)


def quantize_8bit(x: Tensor) -> Tensor:
    """Round values to the nearest of the 256 levels of [-1, 1] (clamped into range)."""
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


def bits_per_dim(nll: float, dims: int, discrete: bool, bin_width: float) -> float:
    """Bits per dimension of an NLL, comparable across likelihoods (see the module docstring).

    Args:
        nll: -log p(x) in nats for one input of ``dims`` values (a mean over inputs is fine).
        dims: D, the values per input.
        discrete: Whether ``nll`` is of a probability (else of a density on [-1, 1]).
        bin_width: w, the data's quantization step on [-1, 1] (``DATA_BIN_WIDTH``); unused
            for discrete likelihoods.

    Returns:
        NLL / (D ln 2) for a discrete likelihood; (NLL - D ln w) / (D ln 2), bits per
        quantized value, for a density.
    """
    if discrete:
        return nll / (dims * math.log(2.0))
    return (nll - dims * math.log(bin_width)) / (dims * math.log(2.0))


def dequantize(x: Tensor, bin_width: float, generator: torch.Generator | None = None) -> Tensor:
    """x + u with u ~ U(-w/2, w/2) elementwise: quantized data spread over its bins, so that
    a density's NLL of it bounds the bits of the quantized data (module docstring).

    Args:
        x: (B, ...) float, data on bin centres.
        bin_width: w.
        generator: Optional source of the noise (CPU), for reproducible evaluations.

    Returns:
        x's shape and dtype.
    """
    u = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return x + (u - 0.5) * bin_width


LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "logistic")


def make_likelihood(name: str, sigma: float = 0.1) -> Likelihood:
    """The likelihood ``name`` (one of LIKELIHOODS); ``sigma`` is the Gaussians' (initial) sigma."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(sigma)
    if name == "gaussian_learned":
        return Gaussian(sigma, learned=True)
    if name == "logistic":
        return DiscretizedLogistic()
    raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {name!r}")
