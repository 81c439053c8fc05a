"""LMTrainConfig: every setting of a token-LM training run (``vqtok lm train``).

Loaded like every job config: defaults, then a TOML/JSON file, then flags, then
``--set key=value``; unknown keys and bad values are refused before any work. The
resolved config is saved as ``OUT/config.toml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vqtok.pipelines.config import JobConfig


@dataclass
class LMTrainConfig(JobConfig):
    """A token-LM training run.

    model, model_options: an LM preset (``vqtok.lm.list_lms()``) and LMConfig overrides
        (d_model, num_layers, max_len, class_dropout...); the tokenizer's side (codebook
        size, levels, classes) comes from the tokens.
    train, val: ``export-tokens`` prefixes; ``val`` may be empty.
    labels, val_labels: code shards (as ``encode`` wrote them, with ``.cls`` fields) whose
        classes condition the LM, matched to the exported samples by key; empty trains
        an unconditional LM.
    num_classes: classes of a conditional LM; 0 takes the largest label + 1.
    layout: the latent grid of one piece, e.g. [7, 7] for 28x28 images at f4, [50] for
        one-second audio windows; empty treats each sample as one 1-D piece.
    warmup_steps, min_lr_ratio: linear warm-up, then cosine decay to lr * min_lr_ratio.
    grad_clip: max global gradient norm (0 turns clipping off).
    checkpoint_every, keep_last: training checkpoints every N steps, keeping the last k.
    val_every, val_batches: validate every N steps on at most this many batches.
    """

    model: str = "lm-tiny"
    model_options: dict[str, Any] = field(default_factory=dict)
    train: str = ""
    val: str = ""
    labels: str = ""
    val_labels: str = ""
    num_classes: int = 0
    layout: list[int] = field(default_factory=list)
    out: str = "runs/lm"
    batch_size: int = 32
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3
    val_every: int = 500
    val_batches: int = 16
    tensorboard: bool = False

    def problems(self) -> list[str]:
        """Value rules: counts positive, rates in range, a training prefix given."""
        positive = ("batch_size", "steps", "log_every", "checkpoint_every", "keep_last",
                    "val_every", "val_batches")
        found = [f"{name} must be at least 1, got {getattr(self, name)}"
                 for name in positive if getattr(self, name) < 1]
        found += [f"{name} must be >= 0, got {getattr(self, name)}"
                  for name in ("num_classes", "warmup_steps", "weight_decay", "grad_clip")
                  if not getattr(self, name) >= 0]
        if not (self.lr > 0 and math.isfinite(self.lr)):
            found.append(f"lr must be a positive number, got {self.lr}")
        found += [f"{name} must lie in [0, 1), got {getattr(self, name)}"
                  for name in ("beta1", "beta2") if not 0.0 <= getattr(self, name) < 1.0]
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            found.append(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= len(self.layout) <= 3 or any(n < 1 for n in self.layout):
            found.append(f"layout must be 1 to 3 positive sizes (or empty), got {self.layout}")
        if self.val_labels and not self.val:
            found.append("val_labels needs val")
        return found
