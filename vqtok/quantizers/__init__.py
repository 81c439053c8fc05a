"""Quantizers: VQ with an EMA codebook, residual VQ, FSQ, residual FSQ, LFQ and SimVQ, behind
one interface.

Importing this package registers "vq", "rvq", "fsq", "rfsq", "lfq" and "simvq" in
``vqtok.registry.QUANTIZERS``.
"""

from vqtok.quantizers.base import Quantizer, QuantizerOutput
from vqtok.quantizers.fsq import FSQ, FSQConfig
from vqtok.quantizers.lfq import LFQ, LFQConfig
from vqtok.quantizers.residual import ResidualVQ, RVQConfig
from vqtok.quantizers.residual_fsq import ResidualFSQ, RFSQConfig
from vqtok.quantizers.simvq import SimVQ, SimVQConfig
from vqtok.quantizers.usage import usage_stats
from vqtok.quantizers.vq import VectorQuantizer, VQConfig

__all__ = [
    "FSQ",
    "FSQConfig",
    "LFQ",
    "LFQConfig",
    "Quantizer",
    "QuantizerOutput",
    "RFSQConfig",
    "RVQConfig",
    "ResidualFSQ",
    "ResidualVQ",
    "SimVQ",
    "SimVQConfig",
    "VQConfig",
    "VectorQuantizer",
    "usage_stats",
]
