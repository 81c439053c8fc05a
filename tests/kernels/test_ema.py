"""ema_update: the EMA codebook step of van den Oord et al. (2017), checked by hand and
against float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vqtok.kernels import available_backends, ema_update

MODES = [(b, det) for b in available_backends() for det in (False, True)]


def float64_ema(cluster_size, embed_sum, z, indices, decay, eps):
    """The update written out directly, in float64, one code at a time."""
    k = cluster_size.shape[0]
    n = torch.zeros(k, dtype=torch.float64)
    sums = torch.zeros(k, z.shape[1], dtype=torch.float64)
    for row, code in zip(z.double(), indices.tolist(), strict=True):
        n[code] += 1
        sums[code] += row
    size = decay * cluster_size.double() + (1 - decay) * n
    m = decay * embed_sum.double() + (1 - decay) * sums
    total = size.sum()
    smoothed = (size + eps) / (total + k * eps) * total
    return size, m, m / smoothed[:, None]


@pytest.mark.parametrize("backend,deterministic", MODES)
def test_hand_computed_example(backend, deterministic):
    # Code 0 wins z = 1 and 3, code 1 wins z = 5; decay 0.5, eps 1.
    # N = 0.5*[1, 0] + 0.5*[2, 1] = [1.5, 0.5];  m = 0.5*[2, 0] + 0.5*[4, 5] = [3, 2.5]
    # N~ = (N + 1) / (2 + 2) * 2 = [1.25, 0.75];  e = m / N~ = [2.4, 10/3]
    cluster_size = torch.tensor([1.0, 0.0])
    embed_sum = torch.tensor([[2.0], [0.0]])
    z = torch.tensor([[1.0], [3.0], [5.0]])
    codebook = ema_update(
        cluster_size, embed_sum, z, torch.tensor([0, 0, 1]), decay=0.5, eps=1.0,
        backend=backend, deterministic=deterministic,
    )
    assert torch.allclose(cluster_size, torch.tensor([1.5, 0.5]))
    assert torch.allclose(embed_sum, torch.tensor([[3.0], [2.5]]))
    assert torch.allclose(codebook, torch.tensor([[2.4], [10 / 3]]))


@pytest.mark.parametrize("backend,deterministic", MODES)
@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(0, 300),
    k=st.integers(1, 40),
    d=st.sampled_from([1, 5, 64, 100]),
    decay=st.sampled_from([0.0, 0.5, 0.99]),
    seed=st.integers(0, 2**16),
)
def test_matches_float64_reference(backend, deterministic, n, k, d, decay, seed):
    assume(n > 0 or decay > 0)  # otherwise every size is 0 and e = m / N~ is undefined
    g = torch.Generator().manual_seed(seed)
    cluster_size = torch.rand(k, generator=g) * 5
    embed_sum = torch.randn(k, d, generator=g)
    z = torch.randn(n, d, generator=g) * 3
    # Skewed assignments, so that some codes get many rows and some none.
    indices = (torch.rand(n, generator=g).pow(3) * k).long().clamp_max(k - 1)
    size64, m64, e64 = float64_ema(cluster_size, embed_sum, z, indices, decay, 1e-5)
    codebook = ema_update(
        cluster_size,
        embed_sum,
        z,
        indices,
        decay=decay,
        backend=backend,
        deterministic=deterministic,
    )
    for got, want in ((cluster_size, size64), (embed_sum, m64), (codebook, e64)):
        assert got.dtype == torch.float32
        assert torch.allclose(
            got.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max().clamp_min(1))
        )


@pytest.mark.parametrize("backend", available_backends())
def test_deterministic_mode_repeats_bit_for_bit(backend):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 16, generator=g)
    indices = torch.randint(0, 8, (2000,), generator=g)
    results = []
    for _ in range(2):
        size, m = torch.ones(8), torch.zeros(8, 16)
        results.append(
            ema_update(size, m, z, indices, decay=0.9, deterministic=True, backend=backend)
        )
    assert torch.equal(results[0], results[1])


def test_non_contiguous_batch():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 50, generator=g).t()
    indices = torch.randint(0, 5, (50,), generator=g)
    want = float64_ema(torch.ones(5), torch.zeros(5, 16), z, indices, 0.9, 1e-5)[2]
    for backend in available_backends():
        got = ema_update(torch.ones(5), torch.zeros(5, 16), z, indices, decay=0.9, backend=backend)
        assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)


def test_unchecked_indices_give_the_checked_result():
    g = torch.Generator().manual_seed(2)
    z, indices = torch.randn(40, 6, generator=g), torch.randint(0, 7, (40,), generator=g)
    for backend in available_backends():
        checked = ema_update(
            torch.ones(7), torch.zeros(7, 6), z, indices, decay=0.8, backend=backend
        )
        unchecked = ema_update(
            torch.ones(7),
            torch.zeros(7, 6),
            z,
            indices,
            decay=0.8,
            backend=backend,
            check_indices=False,
        )
        assert torch.equal(checked, unchecked)


def test_bad_arguments_are_refused():
    size, m = torch.ones(4), torch.zeros(4, 3)
    with pytest.raises(ValueError, match="indices must lie"):
        ema_update(size, m, torch.randn(2, 3), torch.tensor([0, 4]), decay=0.9)
    with pytest.raises(ValueError, match="shapes"):
        ema_update(size, m, torch.randn(2, 5), torch.tensor([0, 1]), decay=0.9)
    with pytest.raises(ValueError, match="decay"):
        ema_update(size, m, torch.randn(2, 3), torch.tensor([0, 1]), decay=1.5)
    with pytest.raises(TypeError, match="float32"):
        ema_update(size.double(), m, torch.randn(2, 3), torch.tensor([0, 1]), decay=0.9)
