"""Every quantizer trains: a short run of a tiny autoencoder on random low-rank data lowers
the held-out reconstruction error well below what the data's mean alone gives; and every
tokenizer preset takes every quantizer by name, through a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vqtok
import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.models.presets import PRESETS
from vqtok.registry import QUANTIZERS

CHANNELS, RANK, DIM = 12, 3, 8
VARIANTS = {
    **{name: (name, {}) for name in QUANTIZERS.names()},
    "vq+rotation": ("vq", {"rotation_trick": True}),
}
OPTIONS = {
    "fsq": {"levels": [4, 4, 4]},
    "rfsq": {"levels": [4, 4, 4], "num_levels": 2},
    "lfq": {"codebook_size": 64},
}


def _batch(mixing: torch.Tensor, generator: torch.Generator, n: int = 16) -> torch.Tensor:
    """(n, CHANNELS, 32): RANK-dimensional Gaussian sources mixed into CHANNELS channels."""
    sources = torch.randn(n, RANK, 32, generator=generator)
    return torch.einsum("cr,nrt->nct", mixing, sources)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_short_run_lowers_the_reconstruction_error(variant):
    name, extra = VARIANTS[variant]
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(CHANNELS, RANK) / RANK**0.5
    encoder, decoder = nn.Conv1d(CHANNELS, DIM, 1), nn.Conv1d(DIM, CHANNELS, 1)
    quantizer = QUANTIZERS.create(
        name, dim=DIM, **{**OPTIONS.get(name, {"codebook_size": 64}), **extra}
    )
    modules = nn.ModuleList([encoder, quantizer, decoder])
    optimizer = torch.optim.Adam(modules.parameters(), lr=1e-2)
    held_out = _batch(mixing, torch.Generator().manual_seed(1), n=64)

    def held_out_error() -> float:
        modules.eval()
        with torch.no_grad():
            error = float((decoder(quantizer(encoder(held_out)).z_q) - held_out).square().mean())
        modules.train()
        return error

    before = held_out_error()
    for _ in range(40):
        x = _batch(mixing, generator)
        out = quantizer(encoder(x))
        loss = (decoder(out.z_q) - x).square().mean() + sum(out.losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_error()
    variance = float(held_out.square().mean())  # the error of decoding every code to 0
    assert after < 0.5 * before and after < 0.5 * variance, (before, after, variance)


NEW_QUANTIZERS = {
    "lfq": {"quantizer": "lfq"},
    "simvq": {"quantizer": "simvq"},
    "rfsq": {"quantizer": "rfsq"},
    "rotation": {"quantizer_options": {"rotation_trick": True}},  # the preset's own vq or rvq
}


@pytest.mark.parametrize("choice", NEW_QUANTIZERS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_takes_the_quantizer_by_name_through_a_checkpoint(preset, choice, tmp_path):
    torch.manual_seed(0)
    stages = len(PRESETS[preset].stage_strides)
    model = vqtok.create_model(preset, widths=(8,) * (stages + 1), **NEW_QUANTIZERS[choice])
    config = model.config
    assert config.quantizer_options.get("rotation_trick", False) == (choice == "rotation")
    x = torch.rand(2, config.channels, *config.strides) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _, losses, stats = model(x)
    sum(losses.values()).backward()
    optimizer.step()
    assert {"perplexity", "used_fraction"} <= set(stats)
    model.eval()
    loaded = vqtok.load(vqtok.save(model, tmp_path / "ckpt"))
    assert loaded.config == model.config and type(loaded.quantizer) is type(model.quantizer)
    codes = model.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(
        loaded.decode(codes, size=x.shape[2:]), model.decode(codes, size=x.shape[2:])
    )
