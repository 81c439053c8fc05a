"""The rotation trick (Fifty et al. 2024): VQ's forward unchanged bit for bit, and the
encoder's gradient equal to lambda R^T g recomputed in float64."""

from __future__ import annotations

import pytest
import torch

import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.quantizers.rotation import rotate_through
from vqtok.registry import QUANTIZERS


def _pair(name: str, **options):
    """The same quantizer (same state) without and with the rotation trick."""
    torch.manual_seed(0)
    plain = QUANTIZERS.create(name, dim=8, codebook_size=32, **options)
    rotated = QUANTIZERS.create(name, dim=8, codebook_size=32, rotation_trick=True, **options)
    rotated.load_state_dict(plain.state_dict())
    return plain, rotated


@pytest.mark.parametrize(
    "name, options",
    [
        ("vq", {}),
        ("vq", {"metric": "cosine", "codebook_dim": 4}),
        ("vq", {"ema": False, "center": True}),
        ("rvq", {"num_levels": 3, "quantizer_dropout": 0.0}),
    ],
)
def test_forward_values_equal_plain_vq_bit_for_bit(name, options):
    plain, rotated = _pair(name, **options)
    for _ in range(3):  # k-means init, then EMA steps: both must stay in lockstep
        z = torch.randn(2, 8, 5, 6)
        torch.manual_seed(1)  # k-means and restarts draw from the global generator
        a = plain(z)
        torch.manual_seed(1)
        b = rotated(z)
        assert torch.equal(a.z_q, b.z_q) and torch.equal(a.codes, b.codes)
        assert a.losses.keys() == b.losses.keys()
        assert all(torch.equal(a.losses[k], b.losses[k]) for k in a.losses)
    assert all(torch.equal(v, rotated.state_dict()[k]) for k, v in plain.state_dict().items())


def _analytic_gradient(z: torch.Tensor, e: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """lambda R^T g per row in float64, with R built as a (D, D) matrix."""
    out = []
    for zi, ei, gi in zip(z.double(), e.double(), g.double(), strict=True):
        z_unit, e_unit = zi / zi.norm(), ei / ei.norm()
        r = (z_unit + e_unit) / (z_unit + e_unit).norm()
        rotation = torch.eye(zi.numel(), dtype=torch.float64) - 2 * torch.outer(r, r)
        rotation += 2 * torch.outer(e_unit, z_unit)
        assert torch.allclose(rotation @ z_unit, e_unit)  # R turns z^ onto e^ ...
        assert torch.allclose(rotation.t() @ rotation, torch.eye(zi.numel(), dtype=torch.float64))
        out.append(ei.norm() / zi.norm() * rotation.t() @ gi)  # ... and is a rotation
    return torch.stack(out)


@pytest.mark.parametrize("name", ["vq", "rvq"])
def test_encoder_gradient_is_the_rotated_and_rescaled_upstream_gradient(name):
    # No commitment term, no projection: z's gradient comes through z_q alone.
    options = {"num_levels": 2, "quantizer_dropout": 0.0} if name == "rvq" else {}
    _, q = _pair(name, beta=0.0, **options)
    q(torch.randn(4, 8, 16))  # k-means init
    z = torch.randn(2, 8, 7, requires_grad=True)
    upstream = torch.randn(2, 8, 7)
    out = q(z)
    (out.z_q * upstream).sum().backward()

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.detach().movedim(1, -1).reshape(-1, 8)

    expected = _analytic_gradient(rows(z), rows(out.z_q), rows(upstream))
    assert not torch.allclose(rows(z.grad).double(), rows(upstream).double(), atol=1e-2)
    torch.testing.assert_close(rows(z.grad).double(), expected, rtol=1e-5, atol=1e-6)


def test_opposite_latent_and_code_still_map_onto_each_other():
    # z^ + e^ = 0 leaves r undefined; the estimator falls back to the reflection along z^.
    z = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    e = torch.tensor([[-2.0, 0.0, 0.0]])
    out = rotate_through(z, e)
    out.backward(torch.tensor([[1.0, 1.0, 1.0]]))
    assert torch.equal(out, e)
    assert torch.equal(z.grad, torch.tensor([[-2.0, 2.0, 2.0]]))
