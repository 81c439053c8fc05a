"""VQTokenizer.decode is batch-invariant.

A sample decodes to the same bits whatever shares its batch.

PyTorch picks a convolution algorithm by batch size (on the CPU oneDNN for a batch, im2col +
GEMM for one small input), and the last-bit differences flip roundings to uint8, which H.264
spreads over many frames: `decompress` (codes in batches of 16) then differed from a direct
whole-clip `decode` of the same codes.
"""

from __future__ import annotations

import pytest
import torch

import vqtok
from vqtok.models import PRESETS

# Latent sizes per modality: small enough that a single sample takes another conv algorithm.
LATENT = {"audio": (6,), "image": (4, 5), "video": (3, 4, 5)}


def seeded_model(preset: str) -> vqtok.VQTokenizer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = PRESETS[preset]
        return vqtok.create_model(
            preset,
            widths=(8,) * len(config.widths),
            latent_dim=8,
            quantizer_options={"codebook_size": 32} if config.quantizer != "fsq" else {},
        ).eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_decode_of_a_batch_equals_decode_of_each_sample_bit_for_bit(preset: str) -> None:
    model = seeded_model(preset)
    generator = torch.Generator().manual_seed(1)
    levels = (model.num_levels,) if model.num_levels > 1 else ()
    codes = torch.randint(
        0, model.codebook_size, (5, *levels, *LATENT[model.config.modality]), generator=generator
    )
    with torch.inference_mode():
        whole = model.decode(codes)
        for batch in (1, 2, 3):
            split = torch.cat([model.decode(chunk) for chunk in codes.split(batch)])
            assert torch.equal(split, whole), (batch, float((split - whole).abs().max()))
        assert float(whole.std()) > 0
        assert model.decode(codes[:0]).shape[0] == 0
