"""vqtok: VQ-VAE tokenizers for audio (1D), images (2D) and video (3D).

>>> model = vqtok.create_model("image-vq-f8")
>>> codes = model.encode(images)  # (B, 3, H, W) in [-1, 1] -> (B, H/8, W/8) int64
>>> images_hat = model.decode(codes, size=images.shape[2:])
>>> vqtok.save(model, "ckpt/f8")  # a directory: model.safetensors + config.json
>>> model = vqtok.load("ckpt/f8")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vqtok.models import TokenizerConfig, VQTokenizer
    from vqtok.models.vae import LatentModel

__version__ = "0.1.0"

# The public names load on first use (PEP 562), so that `import vqtok` costs nothing until a
# model is needed: the command line installs its Ctrl-C handling before torch loads, and
# `vqtok --help` does not wait for it.
_EXPORTS = {
    "CheckpointError": "vqtok.checkpoint",
    "load": "vqtok.checkpoint",
    "save": "vqtok.checkpoint",
    "TokenizerConfig": "vqtok.models",
    "VQTokenizer": "vqtok.models",
    "LatentModel": "vqtok.models.vae",
    "MODELS": "vqtok.registry",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        _register_all()
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"vqtok.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"vqtok.{name}":
            raise
        raise AttributeError(f"module 'vqtok' has no attribute {name!r}") from None


def _register_all() -> None:
    """Import the modules whose import registers the quantizers and model presets."""
    importlib.import_module("vqtok.quantizers")
    importlib.import_module("vqtok.models")


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
    _register_all()
    from vqtok.registry import MODELS

    return MODELS.create(name, **overrides)


def list_models() -> list[str]:
    """Names of the registered model presets.

    Returns:
        The names ``create_model`` accepts, sorted.
    """
    _register_all()
    from vqtok.registry import MODELS

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
