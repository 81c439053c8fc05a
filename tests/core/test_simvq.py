"""SimVQ: the linear map learns, the random codebook under it stays frozen, codes are the
nearest rows of C W^T, and every rank draws the same C."""

from __future__ import annotations

import torch

import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.registry import QUANTIZERS


def _train(q, steps: int, generator: torch.Generator) -> None:
    optimizer = torch.optim.Adam(q.parameters(), lr=1e-2)
    for _ in range(steps):
        out = q(torch.randn(4, 8, 16, generator=generator))
        optimizer.zero_grad()
        sum(out.losses.values()).backward()
        optimizer.step()


def test_the_map_gets_gradients_while_the_codebook_stays_frozen():
    q = QUANTIZERS.create("simvq", dim=8, codebook_size=32)
    frozen = q.frozen_codebook.clone()
    assert not q.frozen_codebook.requires_grad
    assert all(p is not q.frozen_codebook for p in q.parameters())
    out = q(torch.randn(4, 8, 16))
    sum(out.losses.values()).backward()
    assert q.linear.weight.grad is not None and q.linear.weight.grad.abs().sum() > 0
    before = q.codebook().detach()
    _train(q, 5, torch.Generator().manual_seed(0))
    assert torch.equal(q.frozen_codebook, frozen)
    # one map moves every code, not only the ones picked (SimVQ's answer to dead codes)
    assert ((q.codebook().detach() - before).norm(dim=1) > 0).all()


def test_codes_are_the_nearest_rows_of_the_projected_codebook():
    q = QUANTIZERS.create("simvq", dim=8, codebook_size=32)
    _train(q, 3, torch.Generator().manual_seed(1))
    z = torch.randn(2, 8, 10)
    rows = z.movedim(1, -1).reshape(-1, 8).double()
    codebook = q.frozen_codebook.double() @ q.linear.weight.double().t()
    expected = torch.cdist(rows, codebook).argmin(dim=1).reshape(2, 10)
    assert torch.equal(q.eval()(z).codes, expected)
    assert torch.allclose(q.decode(expected), codebook[expected].movedim(-1, 1).float())


def test_the_frozen_codebook_depends_on_the_seed_only():
    # Ranks seeded differently must still share C without communicating.
    torch.manual_seed(1)
    first = QUANTIZERS.create("simvq", dim=8, codebook_size=32)
    torch.manual_seed(2)
    second = QUANTIZERS.create("simvq", dim=8, codebook_size=32)
    other = QUANTIZERS.create("simvq", dim=8, codebook_size=32, seed=1)
    assert torch.equal(first.frozen_codebook, second.frozen_codebook)
    assert not torch.equal(first.frozen_codebook, other.frozen_codebook)
