"""TrainConfig: every setting of a training run, as a dataclass that round-trips through TOML.

A run is configured by a TOML file, then flags, then ``--set key=value`` overrides, in that
order; unknown keys and values of the wrong type are refused with a message naming them,
before any work starts. The resolved config is written beside the run's outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vqtok.pipelines.config import JobConfig

PRECISIONS = ("auto", "fp32", "bf16")
BEST_METRICS = {"mse": "min", "psnr": "max", "mel_distance": "min", "loss": "min"}


@dataclass
class TrainConfig(JobConfig):
    """A training run.

    model, model_options: a registry name and its config overrides (``vqtok.create_model``).
    train, val: shard specs (paths, folders, brace patterns); ``val`` may be empty.
    out: run directory (config, metrics, checkpoints, pictures, final and best models).
    crop: spatial size of a training input, e.g. [128, 128] (image), [16000] (audio
        samples), [17, 64, 64] (video frames, H, W); empty picks the modality's default.
    mono: mix multichannel audio down for a 1-channel model (refused otherwise: counted
        and logged as skipped samples, so that no channel is dropped without a word).
    shuffle_buffer: pieces held for shuffling (1 keeps shard order).
    warmup_steps, min_lr_ratio: linear warm-up, then cosine decay to lr * min_lr_ratio.
    grad_clip: max global gradient norm (0 turns clipping off).
    ema_decay: keep an EMA of the weights (0 turns it off); validation and the saved
        models then use the EMA weights.
    precision: "bf16" autocast (the quantizer stays fp32), "fp32", or "auto" (bf16 on CUDA).
    l1_weight, l2_weight, stft_weight, mel_weight: reconstruction loss weights; the STFT
        and mel terms apply to audio only.
    deterministic: deterministic kernels, so that a stopped and resumed run ends with the
        same weights as an uninterrupted one.
    checkpoint_every, keep_last: training checkpoints every N steps, keeping the last k.
    val_every, val_batches: validate every N steps on at most this many batches.
    best_metric: the validation metric that selects the ``best`` model.
    """

    model: str = "image-vq-f8"
    model_options: dict[str, Any] = field(default_factory=dict)
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    out: str = "runs/train"
    crop: list[int] = field(default_factory=list)
    mono: bool = False
    batch_size: int = 8
    shuffle_buffer: int = 256
    num_workers: int = 0
    steps: int = 10000
    lr: float = 3e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    precision: str = "auto"
    l1_weight: float = 0.0
    l2_weight: float = 1.0
    stft_weight: float = 1.0
    mel_weight: float = 1.0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_last: int = 3
    val_every: int = 1000
    val_batches: int = 16
    best_metric: str = "mse"
    tensorboard: bool = True

    def problems(self) -> list[str]:
        """Value rules: counts positive, weights non-negative, rates and names in range."""
        found = []
        positive = ("batch_size", "shuffle_buffer", "steps", "log_every", "checkpoint_every",
                    "keep_last", "val_every", "val_batches")
        found += [f"{name} must be at least 1, got {getattr(self, name)}"
                  for name in positive if getattr(self, name) < 1]
        nonnegative = ("num_workers", "warmup_steps", "weight_decay", "grad_clip", "l1_weight",
                       "l2_weight", "stft_weight", "mel_weight")
        found += [f"{name} must be >= 0, got {getattr(self, name)}"
                  for name in nonnegative if not getattr(self, name) >= 0]
        if not (self.lr > 0 and math.isfinite(self.lr)):
            found.append(f"lr must be a positive number, got {self.lr}")
        found += [
            f"{name} must lie in [0, 1), got {getattr(self, name)}"
            for name in ("beta1", "beta2", "ema_decay")
            if not 0.0 <= getattr(self, name) < 1.0
        ]
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            found.append(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.precision not in PRECISIONS:
            found.append(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.best_metric not in BEST_METRICS:
            found.append(
                f"best_metric must be one of {', '.join(BEST_METRICS)}, got {self.best_metric!r}"
            )
        if any(size < 1 for size in self.crop):
            found.append(f"crop sizes must be positive, got {self.crop}")
        return found
