"""Tokenizer models: residual conv encoder/decoder around a registered quantizer."""

from vqtok.models.config import TokenizerConfig
from vqtok.models.presets import PRESETS, preset_config
from vqtok.models.tokenizer import VQTokenizer
from vqtok.models.vae_presets import VAE_PRESETS  # noqa: F401  (registers the VAE presets)

__all__ = ["PRESETS", "TokenizerConfig", "VQTokenizer", "preset_config"]
