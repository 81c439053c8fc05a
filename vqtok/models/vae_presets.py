"""Named continuous-latent presets, registered in ``vqtok.registry.MODELS`` beside the tokenizers.

Flat models take (1, 28, 28) images (the MNIST family; change ``input_size`` for others);
conv models take any size (``input_size`` is their training crop and default sample size).
The conv ladder and conditional presets are MNIST-sized too, small enough to train on a
CPU. Scale them with overrides, e.g.
``vqtok.create_model("image-vae-mlp", latent_dim=64, likelihood="logistic")``.
"""

from __future__ import annotations

from typing import Any

from vqtok.models.conv_ladder import ConvLadderVAE
from vqtok.models.cvae import ConditionalVAE
from vqtok.models.ladder import FlatLadderVAE
from vqtok.models.vae import VAE, LatentModel
from vqtok.models.vae_config import VAEConfig
from vqtok.registry import register_model

FLAT = {"modality": "image", "channels": 1, "input_size": (28, 28), "network": "mlp",
        "hidden": (512, 256), "latent_dim": 32, "likelihood": "bernoulli"}
# Wider next to the latent than the VAE, and a 16-Gaussian p(z|c): on Fashion-MNIST each
# lifts the share of class-conditional samples a classifier recognizes (BENCHMARKS.md).
FLAT_CVAE = {**FLAT, "family": "cvae", "num_classes": 10, "hidden": (512, 512)}
LADDER_HIDDEN = (512, 256, 128, 64, 32)
LADDER_DIMS = (64, 32, 16, 8, 4)  # Sonderby et al. (2016), MNIST


# 28x28 (padded to 32) -> latents at 16x16, 8x8 and 4x4 (ladder) or 7x7 (cvae).
CONV_IMAGE = {"modality": "image", "channels": 1, "input_size": (28, 28), "network": "conv",
              "likelihood": "bernoulli"}
CONV_LADDER = {
    "stage_strides": ((2, 2),) * 3,
    "widths": (16, 32, 64, 64),
    "ladder_dims": (4, 8, 16),
    "family": "ladder",
    "kl_warmup_steps": 2000,
}
CONV_CVAE = {
    "stage_strides": ((2, 2),) * 2,
    "widths": (16, 32, 64),
    "latent_dim": 4,
    "family": "cvae",
    "num_classes": 10,
}


def _ladder(name: str, layers: int) -> VAEConfig:
    return VAEConfig(preset=name, **{**FLAT, "family": "ladder", "hidden": LADDER_HIDDEN[:layers],
                                     "ladder_dims": LADDER_DIMS[:layers], "kl_warmup_steps": 2000})


VAE_PRESETS: dict[str, VAEConfig] = {
    "image-vae-mlp": VAEConfig(preset="image-vae-mlp", **FLAT),
    "image-beta-vae-mlp": VAEConfig(preset="image-beta-vae-mlp", **{**FLAT, "beta": 4.0}),
    "image-ae-mlp": VAEConfig(preset="image-ae-mlp", **{**FLAT, "family": "ae"}),
    "image-ladder3-vae-mlp": _ladder("image-ladder3-vae-mlp", 3),
    "image-ladder5-vae-mlp": _ladder("image-ladder5-vae-mlp", 5),
    "image-cvae-mlp": VAEConfig(preset="image-cvae-mlp", **FLAT_CVAE),
    "image-cvae-prior-mlp": VAEConfig(
        preset="image-cvae-prior-mlp",
        **{**FLAT_CVAE, "learned_prior": True, "prior_components": 16},
    ),
    # With a linear network and one learned sigma this is probabilistic PCA, trained as a VAE.
    "image-linear-vae": VAEConfig(
        preset="image-linear-vae",
        **{**FLAT, "network": "linear", "latent_dim": 8, "likelihood": "gaussian_learned"},
    ),
    "image-vae-f4": VAEConfig(
        preset="image-vae-f4",
        modality="image",
        channels=3,
        input_size=(32, 32),
        network="conv",
        stage_strides=((2, 2),) * 2,
        widths=(16, 32, 64),
        latent_dim=8,
        likelihood="logistic",
    ),
    "audio-vae-conv": VAEConfig(
        preset="audio-vae-conv",
        modality="audio",
        channels=1,
        input_size=(16000,),
        network="conv",
        stage_strides=((4,), (4,), (5,)),
        widths=(16, 32, 64, 64),
        latent_dim=16,
        likelihood="gaussian",
        sigma=0.05,
        sample_rate=16000,
    ),
    "video-vae-conv": VAEConfig(
        preset="video-vae-conv",
        modality="video",
        channels=3,
        input_size=(9, 32, 32),
        network="conv",
        stage_strides=((2, 2, 2), (2, 2, 2)),
        widths=(16, 32, 48),
        latent_dim=8,
        causal_time=True,
        likelihood="logistic",
        fps=8.0,
        clip_frames=9,
    ),
    "image-ladder3-vae-conv": VAEConfig(
        preset="image-ladder3-vae-conv", **CONV_IMAGE, **CONV_LADDER
    ),
    "audio-ladder3-vae-conv": VAEConfig(
        preset="audio-ladder3-vae-conv",
        **{
            **CONV_LADDER,
            "modality": "audio",
            "channels": 1,
            "input_size": (16000,),
            "network": "conv",
            "stage_strides": ((4,), (4,), (5,)),
            "likelihood": "gaussian",
            "sigma": 0.05,
            "sample_rate": 16000,
        },
    ),
    "image-cvae-conv": VAEConfig(preset="image-cvae-conv", **CONV_IMAGE, **CONV_CVAE),
    "image-cvae-prior-conv": VAEConfig(
        preset="image-cvae-prior-conv", **CONV_IMAGE, **CONV_CVAE, learned_prior=True
    ),
}


def build_latent_model(config: VAEConfig) -> LatentModel:
    """The model class of ``config.family`` built from ``config``."""
    if config.family == "ladder":
        return ConvLadderVAE(config) if config.network == "conv" else FlatLadderVAE(config)
    if config.family == "cvae":
        return ConditionalVAE(config)
    return VAE(config)


def vae_preset_config(name: str, **overrides: Any) -> VAEConfig:
    """The config of VAE preset ``name`` with ``overrides`` applied."""
    if name not in VAE_PRESETS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(VAE_PRESETS))}")
    return VAE_PRESETS[name].with_overrides(**overrides)


def _register(name: str) -> None:
    @register_model(name)
    def build(**overrides: Any) -> LatentModel:
        return build_latent_model(vae_preset_config(name, **overrides))


for _name in VAE_PRESETS:
    _register(_name)
