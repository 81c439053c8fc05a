"""Centred VQ latents and dead-code re-seeding from small batches (issue 19)."""

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
from vqtok.quantizers.restart import draw_replacements
from vqtok.registry import QUANTIZERS


def centred_vq(**options):
    return QUANTIZERS.create(
        "vq", dim=8, codebook_size=16, metric="cosine", center=True, **options
    )


def test_a_common_shift_of_the_first_batch_changes_no_code():
    torch.manual_seed(0)
    z = torch.randn(2, 8, 24)
    shifted = z + 5.0 * torch.randn(1, 8, 1)  # what the first optimizer steps do to latents
    q = centred_vq(dead_code_threshold=0.0)
    state = {k: v.clone() for k, v in q.state_dict().items()}
    torch.manual_seed(10)  # the same k-means seeds for both
    codes = q(z).codes
    q.load_state_dict(state)
    torch.manual_seed(10)
    assert torch.equal(q(shifted).codes, codes)


def test_common_shift_gets_no_gradient():
    torch.manual_seed(1)
    q = centred_vq(dead_code_threshold=0.0)
    q(torch.randn(2, 8, 24))  # initializes the codebook and the running mean
    z = torch.randn(2, 8, 24, requires_grad=True)
    out = q(z)
    (out.z_q * torch.randn_like(out.z_q)).sum().backward()
    # The downstream gradient has no component along a common shift (as in batch norm).
    assert float(z.grad.sum(dim=(0, 2)).abs().max()) < 1e-4


def test_the_running_mean_moves_by_one_minus_decay_per_training_batch():
    torch.manual_seed(2)
    q = centred_vq(center_decay=0.5)
    first = torch.randn(2, 8, 24) + 3.0
    q(first)
    first_mean = first.movedim(1, -1).reshape(-1, 8).mean(0)
    assert torch.allclose(q.latent_mean, first_mean, atol=1e-5)  # the first batch sets it
    second = torch.randn(2, 8, 24) - 1.0
    q(second)
    second_mean = second.movedim(1, -1).reshape(-1, 8).mean(0)
    assert torch.allclose(q.latent_mean, 0.5 * first_mean + 0.5 * second_mean, atol=1e-5)


def test_training_and_inference_subtract_the_same_mean():
    torch.manual_seed(3)
    q = centred_vq(ema=False, dead_code_threshold=0.0)  # a codebook that a forward leaves alone
    q(torch.randn(2, 8, 24))
    z = torch.randn(2, 8, 24) + 2.0
    training_codes = q(z).codes
    q.eval()
    before = q.latent_mean.clone()
    assert torch.equal(q(z).codes, training_codes)
    assert torch.equal(q.encode(z), training_codes)
    assert torch.equal(q.latent_mean, before)  # inference leaves the mean alone


def test_anchoring_loss_measures_the_mean_error_against_the_spread():
    torch.manual_seed(4)
    z = torch.randn(2, 8, 24)
    losses = []
    for scale in (1.0, 10.0):
        q = centred_vq(dead_code_threshold=0.0)
        q(scale * z)
        out = q(scale * (z + 0.3))  # the batch mean is 0.3 per channel off the running mean
        losses.append(float(out.losses["centering"].detach()))
    assert losses[0] > 0.05 and abs(losses[0] - losses[1]) < 1e-4 * losses[0]


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


def _run_rank(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different data (and offsets) per rank
    q = centred_vq(usage_window=48, dead_code_threshold=2.0)
    for _ in range(4):
        out = q((torch.randn(4, 8, 12) + rank).requires_grad_())
        (out.z_q.square().mean() + sum(out.losses.values(), torch.zeros(()))).backward()
    state = {k: v.detach().clone() for k, v in q.named_buffers()}
    save_file(state, str(Path(out_dir) / f"rank{rank}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


def test_ranks_keep_the_same_running_mean(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_run_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    first, second = (load_file(tmp_path / f"rank{r}.safetensors") for r in range(2))
    differing = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differing, f"ranks disagree on {differing}"
    # The mean is over both ranks' latents: between rank 0's (about 0) and rank 1's (about 1).
    assert 0.2 < float(first["latent_mean"].mean()) < 0.8
