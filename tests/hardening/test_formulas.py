"""Formulas against closed forms: KL weight, bits per dimension, weight EMA of VQ codebooks.

The three findings of the formula review (issue 22), each checked against the definition:
beta_norm's n and K, bits per dimension of a density, and e = m / N~ after weight EMA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import vqtok
from vqtok.models.likelihoods import DATA_BIN_WIDTH, Gaussian, bits_per_dim, dequantize
from vqtok.pipelines import make_shards
from vqtok.pipelines.evaluation.nll import NLLConfig, evaluate_nll
from vqtok.pipelines.training.ema import WeightEMA
from vqtok.quantizers.vq import VectorQuantizer

# image-vae-f4 is configured for 32x32; the crop of the report is 64x64.
CROPS = [(32, 32), (64, 64)]
CONV_PRESETS = {
    "image-vae-f4": {"widths": (8, 8, 8)},
    "image-ladder3-vae-conv": {"widths": (8, 8, 8, 8), "kl_warmup_steps": 0},
    "image-cvae-conv": {"widths": (8, 8, 8)},
}


def latent_units(config, size: tuple[int, int]) -> int:
    """K from the definition: each latent layer's channels times its positions, the input
    downsampled by the product of the strides up to that layer (inputs are multiples here)."""
    if config.family != "ladder":  # one latent, after every stage
        return config.latent_dim * math.prod(
            s // math.prod(st[i] for st in config.stage_strides) for i, s in enumerate(size)
        )
    total = 0
    for depth, dims in enumerate(config.ladder_dims, start=1):
        factor = [math.prod(st[i] for st in config.stage_strides[:depth]) for i in range(2)]
        total += dims * math.prod(s // f for s, f in zip(size, factor, strict=True))
    return total


@pytest.mark.reliability(
    input="image-vae-f4 (configured for 32x32), a conv ladder and a conv CVAE, "
    "beta_normalized with beta_norm 0.25, crops 32x32 and 64x64",
    fault="beta_norm took n from the config's input_size and K from the actual latent: "
    "at 64x64 the KL weight was 4x too small",
    expected="KL weight = beta_norm * n / K with n = C*H*W and K the latent units of the "
    "same input, for both crops; the KL loss is that weight times the KL",
)
@pytest.mark.parametrize("preset", sorted(CONV_PRESETS))
def test_kl_weight_counts_n_and_k_on_the_actual_input(preset, observed):
    beta = 0.25
    model = vqtok.create_model(preset, beta=beta, beta_normalized=True, **CONV_PRESETS[preset])
    model.eval()  # no warm-up ramp: the full weight
    config, seen = model.config, []
    for size in CROPS:
        g = torch.Generator().manual_seed(0)
        x = torch.where(torch.rand(2, config.channels, *size, generator=g) > 0.5, 1.0, -1.0)
        with torch.no_grad():
            _, losses, stats = model(x, torch.tensor([0, 1])) if config.family == "cvae" \
                else model(x)
        n, k = config.channels * math.prod(size), latent_units(config, size)
        assert stats["kl_weight"] == pytest.approx(beta * n / k, rel=1e-12)
        assert float(losses["kl"]) == pytest.approx(stats["kl_weight"] * stats["kl"], rel=1e-5)
        seen.append(f"{size[0]}x{size[1]}: n={n}, K={k}, weight {stats['kl_weight']:.4g}")
    observed("; ".join(seen))


def _discrete_bits(sigma: float, width: float) -> float:
    """-log2 of the exact mass N(x, sigma^2) puts on the bin of width w around its mean."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), sigma)
    return -math.log2(float(normal.cdf(torch.tensor(width / 2)) - normal.cdf(torch.tensor(
        -width / 2))))


@pytest.mark.reliability(
    input="Gaussian p(x|z) = N(x; x, sigma^2) on 8-bit data, sigma from 0.001 to 0.5; "
    "a Gaussian VAE through eval nll",
    fault="bits per dimension of a density computed as for a probability, on [-1, 1], "
    "not dequantized: negative (sigma 0.001: -8.6) and not comparable with 8-bit figures",
    expected="dequantized, on the 0-255 scale: the closed form "
    "(ln(2 pi sigma^2)/2 + w^2/(24 sigma^2) - ln w) / ln 2, >= the exact discrete bits >= 0; "
    "eval nll labels the basis",
)
@pytest.mark.parametrize("sigma", [0.001, 0.01, 0.1, 0.5])
def test_gaussian_bits_per_dim_are_dequantized_on_the_8_bit_scale(sigma, observed):
    width = DATA_BIN_WIDTH["image"]
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    x = levels.repeat(400).view(1, 1, -1)  # every 8-bit level, 400 times
    dims = x[0].numel()
    gaussian = Gaussian(sigma).double()
    noisy = dequantize(x, width, torch.Generator().manual_seed(0))
    assert float((noisy - x).abs().max()) <= width / 2
    nll = -float(gaussian.log_prob(x, noisy).sum())  # the decoder's mean is the bin centre
    closed = (0.5 * math.log(2 * math.pi * sigma**2) + width**2 / (24 * sigma**2)
              - math.log(width)) / math.log(2)
    got = bits_per_dim(nll, dims, discrete=False, bin_width=width)
    # Monte Carlo over 102400 values: the spread of u^2 / (2 sigma^2) sets the tolerance.
    spread = width**2 / (2 * sigma**2) * math.sqrt(1 / 180) / math.log(2) / math.sqrt(dims)
    assert abs(got - closed) < 5 * spread + 1e-9
    exact = _discrete_bits(sigma, width)
    assert got >= exact - 5 * spread >= -5 * spread  # an upper bound on real bits, not negative
    old = -float(gaussian.log_prob(x, x).sum()) / (dims * math.log(2))  # as reported before
    observed(f"sigma {sigma}: {got:.3f} bits (closed form {closed:.3f}, exact discrete "
             f"{exact:.3g}; the old formula gave {old:.2f})")


def test_eval_nll_of_a_gaussian_vae_reports_dequantized_labelled_bits(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(src / f"{i}.png")
    make_shards(src, tmp_path / "shards", "image", maxcount=6)
    torch.manual_seed(0)
    model = vqtok.create_model("image-vae-mlp", likelihood="gaussian", sigma=0.05, hidden=(16,),
                               latent_dim=2, input_size=(8, 8))
    report = evaluate_nll(model, [str(tmp_path / "shards")], NLLConfig(samples=4))
    dims = 64
    assert report.dequantized and "8-bit value" in report.bits_per_dim_basis
    want = (report.nll + dims * math.log(127.5)) / (dims * math.log(2))
    assert report.bits_per_dim == pytest.approx(want, rel=1e-9)
    assert report.to_dict() == evaluate_nll(
        model, [str(tmp_path / "shards")], NLLConfig(samples=4)
    ).to_dict()  # the dequantization noise is seeded
    discrete = vqtok.create_model("image-vae-mlp", hidden=(16,), latent_dim=2, input_size=(8, 8))
    plain = evaluate_nll(discrete, [str(tmp_path / "shards")], NLLConfig(samples=4))
    assert not plain.dequantized and "discrete" in plain.bits_per_dim_basis
    assert plain.bits_per_dim == pytest.approx(plain.nll / (dims * math.log(2)), rel=1e-9)


def _codebook_gap(model: torch.nn.Module) -> float:
    """max |e - m / N~| over the EMA codebooks of ``model``, recomputed in float64."""
    gaps = []
    for vq in (m for m in model.modules() if isinstance(m, VectorQuantizer)):
        n, m = vq.cluster_size.double(), vq.embed_sum.double()
        total = n.sum()
        smoothed = (n + vq.config.eps) / (total + n.numel() * vq.config.eps) * total
        gaps.append(float((vq.codebook.double() - m / smoothed[:, None]).abs().max()))
    assert gaps
    return max(gaps)


def _per_buffer_average(average: dict, live: dict, decay: float) -> None:
    """The old WeightEMA: every float tensor lerped alone."""
    for name, value in average.items():
        if value.is_floating_point():
            value.lerp_(live[name], 1.0 - decay)
        else:
            value.copy_(live[name])


def _train_step(model, optimizer, x) -> None:
    _, losses, _ = model(x)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


@pytest.mark.reliability(
    input="image VQ tokenizer (EMA codebook, K=32) trained 40 steps with weight EMA",
    fault="weight EMA averaged the codebook and its statistics (N, m) one by one: in the "
    "averaged model e != m / N~, and fine-tuning from it jumps at the first EMA step",
    expected="averaged model: e = m / N~ (float64 recompute, 1e-5); its first fine-tuning "
    "step moves the codebook no more than the live model's steps do",
)
def test_weight_ema_keeps_the_codebook_equal_to_its_statistics(observed):
    torch.manual_seed(0)
    options = {"codebook_size": 32, "decay": 0.8, "dead_code_threshold": 0}
    model = vqtok.create_model("image-vq-f8", widths=(8, 8, 8, 8), quantizer_options=options)
    model.train()
    ema = WeightEMA(model, decay=0.9)
    naive = {k: v.clone() for k, v in ema.model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(64, 3, 16, 16, generator=g) * 2 - 1
    live_moves = []
    for step in range(40):
        before = model.quantizer.codebook.clone()
        _train_step(model, optimizer, images[(step % 8) * 8 : (step % 8) * 8 + 8])
        live_moves.append(float((model.quantizer.codebook - before).abs().max()))
        _per_buffer_average(naive, model.state_dict(), min(0.9, (1 + step) / (10 + step)))
        ema.update(model)
    gap = _codebook_gap(ema.model)
    assert gap < 1e-5
    stale = vqtok.create_model("image-vq-f8", widths=(8, 8, 8, 8), quantizer_options=options)
    stale.load_state_dict(naive)
    old_gap = _codebook_gap(stale)

    def first_fine_tuning_move(state: dict) -> float:
        tuned = vqtok.create_model("image-vq-f8", widths=(8, 8, 8, 8),
                                   quantizer_options=options).train()
        tuned.load_state_dict(state)
        before = tuned.quantizer.codebook.clone()
        _train_step(tuned, torch.optim.Adam(tuned.parameters(), lr=3e-3), images[:8])
        return float((tuned.quantizer.codebook - before).abs().max())

    move, old_move = first_fine_tuning_move(ema.model.state_dict()), first_fine_tuning_move(naive)
    assert move <= max(live_moves[-10:])
    observed(f"e - m/N~: {gap:.1g} (per-buffer averaging: {old_gap:.2f}); first fine-tuning "
             f"step moves the codebook {move:.3f} (live steps up to {max(live_moves[-10:]):.3f}; "
             f"from the per-buffer average {old_move:.3f})")
