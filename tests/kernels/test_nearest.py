"""nearest_code: both backends against a float64 reference, on random and hard inputs."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqtok.kernels import available_backends, nearest_code
from vqtok.kernels.reference import _row_chunk

BACKENDS = available_backends()
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NEAR_TIE = 1e-5
# The interpreter computes tl.dot with numpy's BLAS, whose result for a column can depend
# on where the column sits in the tile, and numpy has no bfloat16.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def reference_distances(x: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, K) float64 distances computed directly, without the norm expansion."""
    x64, c64 = x.double(), codebook.double()
    if metric == "cosine":
        x64 = torch.nn.functional.normalize(x64, dim=1)
        c64 = torch.nn.functional.normalize(c64, dim=1)
    d = (x64[:, None, :] - c64[None, :, :]).pow(2).sum(-1)
    return d * 0.5 if metric == "cosine" else d


def check_against_reference(x, codebook, metric, backend, max_near_tie_fraction=0.05):
    indices, distances = nearest_code(x, codebook, metric=metric, backend=backend)
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    assert indices.shape == distances.shape == (x.shape[0],)
    ref = reference_distances(x, codebook, metric)
    if x.shape[0] == 0:
        return
    if codebook.shape[0] == 1:
        assert (indices == 0).all()
        return
    top2 = ref.topk(2, dim=1, largest=False).values
    gap = (top2[:, 1] - top2[:, 0]) / top2[:, 1].abs().clamp_min(1e-30)
    clear = gap > NEAR_TIE
    assert torch.equal(indices[clear], ref.argmin(1)[clear])
    if not (metric == "cosine" and x.shape[1] == 1):  # in 1D every direction is +1 or -1: ties
        assert (~clear).sum() <= max_near_tie_fraction * max(len(clear), 1)
    # Every returned index is (near) optimal, near-tie rows included.
    chosen = ref.gather(1, indices[:, None]).squeeze(1)
    assert torch.all(chosen <= top2[:, 0] * (1 + 1e-4) + 1e-6)
    scale = ref.max().clamp_min(1.0)
    assert torch.allclose(distances.double(), chosen, rtol=1e-4, atol=1e-5 * float(scale))
    assert (distances >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(0, 70),
    k=st.integers(1, 90),
    d=st.sampled_from([1, 3, 16, 33, 64, 130]),
    seed=st.integers(0, 2**16),
)
def test_matches_float64_reference(backend, metric, n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 2
    codebook = torch.randn(k, d, generator=g)
    check_against_reference(x, codebook, metric, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_inputs_match_the_reference_on_the_same_values(backend, dtype):
    if backend == "triton" and dtype == "bf16" and INTERPRETED:
        pytest.skip(
            "the Triton interpreter has no bfloat16; checked on the GPU by benchmarks/gpu_check.py"
        )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 32, generator=g).to(DTYPES[dtype])
    codebook = torch.randn(50, 32, generator=g).to(DTYPES[dtype])
    # The inputs are exactly representable in fp32, so the fp32 reference applies to them.
    check_against_reference(x, codebook, "l2", backend, max_near_tie_fraction=0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_far_from_origin_keeps_precision(backend):
    # Naive ||x||^2 - 2x.e + ||e||^2 in fp32 at an offset of 1e4 has an absolute error of
    # about 1e8 * 6e-8 = 6, larger than the gaps between codes here.
    g = torch.Generator().manual_seed(2)
    codebook = torch.randn(64, 16, generator=g) + 1e4
    x = torch.randn(500, 16, generator=g) * 0.5 + 1e4
    check_against_reference(x, codebook, "l2", backend)
    naive = (codebook.pow(2).sum(1) - 2 * x @ codebook.t()).argmin(1)
    exact = reference_distances(x, codebook, "l2").argmin(1)
    assert (naive != exact).any(), "the case must be one that defeats the naive expansion"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_lowest_index(backend):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, 8, generator=g)
    # Duplicates spread across codebook tiles: rows 5, 37 and 70 are equal, and so on.
    codebook = torch.cat([base, base[:30], base[:10]])
    x = base + 0.01 * torch.randn(40, 8, generator=g)
    indices, _ = nearest_code(x, codebook, backend=backend)
    expected = reference_distances(x, codebook, "l2").argmin(1)
    if backend == "triton" and INTERPRETED:
        assert torch.equal(codebook[indices], codebook[expected])
    else:
        assert torch.equal(indices, expected)
        assert (indices < 40).all()
    # Exact ties: a query equidistant from two codes.
    two = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    idx, dist = nearest_code(torch.zeros(3, 2), two, backend=backend)
    assert idx.tolist() == [0, 0, 0] and torch.allclose(dist, torch.ones(3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_degenerate_shapes(backend):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(24, 50, generator=g).t()  # (50, 24), column-major
    codebook = torch.randn(24, 40, generator=g)[:, ::2].t()  # (20, 24), strided
    assert not x.is_contiguous() and not codebook.is_contiguous()
    check_against_reference(x, codebook, "l2", backend)
    idx, dist = nearest_code(torch.empty(0, 24), codebook.contiguous(), backend=backend)
    assert idx.shape == dist.shape == (0,)
    idx, _ = nearest_code(x, codebook[:1], backend=backend)
    assert (idx == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_vectors(backend):
    g = torch.Generator().manual_seed(5)
    check_against_reference(
        torch.randn(40, 1024, generator=g), torch.randn(30, 1024, generator=g), "l2", backend
    )


def test_backends_agree_on_clustered_data():
    if "triton" not in BACKENDS:
        pytest.skip("Triton is not installed")
    g = torch.Generator().manual_seed(6)
    codebook = torch.randn(100, 12, generator=g) * 4
    x = codebook[torch.randint(0, 100, (400,), generator=g)] + torch.randn(400, 12, generator=g)
    for metric in ("l2", "cosine"):
        a = nearest_code(x, codebook, metric=metric, backend="torch")
        b = nearest_code(x, codebook, metric=metric, backend="triton")
        assert torch.equal(a[0], b[0])
        assert torch.allclose(a[1], b[1], rtol=1e-5, atol=1e-4)


def test_torch_backend_chunks_within_its_memory_budget():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1000, 8, generator=g)
    codebook = torch.randn(300, 8, generator=g)
    budget = 64 * 1024
    rows = _row_chunk(1000, 300, budget)
    assert rows * 300 * 4 <= budget and rows < 1000
    small = nearest_code(x, codebook, backend="torch", memory_budget=budget)
    large = nearest_code(x, codebook, backend="torch")
    assert torch.equal(small[0], large[0]) and torch.equal(small[1], large[1])


def test_bad_arguments_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="D=3"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="at least one row"):
        nearest_code(torch.randn(4, 3), torch.randn(0, 3))
    with pytest.raises(ValueError, match="metric"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 3), metric="l1")
    with pytest.raises(ValueError, match="backend"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 3), backend="cuda")


def test_environment_variable_overrides_the_backend(monkeypatch):
    monkeypatch.setenv("VQTOK_KERNEL_BACKEND", "bogus")
    with pytest.raises(ValueError, match="VQTOK_KERNEL_BACKEND"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 3))
