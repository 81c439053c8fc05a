"""Centred VQ latents and dead-code re-seeding from small batches (issue 19)."""

from __future__ import annotations

import pytest
import torch

import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.quantizers.restart import draw_replacements
from vqtok.registry import QUANTIZERS


def centred_vq(**options):
    return QUANTIZERS.create(
        "vq", dim=8, codebook_size=16, metric="cosine", center=True, **options
    )


def test_a_common_shift_of_all_latents_changes_no_training_code():
    torch.manual_seed(0)
    z = torch.randn(2, 8, 24)
    q = centred_vq(dead_code_threshold=0.0)
    codes = q(z).codes
    state = {k: v.clone() for k, v in q.state_dict().items()}
    shifted = z + 5.0 * torch.randn(1, 8, 1)  # what the first optimizer steps do to latents
    q.load_state_dict(state)
    assert torch.equal(q(shifted).codes, codes)


def test_common_shift_gets_no_gradient_and_the_mean_is_anchored():
    torch.manual_seed(1)
    q = centred_vq(dead_code_threshold=0.0)
    q(torch.randn(2, 8, 24))  # initializes the codebook and the running mean
    z = torch.randn(2, 8, 24, requires_grad=True)
    out = q(z)
    (out.z_q * torch.randn_like(out.z_q)).sum().backward()
    # The downstream gradient has no component along a common shift (as in batch norm).
    assert float(z.grad.sum(dim=(0, 2)).abs().max()) < 1e-4
    assert "centering" in out.losses and float(out.losses["centering"].detach()) >= 0


def test_inference_subtracts_the_running_mean_and_leaves_it_alone():
    torch.manual_seed(2)
    q = centred_vq(center_decay=0.5)
    first = torch.randn(2, 8, 24) + 3.0
    q(first)
    rows = first.movedim(1, -1).reshape(-1, 8)
    assert torch.allclose(q.latent_mean, rows.mean(0), atol=1e-5)  # the first batch sets it
    second = torch.randn(2, 8, 24) - 1.0
    q(second)
    expected = 0.5 * rows.mean(0) + 0.5 * second.movedim(1, -1).reshape(-1, 8).mean(0)
    assert torch.allclose(q.latent_mean, expected, atol=1e-5)
    q.eval()
    before = q.latent_mean.clone()
    codes = q(second).codes
    assert torch.equal(q.latent_mean, before)
    assert torch.equal(codes, q.encode(second))  # eval forward and encode agree


def test_uncentred_vq_keeps_its_state_dict():
    q = QUANTIZERS.create("vq", dim=8, codebook_size=16)
    assert "latent_mean" not in q.state_dict()


def test_residual_vq_refuses_centring():
    with pytest.raises(ValueError, match="centre"):
        QUANTIZERS.create("rvq", dim=8, codebook_size=16, center=True)


def test_replacements_from_fewer_rows_than_dead_codes_are_distinct():
    g = torch.Generator().manual_seed(3)
    recent = torch.randn(20, 8, generator=g)
    out = draw_replacements(recent, 100, generator=g)
    assert out.shape == (100, 8)
    assert torch.unique(out, dim=0).shape[0] == 100  # tied copies would stay dead
    # Every replacement lies next to a real latent.
    assert float(torch.cdist(out, recent).min(dim=1).values.max()) < 1.0
