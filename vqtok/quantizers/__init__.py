"""Quantizers: VQ with an EMA codebook, residual VQ and FSQ, behind one interface.

Importing this package registers "vq", "rvq" and "fsq" in ``vqtok.registry.QUANTIZERS``.
"""

from vqtok.quantizers.base import Quantizer, QuantizerOutput
from vqtok.quantizers.fsq import FSQ, FSQConfig
from vqtok.quantizers.residual import ResidualVQ, RVQConfig
from vqtok.quantizers.usage import usage_stats
from vqtok.quantizers.vq import VectorQuantizer, VQConfig

__all__ = [
    "FSQ",
    "FSQConfig",
    "Quantizer",
    "QuantizerOutput",
    "RVQConfig",
    "ResidualVQ",
    "VQConfig",
    "VectorQuantizer",
    "usage_stats",
]
