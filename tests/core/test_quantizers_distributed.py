"""Two gloo ranks on different data keep bit-identical codebook state; inference is
collective-free."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import vqtok.quantizers  # noqa: F401  (registers the quantizers)
from vqtok.registry import QUANTIZERS

WORLD = 2
STEPS = 4
# Small windows so that dead-code restarts (rank 0 draws, then broadcasts) happen within STEPS.
OPTIONS = {
    "vq": {"codebook_size": 64, "usage_window": 48, "dead_code_threshold": 2.0},
    "rvq": {"codebook_size": 32, "num_levels": 3, "usage_window": 48, "dead_code_threshold": 2.0},
    "fsq": {"levels": [5, 4, 3]},
    "rfsq": {"levels": [5, 4, 3], "num_levels": 2},
    # No codebook state beyond the usage histogram; SimVQ's frozen codebook comes from a seed,
    # so ranks seeded differently must still agree on it.
    "lfq": {"codebook_size": 32},
    "simvq": {"codebook_size": 32},
}
RESTARTING = ("vq", "rvq")
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_collectives() -> list[str]:
    """Replace the collectives by stubs that only record their names (a lone rank would hang)."""
    calls: list[str] = []
    for name in COLLECTIVES:
        setattr(dist, name, lambda *args, _name=name, **kwargs: calls.append(_name))
    return calls


def _state(q: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every buffer: codebook state and the all-reduced usage histograms."""
    return {k: v.detach().clone() for k, v in q.named_buffers()}


def _run_rank(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different initial codebooks and different data per rank
    quantizers = {name: QUANTIZERS.create(name, dim=8, **OPTIONS[name]) for name in OPTIONS}
    for name, q in quantizers.items():
        restarts = 0.0
        for _ in range(STEPS):
            out = q((torch.randn(4, 8, 4, 4) + rank).requires_grad_())
            (out.z_q.square().mean() + sum(out.losses.values(), torch.zeros(()))).backward()
            restarts += out.stats.get("restarted_codes", 0.0)
        state = _state(q)
        state["restarts"] = torch.tensor(restarts)
        save_file(state, str(Path(out_dir) / f"{name}-rank{rank}.safetensors"))
    dist.barrier()
    if rank == 0:  # inference on one rank alone: any collective would be a bug
        calls = _count_collectives()
        z = torch.randn(2, 8, 4, 4)
        for q in quantizers.values():
            with torch.no_grad():
                q(z)
            q.encode(z)
            q.eval()
            q(z)
            q.usage()
        Path(out_dir, "inference-collectives.txt").write_text(" ".join(calls))
    else:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_run_rank, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return out_dir


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_ranks_keep_bit_identical_state(ranks_output, name):
    first, second = (load_file(ranks_output / f"{name}-rank{r}.safetensors") for r in range(WORLD))
    assert first.keys() == second.keys()
    differing = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differing, f"ranks disagree on {differing}"
    if name in RESTARTING:
        assert float(first["restarts"]) > 0, "the run should exercise dead-code restarts"


def test_inference_runs_no_collective(ranks_output):
    assert (ranks_output / "inference-collectives.txt").read_text() == ""
