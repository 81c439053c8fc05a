"""LFQ: codes are the sign pattern's binary number; the entropy penalty against a direct
computation over the whole codebook; impossible code widths refused."""

from __future__ import annotations

import itertools

import pytest
import torch

import vqtok
import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.registry import QUANTIZERS


def test_codes_are_the_binary_number_of_the_signs():
    torch.manual_seed(0)
    q = QUANTIZERS.create("lfq", dim=6, codebook_size=64)  # 6 bits: no projection
    z = torch.randn(3, 6, 4, 5)
    z[0, 2, 0, 0] = 0.0  # zero counts as negative
    codes = q(z).codes
    positive = (z > 0).long()  # (B, 6, H, W)
    expected = sum(positive[:, i] << i for i in range(6))
    assert torch.equal(codes, expected)
    # decode gives back the signs, -1 for a clear bit
    assert torch.equal(q.decode(codes), torch.where(z > 0, 1.0, -1.0))


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def _direct_penalty(z: torch.Tensor, t: float, gamma: float, groups: list[list[int]]) -> float:
    """float64 penalty from q(c | z) ∝ exp(-||z - c||^2 / t) over all 2^d codes, with the batch
    entropy summed over the marginals of ``groups`` of channels."""
    z = z.double()
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=z.shape[1]))).double()
    q = torch.softmax(-torch.cdist(z, corners).square() / t, dim=1)  # (N, 2^d)
    per_sample = _entropy(q).mean()
    average = q.mean(0)
    batch = 0.0
    for group in groups:
        keys = [tuple(row) for row in corners[:, group].tolist()]
        marginal: dict[tuple, float] = {}
        for key, mass in zip(keys, average.tolist(), strict=True):
            marginal[key] = marginal.get(key, 0.0) + mass
        batch += float(_entropy(torch.tensor(list(marginal.values()), dtype=torch.float64)))
    return float(per_sample) - gamma * batch


@pytest.mark.parametrize("group_bits", [6, 4, 2])
def test_entropy_penalty_matches_a_direct_computation(group_bits):
    torch.manual_seed(1)
    options = {"temperature": 0.7, "codebook_entropy_weight": 0.8, "entropy_weight": 0.3}
    q = QUANTIZERS.create("lfq", dim=6, codebook_size=64, entropy_group_bits=group_bits, **options)
    z = 0.5 * torch.randn(2, 6, 7)
    loss = q(z).losses["entropy"]
    groups = [list(range(s, min(s + group_bits, 6))) for s in range(0, 6, group_bits)]
    rows = z.movedim(1, -1).reshape(-1, 6)
    expected = 0.3 * _direct_penalty(rows, 0.7, 0.8, groups)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_grouped_batch_entropy_bounds_the_joint_one_from_above():
    # Subadditivity: grouping never lowers the batch entropy, so it never raises the penalty.
    torch.manual_seed(2)
    z = torch.randn(1, 6, 50)
    exact = QUANTIZERS.create("lfq", dim=6, codebook_size=64, entropy_group_bits=6)
    grouped = QUANTIZERS.create("lfq", dim=6, codebook_size=64, entropy_group_bits=2)
    assert grouped(z).losses["entropy"] <= exact(z).losses["entropy"] + 1e-6


def test_the_penalty_prefers_confident_codes_spread_over_the_codebook():
    q = QUANTIZERS.create("lfq", dim=4, codebook_size=16, entropy_weight=1.0)
    every_code = q.decode(torch.arange(16).reshape(1, 16))  # (1, 4, 16), one of each corner
    one_code = every_code[..., -1:].expand(1, 4, 16)
    spread, collapsed = (q(3 * z).losses["entropy"] for z in (every_code, one_code))
    unsure = q(0.1 * every_code).losses["entropy"]
    # both terms at their best: ~0 per-sample entropy, log 16 nats of batch entropy
    assert spread.item() == pytest.approx(-torch.log(torch.tensor(16.0)).item(), abs=1e-3)
    assert spread < collapsed and spread < unsure


def test_code_widths_beyond_the_limit_are_refused_with_a_clear_message():
    # The paper's form takes one bit per latent channel: 32 channels would be 2^32 codes.
    with pytest.raises(ValueError, match=r"latent_dim 32 gives 2\^32 codes"):
        vqtok.create_model(
            "image-vq-f8", quantizer="lfq", quantizer_options={"codebook_size": None}
        )
    model = vqtok.create_model(
        "image-vq-f8", latent_dim=10, quantizer="lfq", quantizer_options={"codebook_size": None}
    )
    assert model.codebook_size == 1024 and model.config.quantizer_options["codebook_size"] == 1024
    with pytest.raises(ValueError, match="power of 2"):
        QUANTIZERS.create("lfq", dim=8, codebook_size=1000)
    with pytest.raises(ValueError, match=r"2\^30 codes"):
        QUANTIZERS.create("lfq", dim=8, codebook_size=2**30)
