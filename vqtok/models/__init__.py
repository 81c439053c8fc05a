"""Tokenizer models: residual conv encoder/decoder around a registered quantizer."""

from vqtok.models.config import TokenizerConfig
from vqtok.models.presets import PRESETS, preset_config
from vqtok.models.tokenizer import VQTokenizer

__all__ = ["PRESETS", "TokenizerConfig", "VQTokenizer", "preset_config"]
