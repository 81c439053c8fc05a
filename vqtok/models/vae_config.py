"""VAEConfig: the architecture and objective of a continuous-latent model, as a JSON-able
dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vqtok.models.config import MODALITY_DIMS, ConvGeometry
from vqtok.models.likelihoods import LIKELIHOODS

FAMILIES = ("vae", "ae", "ladder", "cvae")
NETWORKS = ("mlp", "linear", "conv")


@dataclass
class VAEConfig(ConvGeometry):
    """A continuous-latent model of ``vqtok.models.vae_presets``.

    family: "vae" (also beta-VAE), "ae" (the deterministic autoencoder, same networks),
        "ladder" (Sonderby et al. 2016) or "cvae" (conditional, Kingma et al. 2014).
    network: "mlp" (flat inputs of shape (channels, *input_size)), "linear" (one affine map
        each way: with "gaussian_learned" this is probabilistic PCA), or "conv" (the residual
        conv stacks of the tokenizers; any input size, ``input_size`` sets the sample size).
        Every family takes "mlp" and "conv"; all but "ladder" take "linear".
    hidden: MLP widths, input side first (ladder: one deterministic block per layer).
    latent_dim: K, the latent size (conv: latent channels per position; unused by ladders).
    ladder_dims: ladder only, latent size per stochastic layer (conv: channels), bottom (next
        to x) first; a conv ladder has one layer per stage of ``stage_strides``.
    stage_strides, widths, blocks_per_stage, causal_time: the conv stacks (see TokenizerConfig).
    likelihood, sigma: p(x|z) (see ``vqtok.models.likelihoods``); sigma for the Gaussians.
    beta: weight of the KL term; with ``beta_normalized`` it is Higgins et al. (2017)'s
        beta_norm = beta K / n, and the KL weight applied is beta_norm * n / K, with n (input
        values) and K (latent units) counted on the same, actual input: a conv model fed
        crops of another size than ``input_size`` keeps its weight per unit of KL.
    kl_warmup_steps: the KL weight ramps linearly from 0 over these training steps.
    free_bits: nats per latent unit below which the KL is not penalized (Kingma et al. 2016);
        with a mixture prior, whose KL does not split by unit, the floor is K * free_bits for
        the whole latent.
    num_classes: cvae, size M of the condition c: a one-hot class, or M `.json` attributes.
    learned_prior: cvae, p(z|c) instead of p(z).
    prior_components: flat cvae with learned_prior, p(z|c) is a mixture of
        this many diagonal Gaussians per condition (1: one Gaussian, closed-form KL; more: a
        one-sample Monte Carlo KL), which fills the holes a single Gaussian leaves between
        the posteriors of one class.
    """

    preset: str
    family: str = "vae"
    modality: str = "image"
    channels: int = 1
    input_size: tuple[int, ...] = (28, 28)
    network: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    latent_dim: int = 32
    ladder_dims: tuple[int, ...] = ()
    stage_strides: tuple[tuple[int, ...], ...] = ()
    widths: tuple[int, ...] = ()
    blocks_per_stage: int = 1
    causal_time: bool = False
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    beta: float = 1.0
    beta_normalized: bool = False
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    num_classes: int = 0
    learned_prior: bool = False
    prior_components: int = 1
    sample_rate: int | None = None
    fps: float | None = None
    clip_frames: int | None = None

    def __post_init__(self) -> None:
        self.input_size = tuple(int(s) for s in self.input_size)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.ladder_dims = tuple(int(d) for d in self.ladder_dims)
        self.stage_strides = tuple(tuple(int(s) for s in stage) for stage in self.stage_strides)
        self.widths = tuple(int(w) for w in self.widths)
        self._check()

    def _check(self) -> None:
        choices = {"family": FAMILIES, "network": NETWORKS, "modality": tuple(MODALITY_DIMS),
                   "likelihood": LIKELIHOODS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if len(self.input_size) != self.dims:
            raise ValueError(
                f"{self.modality} needs input_size of {self.dims} sizes, got {self.input_size}"
            )
        if self.network == "conv":
            self._check_conv()
        if self.family == "ladder":
            self._check_ladder()
        if self.family == "cvae" and self.num_classes < 2:
            raise ValueError(f"cvae needs num_classes >= 2, got {self.num_classes}")
        if self.prior_components < 1:
            raise ValueError(f"prior_components must be >= 1, got {self.prior_components}")
        if self.prior_components > 1 and not (self.family == "cvae" and self.learned_prior
                                              and self.network != "conv"):
            raise ValueError(
                "prior_components > 1 needs a flat (mlp or linear) cvae with learned_prior"
            )
        if self.beta < 0 or self.free_bits < 0 or self.kl_warmup_steps < 0 or self.sigma <= 0:
            raise ValueError("beta, free_bits and kl_warmup_steps must be >= 0 and sigma > 0")
        if min(self.channels, self.latent_dim, *self.input_size) < 1:
            raise ValueError("channels, latent_dim and input_size must be positive")

    def _check_conv(self) -> None:
        if not self.stage_strides or len(self.widths) != len(self.stage_strides) + 1:
            raise ValueError("conv networks need stage_strides and one more widths than stages")
        if any(len(stage) != self.dims for stage in self.stage_strides):
            raise ValueError(
                f"{self.modality} needs stage_strides of {self.dims}-tuples, "
                f"got {self.stage_strides}"
            )

    def _check_ladder(self) -> None:
        if len(self.ladder_dims) < 2 or min(self.ladder_dims) < 1:
            raise ValueError(
                f"ladder VAEs need at least 2 positive ladder_dims, got {self.ladder_dims}"
            )
        if self.network == "mlp" and len(self.hidden) != len(self.ladder_dims):
            raise ValueError(
                f"mlp ladder VAEs need one hidden width per layer: {len(self.ladder_dims)} "
                f"ladder_dims, {len(self.hidden)} hidden"
            )
        if self.network == "conv" and len(self.stage_strides) != len(self.ladder_dims):
            raise ValueError(
                f"conv ladder VAEs have one stochastic layer per stage: {len(self.ladder_dims)} "
                f"ladder_dims, {len(self.stage_strides)} stage_strides"
            )
        if self.network == "linear":
            raise ValueError("ladder VAEs need an mlp or conv network")

    @property
    def input_dim(self) -> int:
        """n, the number of values in one input of size ``input_size``."""
        return self.channels * math.prod(self.input_size)

    def kl_weight(self, latent_units: int, input_values: int) -> float:
        """The KL weight: beta, or beta_norm * n / K when ``beta_normalized``.

        Args:
            latent_units: K, the latent units of one input.
            input_values: n, the values of that same input (C * prod(spatial)). Both come
                from the input at hand, not from ``input_size``: conv models take any size,
                and n from the config with K from a larger crop shrank the weight.

        Returns:
            The weight of the KL term in the loss.
        """
        if not self.beta_normalized:
            return self.beta
        return self.beta * input_values / latent_units

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); ``"family"`` marks it as a VAE config."""
        out = dataclasses.asdict(self)
        out["stage_strides"] = [list(s) for s in self.stage_strides]
        for name in ("input_size", "hidden", "ladder_dims", "widths"):
            out[name] = list(out[name])
        return out

    def identity_dict(self) -> dict[str, Any]:
        """``to_dict`` without the fields added after checkpoints existed, where they hold the
        value older configs implied: what the content hash covers, so older ids still match."""
        out = self.to_dict()
        for name, implied in ADDED_LATER.items():
            if out[name] == implied:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        _refuse_unknown(data)
        return cls(**data)

    def with_overrides(self, **overrides: Any) -> VAEConfig:
        """A copy with fields replaced; unknown names raise ValueError."""
        _refuse_unknown(overrides)
        return dataclasses.replace(self, **overrides)


# Fields introduced after the first VAE checkpoints, and the value those checkpoints imply.
ADDED_LATER: dict[str, Any] = {"prior_components": 1}


def _refuse_unknown(keys: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(VAEConfig)}
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(
            f"unknown VAE config keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
