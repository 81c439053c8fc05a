"""Named tokenizer presets, registered in ``vqtok.registry.MODELS``.

All are small enough to train on a CPU; scale them with overrides, e.g.
``vqtok.create_model("image-vq-f8", widths=(64, 128, 192, 256), latent_dim=64)``.
"""

from __future__ import annotations

from typing import Any

from vqtok.models.config import TokenizerConfig
from vqtok.models.tokenizer import VQTokenizer
from vqtok.registry import register_model

# Codes looked up in 8 dimensions on the unit sphere (the factorized, l2-normalized codes of
# ViT-VQGAN, for better codebook use), and a 16k-token usage window so that dead codes are
# restarted every 32 steps of 8 images of 64x64 at f8, not every 128.
VQ_OPTIONS = {"codebook_size": 1024, "codebook_dim": 8, "metric": "cosine", "usage_window": 16384}
# Audio, measured on the demo's speech (issue 19): its latents start in a narrow cone, and the
# first optimizer steps shift them all alike onto a few codes (1 of 1024 per batch after 6
# steps, also at lr 1e-5 and after a 500-step warm-up). Centred latents do not move
# together (220 of 1024 codes in perplexity after 80 steps at lr 1e-3 instead of 1-4). At
# 50 codes per second a training step brings a few hundred tokens (200 at the demo's batch
# of 8 half-second crops), so a 4096-token window lets dead codes restart every ~20 steps
# instead of every 82.
AUDIO_VQ_OPTIONS = {**VQ_OPTIONS, "usage_window": 4096, "center": True}
# Residuals of unit vectors are not unit vectors, so residual VQ keeps the l2 metric.
RVQ_OPTIONS = {"codebook_size": 1024, "num_levels": 4, "codebook_dim": 8, "usage_window": 16384}

IMAGE_WIDTHS = (16, 32, 64, 128, 128)


def image_preset(name: str, stages: int, quantizer: str) -> TokenizerConfig:
    """RGB, 2x per side per stage (2^stages in all), narrow at full resolution for CPU speed."""
    return TokenizerConfig(
        preset=name,
        modality="image",
        channels=3,
        stage_strides=((2, 2),) * stages,
        widths=IMAGE_WIDTHS[: stages + 1],
        latent_dim=32,
        quantizer=quantizer,
        quantizer_options=RVQ_OPTIONS if quantizer == "rvq" else VQ_OPTIONS,
    )


PRESETS: dict[str, TokenizerConfig] = {
    "audio-vq-16k": TokenizerConfig(
        preset="audio-vq-16k",
        modality="audio",
        channels=1,
        stage_strides=((2,), (4,), (5,), (8,)),  # hop 320: 50 codes per second at 16 kHz
        widths=(16, 32, 64, 96, 128),
        latent_dim=32,
        blocks_per_stage=2,
        dilation_growth=3,
        quantizer="vq",
        quantizer_options=AUDIO_VQ_OPTIONS,
        sample_rate=16000,
    ),
    "image-vq-f8": image_preset("image-vq-f8", stages=3, quantizer="vq"),
    "image-vq-f16": image_preset("image-vq-f16", stages=4, quantizer="vq"),
    "image-rvq-f8": image_preset("image-rvq-f8", stages=3, quantizer="rvq"),
    "video-vq-t4s8": TokenizerConfig(
        preset="video-vq-t4s8",
        modality="video",
        channels=3,
        # (time, height, width) per stage: 4x in time, 8x per side.
        stage_strides=((2, 2, 2), (2, 2, 2), (1, 2, 2)),
        widths=(16, 32, 48, 64),
        latent_dim=32,
        causal_time=True,
        quantizer="vq",
        quantizer_options=VQ_OPTIONS,
        fps=8.0,
        clip_frames=17,
    ),
}


def preset_config(name: str, **overrides: Any) -> TokenizerConfig:
    """The config of preset ``name`` with ``overrides`` applied.

    See ``TokenizerConfig.with_overrides``.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].with_overrides(**overrides)


def _register(name: str) -> None:
    @register_model(name)
    def build(**overrides: Any) -> VQTokenizer:
        return VQTokenizer(preset_config(name, **overrides))


for _name in PRESETS:
    _register(_name)
