"""vqtok: VQ-VAE tokenizers for audio (1D), images (2D) and video (3D).

>>> model = vqtok.create_model("image-vq-f8")
>>> codes = model.encode(images)  # (B, 3, H, W) in [-1, 1] -> (B, H/8, W/8) int64
>>> images_hat = model.decode(codes, size=images.shape[2:])
>>> vqtok.save(model, "ckpt/f8")  # a directory: model.safetensors + config.json
>>> model = vqtok.load("ckpt/f8")
"""

from __future__ import annotations

from typing import Any

import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.checkpoint import CheckpointError, load, save
from vqtok.models import TokenizerConfig, VQTokenizer
from vqtok.models.vae import LatentModel
from vqtok.registry import MODELS

__version__ = "0.1.0"


def create_model(name: str, **overrides: Any) -> VQTokenizer | LatentModel:
    """Build the preset ``name`` with config fields overridden.

    Args:
        name: A preset name from ``list_models()``.
        **overrides: Config fields to change from the preset's values (for a tokenizer,
            see ``TokenizerConfig.with_overrides``).

    Returns:
        A tokenizer, or for the continuous baselines a VAE-family ``LatentModel``, with
        freshly initialized weights.

    Raises:
        KeyError: ``name`` is not a registered preset.
        ValueError: An override names no config field or gives it an invalid value.
    """
    return MODELS.create(name, **overrides)


def list_models() -> list[str]:
    """Names of the registered model presets.

    Returns:
        The names ``create_model`` accepts, sorted.
    """
    return MODELS.names()


__all__ = [
    "CheckpointError",
    "TokenizerConfig",
    "VQTokenizer",
    "__version__",
    "create_model",
    "list_models",
    "load",
    "save",
]
