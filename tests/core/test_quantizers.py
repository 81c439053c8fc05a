"""Quantizers: interface, straight-through gradient, EMA maths, codebook health, bf16."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.kernels import nearest_code
from vqtok.pipelines.bench.memory import cpu_peak_supported, measure_peak
from vqtok.quantizers import FSQ, LFQ, ResidualVQ, SimVQ, VectorQuantizer, usage_stats
from vqtok.registry import QUANTIZERS

SPATIAL = {"1d": (12,), "2d": (4, 5), "3d": (2, 3, 4)}
# Options under which a quantizer of dim=8 looks codes up in 4 dimensions, between projections.
PROJECTED = {"fsq": {}, "rfsq": {}, "lfq": {"codebook_size": 16}}


def make(name: str, dim: int = 8, **options):
    grid = {"levels": [5, 4, 3]}
    defaults = {"fsq": grid, "rfsq": grid}.get(name, {"codebook_size": 32})
    return QUANTIZERS.create(name, dim=dim, **{**defaults, **options})


def clustered(
    n: int, centers: torch.Tensor, noise: float, generator: torch.Generator
) -> torch.Tensor:
    """n rows (n, D) scattered around random rows of ``centers`` (C, D)."""
    which = torch.randint(centers.shape[0], (n,), generator=generator)
    return centers[which] + noise * torch.randn(n, centers.shape[1], generator=generator)


def mean_distortion(x: torch.Tensor, codebook: torch.Tensor) -> float:
    return float(nearest_code(x, codebook)[1].mean())


def test_registry_lists_the_quantizers():
    assert {"vq", "rvq", "fsq", "rfsq", "lfq", "simvq"} <= set(QUANTIZERS.names())


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_config_round_trips_through_json_and_the_builder(name):
    q = make(name, **PROJECTED.get(name, {"codebook_dim": 4}))
    rebuilt = QUANTIZERS.create(name, **json.loads(json.dumps(dataclasses.asdict(q.config))))
    assert rebuilt.config == q.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in q.state_dict().items()
    }


@pytest.mark.parametrize("layout", SPATIAL)
@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_shapes_and_code_range(name, layout):
    q = make(name)
    z = torch.randn(3, 8, *SPATIAL[layout])
    out = q(z)
    assert out.z_q.shape == z.shape and out.z_q.dtype == torch.float32
    expected_codes = (
        (3, *SPATIAL[layout]) if q.num_levels == 1 else (3, q.num_levels, *SPATIAL[layout])
    )
    assert out.codes.shape == expected_codes and out.codes.dtype == torch.int64
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < q.codebook_size
    assert all(v.dim() == 0 for v in out.losses.values())
    assert {"perplexity", "used_fraction", "dead_codes", "entropy_bits"} <= set(out.stats)
    q.eval()
    assert torch.equal(q.encode(z), q(z).codes)
    assert torch.allclose(q.decode(q.encode(z)), q(z).z_q, atol=1e-6)


@pytest.mark.parametrize("name", ["vq", "rvq", "simvq", "lfq"])
def test_gradient_at_z_q_is_copied_to_z_e(name):
    # dim 5 = log2(32): LFQ needs no projection either. No commitment term: z's gradient is
    # the decoder's alone.
    q = make(name, dim=5, beta=0.0)
    z = torch.randn(2, 5, 6, requires_grad=True)
    upstream = torch.randn(2, 5, 6)
    (q(z).z_q * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)


def test_fsq_gradient_flows_through_the_rounding():
    q = make("fsq", dim=3)
    z = torch.randn(2, 3, 6, requires_grad=True)
    upstream = torch.randn(2, 3, 6)
    (q(z).z_q * upstream).sum().backward()
    # The bound is monotone increasing, so each gradient keeps the sign of the upstream one.
    assert torch.equal(torch.sign(z.grad), torch.sign(upstream))


def test_commitment_pulls_z_e_towards_its_code_and_codebook_loss_moves_codes():
    q = make("vq", ema=False, beta=0.25, kmeans_init=False)
    z = torch.randn(2, 8, 6, requires_grad=True)
    out = q(z)
    sum(out.losses.values()).backward()
    code_vectors = q.decode(out.codes).detach()
    n = z.numel()
    assert torch.allclose(z.grad, 0.25 * 2 * (z - code_vectors).detach() / n, atol=1e-7)
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0


def _set_ema_state(q: VectorQuantizer, codebook, cluster_size) -> None:
    with torch.no_grad():
        q.codebook.copy_(torch.tensor(codebook))
        q.cluster_size.copy_(torch.tensor(cluster_size))
        q.embed_sum.copy_(q.codebook * q.cluster_size[:, None])
        q.initialized.fill_(True)


def test_ema_step_follows_the_vq_vae_paper_formulas():
    # van den Oord et al. (2017), appendix A.1: EMA codebook updates.
    q = make("vq", dim=2, codebook_size=2, decay=0.5, kmeans_init=False, dead_code_threshold=0.0)
    _set_ema_state(q, [[0.0, 0.0], [10.0, 10.0]], [1.0, 1.0])
    z = torch.tensor([[1.0, 1.0], [2.0, 0.0], [9.0, 11.0]]).t().unsqueeze(0)  # (1, D=2, T=3)
    q(z)
    # n = (2, 1); N = 0.5 * 1 + 0.5 * n = (1.5, 1.0)
    # m_0 = 0.5 * (0, 0) + 0.5 * ((1, 1) + (2, 0)) = (1.5, 0.5)
    # m_1 = 0.5 * (10, 10) + 0.5 * (9, 11)
    assert torch.allclose(q.cluster_size, torch.tensor([1.5, 1.0]))
    assert torch.allclose(q.embed_sum, torch.tensor([[1.5, 0.5], [9.5, 10.5]]))
    # e = m / N, up to Laplace smoothing with eps = 1e-5
    assert torch.allclose(q.codebook, torch.tensor([[1.0, 1 / 3], [9.5, 10.5]]), atol=1e-4)


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_inference_leaves_codebook_state_alone(name, mode):
    restarts = name in ("vq", "rvq")
    q = make(name, **({"dead_code_threshold": 0.0} if restarts else {}))
    if mode == "eval":
        q.eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    with torch.set_grad_enabled(mode != "no_grad"):
        q(torch.randn(2, 8, 16))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


def test_dead_codes_are_restarted_with_size_and_sum_reset_together():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    q = make(
        "vq", dim=4, codebook_size=8, kmeans_init=False, usage_window=64, dead_code_threshold=1.0
    )
    far = torch.full((6, 4), 50.0)  # six codes no data point will ever pick
    _set_ema_state(q, torch.cat([centers, far]).tolist(), [1.0] * 8)

    data = clustered(64, centers, 0.5, g)
    stats = q(data.t().unsqueeze(0)).stats
    assert stats["restarted_codes"] == 6.0
    revived = q.codebook[2:]
    assert float(nearest_code(revived, data)[1].max()) < 1e-4  # re-seeded on encoder outputs
    assert torch.equal(q.cluster_size[2:], torch.ones(6))
    assert torch.equal(q.embed_sum[2:], revived)  # so e = m / N keeps them after the next step

    for _ in range(3):
        stats = q(clustered(64, centers, 0.5, g).t().unsqueeze(0)).stats
    assert float(nearest_code(q.codebook[2:], data)[1].max()) < 4.0  # not pulled back to 50
    # The forward's stats describe the full window before any restart clears it.
    assert stats["used_fraction"] > 0.5


def test_kmeans_init_beats_random_init_on_clustered_data():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    centers = 4 * torch.randn(16, 8, generator=g)
    x = clustered(4096, centers, 0.3, g)
    batch = x.t().unsqueeze(0)  # (1, D, N)
    with_kmeans = make("vq", codebook_size=16, dead_code_threshold=0.0)
    with_kmeans(batch)
    random_rows = x[torch.randperm(x.shape[0], generator=g)[:16]]
    kmeans_distortion = mean_distortion(x, with_kmeans.codebook)
    assert kmeans_distortion < 0.5 * mean_distortion(x, random_rows)
    assert kmeans_distortion < 0.5 * mean_distortion(x, make("vq", codebook_size=16).codebook)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_kmeans_init_on_a_batch_smaller_than_the_codebook_leaves_no_duplicate_codes(metric):
    # image-vq-f8 meets its first batch with 512 tokens for 1024 codes; duplicated codes lose
    # every tie to their twin and stay dead until the first restart.
    torch.manual_seed(2)
    q = make("vq", codebook_size=64, metric=metric, dead_code_threshold=0.0, usage_window=4096)
    q(torch.randn(1, 8, 16))
    assert torch.unique(q.codebook, dim=0).shape[0] == 64
    for _ in range(8):
        out = q(torch.randn(1, 8, 64))
    assert out.stats["used_fraction"] > 0.75  # far above the 16 / 64 a duplicated book allows


def test_residual_levels_each_lower_the_distortion():
    torch.manual_seed(2)
    q = make("rvq", codebook_size=16, num_levels=4, dead_code_threshold=0.0)
    for _ in range(3):
        q(torch.randn(4, 8, 256))
    q.eval()
    z = torch.randn(4, 8, 256)
    codes = q.encode(z)
    errors = [float(F.mse_loss(q.decode(codes[:, :level]), z)) for level in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors


def test_residual_fsq_levels_each_lower_the_distortion():
    q = make("rfsq", dim=3, num_levels=3).eval()  # no projection: errors are the stack's own
    z = 0.5 * torch.randn(4, 3, 256)
    codes = q.encode(z)
    errors = [float(F.mse_loss(q.decode(codes[:, :level]), z)) for level in range(1, 4)]
    assert all(later < 0.5 * earlier for earlier, later in zip(errors, errors[1:], strict=False))
    assert torch.equal(q(z).codes, codes)


def test_quantizer_dropout_keeps_a_prefix_of_the_levels_per_sample():
    torch.manual_seed(3)
    # Codes learn by gradient here so that the forward leaves the codebooks as they were.
    q = make(
        "rvq",
        codebook_size=16,
        num_levels=4,
        quantizer_dropout=1.0,
        ema=False,
        dead_code_threshold=0.0,
    )
    q(torch.randn(64, 8, 4))  # k-means init of every level
    out = q(torch.randn(64, 8, 4))
    prefixes = torch.stack([q.decode(out.codes[:, :level]) for level in range(1, 5)], dim=1)
    gaps = (prefixes - out.z_q.unsqueeze(1)).flatten(2).abs().amax(2)  # (B, levels)
    assert (gaps.min(1).values < 1e-5).all()  # every sample decodes from some prefix
    assert gaps.argmin(1).unique().numel() > 1  # and the prefix length varies over samples


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_bf16_autocast_runs_as_an_fp32_island(name):
    q = make(name)
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z.bfloat16())
        loss = out.z_q.float().square().mean() + sum(out.losses.values(), torch.zeros(()))
    loss.backward()
    assert out.z_q.dtype == torch.float32
    assert torch.isfinite(out.z_q).all() and torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_cosine_codes_are_unit_vectors():
    q = make("vq", metric="cosine")
    out = q(torch.randn(2, 8, 10))
    assert torch.allclose(out.z_q.norm(dim=1), torch.ones(2, 10), atol=1e-5)


def test_factorized_lookup_trains_both_projections():
    q = make("vq", dim=16, codebook_dim=4)
    assert q.codebook.shape == (32, 4)
    out = q(torch.randn(2, 16, 10))
    (out.z_q.square().mean() + sum(out.losses.values())).backward()
    assert q.project_in.weight.grad.abs().sum() > 0 and q.project_out.weight.grad.abs().sum() > 0


def test_fsq_codes_are_a_bijection_onto_the_grid():
    q = make("fsq", dim=3, levels=[8, 5, 5])
    assert q.codebook_size == 200
    every = torch.arange(200).reshape(1, 200)
    points = q.decode(every)
    assert torch.unique(points[0].t(), dim=0).shape[0] == 200
    assert [points[0, c].unique().numel() for c in range(3)] == [8, 5, 5]


def test_fsq_takes_the_papers_levels_for_a_target_size():
    q = QUANTIZERS.create("fsq", dim=8, codebook_size=1024)
    assert q.config.levels == (8, 5, 5, 5) and q.codebook_size == 1000


def test_usage_stats_on_a_known_histogram():
    stats = usage_stats(torch.tensor([5, 5, 5, 5, 0, 0, 0, 0]))
    assert stats == {
        "used_fraction": 0.5,
        "dead_codes": 4.0,
        "entropy_bits": 2.0,
        "perplexity": 4.0,
    }


def test_usage_window_keeps_only_the_latest_tokens():
    q = make(
        "vq", codebook_size=4, dim=2, usage_window=5, kmeans_init=False, dead_code_threshold=0.0
    )
    _set_ema_state(q, [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], [1.0] * 4)
    first = torch.tensor([[0.0, 0.0]] * 4).t().unsqueeze(0)
    second = torch.tensor([[10.0, 10.0]] * 3).t().unsqueeze(0)
    q(first)
    q(second)
    # window of 5 tokens: the last 2 of the first batch and all 3 of the second
    assert q.usage_window.histogram.tolist() == [2, 0, 0, 3]


def test_state_survives_a_safetensors_round_trip(tmp_path):
    q = make("vq")
    q(torch.randn(2, 8, 32))
    state = q.state_dict()
    assert {"codebook", "cluster_size", "embed_sum", "initialized"} <= set(state)
    save_file(state, tmp_path / "q.safetensors")
    fresh = make("vq")
    fresh.load_state_dict(load_file(tmp_path / "q.safetensors"))
    z = torch.randn(2, 8, 7)
    assert bool(fresh.initialized) and torch.equal(fresh.encode(z), q.encode(z))


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_trained_state_survives_a_safetensors_round_trip(name, tmp_path):
    torch.manual_seed(4)
    q = make(name, **PROJECTED.get(name, {"codebook_dim": 4}))
    optimizer = torch.optim.SGD(q.parameters(), lr=0.1) if list(q.parameters()) else None
    for _ in range(2):
        out = q(torch.randn(2, 8, 32))
        if optimizer is not None:
            optimizer.zero_grad()
            (out.z_q.square().mean() + sum(out.losses.values(), torch.zeros(()))).backward()
            optimizer.step()
    save_file(q.state_dict(), tmp_path / "q.safetensors")
    torch.manual_seed(5)  # a fresh instance with other random weights
    fresh = make(name, **PROJECTED.get(name, {"codebook_dim": 4}))
    fresh.load_state_dict(load_file(tmp_path / "q.safetensors"))
    z = torch.randn(2, 8, 7)
    codes = q.encode(z)
    assert torch.equal(fresh.encode(z), codes)
    assert torch.equal(fresh.decode(codes), q.decode(codes))


def test_instances_are_the_documented_classes():
    assert isinstance(make("vq"), VectorQuantizer)
    assert isinstance(make("rvq"), ResidualVQ)
    assert isinstance(make("fsq"), FSQ)
    assert isinstance(make("lfq"), LFQ)
    assert isinstance(make("simvq"), SimVQ)


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs Linux's resettable peak RSS")
def test_a_training_step_never_builds_an_n_by_k_matrix():
    n, k = 32768, 4096  # an (N, K) fp32 matrix would be 512 MiB
    q = make("vq", dim=16, codebook_size=k, kmeans_init=False)
    z = torch.randn(1, 16, n, requires_grad=True)
    with measure_peak(torch.device("cpu")) as peak:
        out = q(z)
        (out.z_q.square().mean() + sum(out.losses.values())).backward()
    assert peak.extra_bytes < 160 * 2**20
