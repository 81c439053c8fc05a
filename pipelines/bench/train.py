"""Training throughput per preset: optimizer steps per second and peak memory on one device.

A step is what ``vqtok train`` does per batch: forward, the modality's reconstruction loss
plus the model's own losses, backward, gradient clipping and AdamW. Inputs are random
batches at the trainer's default crop size (data loading is not timed). Time: steps/s over
``steps`` steps after one untimed warm-up step. Memory: the peak the steps add on top of
the model and optimizer (``vqtok.pipelines.bench.memory.measure_peak``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

import vqtok
from vqtok.models import PRESETS
from vqtok.pipelines.bench.memory import measure_peak, run_in_fresh_process
from vqtok.pipelines.config import JobConfig
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


def _measure_preset(name: str, steps: int, batch_size: int, device: str, memory: bool) -> dict:
    """Steps/s (``memory=False``) or peak extra MiB (``memory=True``) for one preset. The two
    run in separate processes: the memory probe makes the allocator return every freed buffer
    to the OS, which would slow the timed steps."""
    target = torch.device(device)
    torch.manual_seed(0)
    model = vqtok.create_model(name).to(target).train()
    config = model.config
    shape = (batch_size, config.channels, *resolve_crop(config, []))
    x = torch.rand(shape, device=target) * 2 - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = ReconstructionLoss(config.modality, sample_rate=config.sample_rate).to(target)
    if memory:
        with measure_peak(target) as peak:
            for _ in range(2):  # the first step adds k-means init and the optimizer state
                _step(model, optimizer, loss_fn, x)
        return {"peak_mb": None if peak.extra_bytes is None else round(peak.extra_bytes / 2**20, 1)}
    _step(model, optimizer, loss_fn, x)  # untimed warm-up
    start = time.perf_counter()
    for _ in range(steps):
        _step(model, optimizer, loss_fn, x)
    if target.type == "cuda":
        torch.cuda.synchronize(target)
    return {
        "preset": name,
        "input": list(shape),
        "steps_per_s": round(steps / (time.perf_counter() - start), 3),
    }


@dataclass
class TrainBenchConfig(JobConfig):
    """`vqtok bench train`: presets to time (empty: every tokenizer preset), steps, batch
    size and device."""

    presets: list[str] = field(default_factory=list)
    steps: int = 5
    batch_size: int = 2
    device: str = "cpu"

    def problems(self) -> list[str]:
        return [f"{name} must be at least 1, got {getattr(self, name)}"
                for name in ("steps", "batch_size") if getattr(self, name) < 1]


def bench_train(config: TrainBenchConfig | None = None) -> list[dict]:
    """One row per preset (each in a fresh process): preset, input shape, steps_per_s, peak_mb
    (None where unknown)."""
    config = config or TrainBenchConfig()
    steps, batch_size, device = config.steps, config.batch_size, config.device
    names = config.presets or sorted(PRESETS)  # the tokenizers; a CVAE needs conditions
    return [
        run_in_fresh_process(_measure_preset, name, steps, batch_size, device, False)
        | run_in_fresh_process(_measure_preset, name, steps, batch_size, device, True)
        for name in names
    ]
