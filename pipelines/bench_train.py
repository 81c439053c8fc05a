"""Training throughput per preset: optimizer steps per second and peak memory on one device.

A step is what ``vqtok train`` does per batch: forward, the modality's reconstruction loss
plus the model's own losses, backward, gradient clipping and AdamW. Inputs are random
batches at the trainer's default crop size (data loading is not timed). Time: steps/s over
``steps`` steps after one untimed warm-up step. Memory: the peak the steps add on top of
the model and optimizer (``vqtok.pipelines.memory.measure_peak``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

import vqtok
from vqtok.models import PRESETS
from vqtok.pipelines.memory import measure_peak
from vqtok.pipelines.training.data import resolve_crop
from vqtok.pipelines.training.losses import ReconstructionLoss


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: ReconstructionLoss,
          x: torch.Tensor) -> None:
    x_hat, losses, _ = model(x)
    terms = {k: v for k, v in losses.items() if k != "reconstruction"} | loss_fn(x_hat, x)
    optimizer.zero_grad(set_to_none=True)
    torch.stack(list(terms.values())).sum().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def bench_train(presets: Sequence[str] | None = None, steps: int = 5, batch_size: int = 2,
                device: str = "cpu") -> list[dict]:
    """One row per preset: preset, input shape, steps_per_s, peak_mb (None where unknown)."""
    rows = []
    target = torch.device(device)
    for name in presets or sorted(PRESETS):  # the tokenizers; a CVAE needs conditions
        torch.manual_seed(0)
        model = vqtok.create_model(name).to(target).train()
        config = model.config
        shape = (batch_size, config.channels, *resolve_crop(config, []))
        x = torch.rand(shape, device=target) * 2 - 1
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = ReconstructionLoss(config.modality, sample_rate=config.sample_rate).to(target)
        _step(model, optimizer, loss_fn, x)  # warm-up: k-means init, optimizer state
        with measure_peak(target) as peak:
            start = time.perf_counter()
            for _ in range(steps):
                _step(model, optimizer, loss_fn, x)
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            seconds = time.perf_counter() - start
        rows.append({
            "preset": name,
            "input": list(shape),
            "steps_per_s": round(steps / seconds, 3),
            "peak_mb": None if peak.extra_bytes is None else round(peak.extra_bytes / 2**20, 1),
        })
    return rows
