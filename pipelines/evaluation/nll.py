"""`vqtok eval nll`: the likelihood report of a continuous-latent checkpoint on shards.

Per input, with K samples: the ELBO (mean log importance weight), the importance-weighted
bound IWAE_K (Burda et al. 2016), and the naive Monte Carlo estimate from prior samples
that the ELBO (Kingma & Welling 2014) improves on, at the same K; plus the ELBO's two
terms (reconstruction E_q log p(x|z) and KL, one sample), active units
(Cov_x(E_q[z_u]) > 0.01) and bits per dimension. Inputs are centre crops of the model's
``input_size`` from the shards' media, binarized once with ``seed`` for a Bernoulli
likelihood (the usual stochastically binarized test set); a conditional VAE is evaluated
given each sample's ``.cls`` class or ``.json`` attributes. Everything is in nats per
input unless named bits.

Bits per dimension are comparable across likelihoods. A discrete likelihood (Bernoulli,
discretized logistic) gives -log2 P(x) per value. A Gaussian gives a density on [-1, 1],
whose NLL / (D ln 2) could be negative and means nothing next to 8-bit figures: for it the
inputs are dequantized (x + u, u uniform over the bin of one 8-bit level, or one 16-bit
step for audio), every bound is of the dequantized inputs, and bits per dimension are
(NLL + D ln(1/w)) / (D ln 2), an upper bound on the bits per 8-bit (16-bit) value that is
not negative in expectation (`vqtok.models.likelihoods`). ``bits_per_dim_basis`` says
which a report holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqtok.models.bounds import iwae_bound, naive_bound
from vqtok.models.likelihoods import DATA_BIN_WIDTH, bits_per_dim, dequantize
from vqtok.models.vae import LatentModel, active_units
from vqtok.pipelines.config import JobConfig, RuntimeOptions
from vqtok.pipelines.data.sources import expand_shards
from vqtok.pipelines.errors import SampleError, UsageError
from vqtok.pipelines.evaluation.vae_pictures import save_vae_pictures
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.training.data import CropBatches, epoch_loader, input_options, media_for

DISCRETE_BASIS = "-log2 P(x) per value (discrete likelihood)"


DATA_BITS = {"image": 8, "video": 8, "audio": 16}  # the quantization DATA_BIN_WIDTH is of


def density_basis(modality: str) -> str:
    """The report's words for the bits of a density on dequantized inputs of ``modality``.

    Args:
        modality: "image", "audio" or "video".

    Returns:
        One line for ``NLLReport.bits_per_dim_basis``.
    """
    return (
        f"bits per {DATA_BITS[modality]}-bit value: a Gaussian density of inputs dequantized "
        f"over bins of {DATA_BIN_WIDTH[modality]:.3g} on [-1, 1] (an upper bound on -log2 P "
        "of the quantized data)"
    )


@dataclass
class NLLReport:
    """Dataset means in nats per input (``nll`` = -IWAE_K, the tightest estimate).

    For a Gaussian likelihood every bound is of the dequantized inputs (``dequantized``);
    ``bits_per_dim_basis`` says what ``bits_per_dim`` counts (module docstring).
    """

    model: str
    model_id: str
    inputs: int
    samples: int
    nll: float
    iwae: float
    elbo: float
    naive: float
    reconstruction: float
    kl: float
    bits_per_dim: float
    active_units: dict[str, int]
    kl_per_layer: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    dequantized: bool = False
    bits_per_dim_basis: str = DISCRETE_BASIS

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data.

        Returns:
            The fields as a dict.
        """
        return asdict(self)


@dataclass
class NLLConfig(JobConfig):
    """Options of `eval nll`: K importance samples per input, at most `limit` inputs (0: all)."""

    samples: int = 1000
    limit: int = 0
    seed: int = 0
    runtime: RuntimeOptions = field(default_factory=lambda: RuntimeOptions(batch_size=32))

    def problems(self) -> list[str]:
        """At least one sample per input and a `limit` of 0 or more.

        Returns:
            One message per broken rule.
        """
        found = [] if self.samples >= 1 else [f"samples must be at least 1, got {self.samples}"]
        return found + (
            [] if self.limit >= 0 else [f"limit must be 0 (all) or more, got {self.limit}"]
        )


@torch.no_grad()
def evaluate_nll(
    checkpoint: str | Path | LatentModel,
    shards: list[str],
    config: NLLConfig | None = None,
    pictures: str | Path | None = None,
) -> NLLReport:
    """The NLLReport of a VAE-family checkpoint on ``shards``.

    Args:
        checkpoint: A VAE, beta-VAE, ladder VAE or CVAE, or its checkpoint directory.
        shards: Media shards: folders, files, brace patterns or URLs.
        config: K samples per input, at most ``config.limit`` inputs (0: all), seed, batch
            size and device.
        pictures: Optional folder for the image pictures of ``save_vae_pictures``, made
            from the first batch of inputs (centre crops of ``input_size``).

    Returns:
        Dataset means in nats per input: -IWAE_K, IWAE_K, ELBO, the naive estimate, the
        ELBO's reconstruction and KL terms, bits per dimension, active units, per-layer KL
        and the count of skipped samples.

    Raises:
        UsageError: For bad options, an unloadable checkpoint, a model without a
            likelihood bound (a plain autoencoder or a tokenizer), or no readable input.
    """
    config = config or NLLConfig()
    config.check()
    samples, batch_size, device = config.samples, config.runtime.batch_size, config.runtime.device
    max_inputs, seed = config.limit or None, config.seed
    model = load_model(checkpoint, device, tokenizer=False)
    if not isinstance(model, LatentModel) or model.config.family == "ae":
        raise UsageError(
            "eval nll needs a VAE, ladder VAE or conditional VAE checkpoint "
            "(no likelihood bound otherwise)"
        )
    torch.manual_seed(seed)
    crop = list(model.config.input_size)
    inputs = input_options(model.config)
    conditional = inputs["condition_size"] > 0
    batches = CropBatches(
        expand_shards(shards),
        media_for(model.config, crop),
        crop,
        batch_size,
        train=False,
        seed=seed,
        **inputs,
    )
    # A density is evaluated on dequantized inputs (module docstring), with its own seeded
    # noise so that the report is reproducible.
    dequantized = not model.likelihood.discrete
    bin_width = DATA_BIN_WIDTH[model.config.modality]
    noise = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = defaultdict(float)
    means: dict[str, list[torch.Tensor]] = defaultdict(list)
    count, skipped, dims = 0, 0, 0
    for item in epoch_loader(batches, 0):
        if isinstance(item, SampleError):
            skipped += 1
            continue
        x, c = item if conditional else (item, None)
        keep = slice(None if max_inputs is None else max_inputs - count)
        x, c = x[keep].to(device), None if c is None else c[keep].to(device)
        if pictures is not None and count == 0:
            save_vae_pictures(model, x, pictures)
        if dequantized:
            x = dequantize(x, bin_width, noise)
        _accumulate(model, x, c, samples, sums, means)
        count, dims = count + x.shape[0], x[0].numel()
        if max_inputs is not None and count >= max_inputs:
            break
    if count == 0:
        raise UsageError("no readable inputs in the given shards")
    return _report(model, sums, means, count, samples, dims, skipped)


def _accumulate(model: LatentModel, x: torch.Tensor, c: torch.Tensor | None, samples: int,
                sums: dict[str, float], means: dict[str, list[torch.Tensor]]) -> None:
    iwae, elbo = iwae_bound(model, x, samples, c)
    sums["iwae"] += float(iwae.sum())
    sums["elbo"] += float(elbo.sum())
    sums["naive"] += float(naive_bound(model, x, samples, c).sum())
    _, _, stats = model(x) if c is None else model(x, c)
    for name, value in stats.items():
        if name == "nll" or name == "kl" or name.startswith("kl_layer"):
            sums[name] += value * x.shape[0]
    encoded = model.encode(x) if c is None else model.encode(x, c)
    for i, layer in enumerate(encoded if isinstance(encoded, list) else [encoded], start=1):
        means[f"layer{i}"].append(layer.cpu())


def _report(model: LatentModel, sums: dict[str, float], means: dict[str, list[torch.Tensor]],
            count: int, samples: int, dims: int, skipped: int) -> NLLReport:
    mean = {name: value / count for name, value in sums.items()}
    discrete, modality = model.likelihood.discrete, model.config.modality
    units = {
        name: active_units(torch.cat(rows)) if count > 1 else 0 for name, rows in means.items()
    }
    return NLLReport(
        model=model.config.preset,
        model_id=model.model_id,
        inputs=count,
        samples=samples,
        nll=-mean["iwae"],
        iwae=mean["iwae"],
        elbo=mean["elbo"],
        naive=mean["naive"],
        reconstruction=-mean["nll"],
        kl=mean["kl"],
        bits_per_dim=bits_per_dim(-mean["iwae"], dims, discrete, DATA_BIN_WIDTH[modality]),
        active_units=units,
        kl_per_layer={k: v for k, v in mean.items() if k.startswith("kl_layer")},
        skipped=skipped,
        dequantized=not discrete,
        bits_per_dim_basis=DISCRETE_BASIS if discrete else density_basis(modality),
    )
