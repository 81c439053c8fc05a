"""TrainConfig: every setting of a training run, as a dataclass that round-trips through TOML.

A run is configured by the model preset's recipe (``recipes.py``), then a TOML file, then
flags, then ``--set key=value`` overrides, in that order; unknown keys and values of the
wrong type are refused with a message naming them, before any work starts. The resolved
config is written beside the run's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from vqtok.models.discriminators import DISCRIMINATORS  # importing it registers the names
from vqtok.pipelines.config import JobConfig, read_config_file
from vqtok.pipelines.training.recipes import recipe_for

PRECISIONS = ("auto", "fp32", "bf16")
BEST_METRICS = {"mse": "min", "psnr": "max", "mel_distance": "min", "loss": "min"}
GAN_LOSSES = ("hinge", "lsgan")


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

    Adversarial training (off by default; docs/training.md says how to pick the values):

    adversarial: "" (off) or discriminator names joined by "+": "patchgan" (2D for images,
        3D for video), "msstft" (multi-scale STFT) and "mpd" (multi-period) for audio,
        e.g. "msstft+mpd".
    adversarial_weight: weight of the generator's adversarial loss.
    adversarial_start: the step from which the discriminator trains and acts; before it,
        training is as with adversarial off (and costs the same).
    adversarial_loss: "hinge" or "lsgan" (least squares), for both players.
    adaptive_weight: scale the adversarial loss by VQGAN's adaptive weight, the ratio of the
        reconstruction and adversarial gradient norms at the decoder's last layer, clamped
        to [0, adaptive_weight_max].
    feature_matching_weight: L1 between the critic's features of x and x_hat (0: off).
    lecam_weight, lecam_decay: LeCam regularization of the critic, with EMAs of its real
        and fake logits (0: off).
    discriminator_lr: the critic's AdamW learning rate, constant (0: the generator's lr);
        discriminator_beta1/beta2 its betas; weight_decay and grad_clip are shared.
    discriminator_options: per discriminator, builder overrides, e.g.
        ``{patchgan = {width = 32, layers = 3}}``.
    balancer: EnCodec's loss balancer (for audio): each reconstruction and adversarial
        term's gradient at the decoder output is normalized and weighted by its weight's
        share; excludes adaptive_weight. balancer_decay: EMA decay of the gradient norms.
    perceptual_weight: reserved for a perceptual (LPIPS) loss, which needs pretrained
        weights that vqtok cannot download; any value above 0 is refused.
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
    adversarial: str = ""
    adversarial_weight: float = 0.5
    adversarial_start: int = 2000
    adversarial_loss: str = "hinge"
    adaptive_weight: bool = True
    adaptive_weight_max: float = 1e4
    feature_matching_weight: float = 0.0
    lecam_weight: float = 0.0
    lecam_decay: float = 0.99
    discriminator_lr: float = 0.0
    discriminator_beta1: float = 0.5
    discriminator_beta2: float = 0.9
    discriminator_options: dict[str, Any] = field(default_factory=dict)
    balancer: bool = False
    balancer_decay: float = 0.999
    perceptual_weight: float = 0.0

    @classmethod
    def load(cls, path: str | Path | None = None, flags: Mapping[str, Any] | None = None,
             overrides: Iterable[str] = ()) -> Self:
        """``JobConfig.load`` with the model preset's recipe under the file, flags and --set.

        Args:
            path: a TOML or JSON config file, or None.
            flags: dotted key -> value, as given on the command line (None: not given).
            overrides: ``key=value`` strings.

        Returns:
            The resolved, checked config.
        """
        overrides = list(overrides)
        config = super().load(path, flags, overrides)
        given = set(read_config_file(path)) if path is not None else set()
        given |= {key.split(".")[0] for key, value in (flags or {}).items() if value is not None}
        given |= {text.partition("=")[0].strip().split(".")[0] for text in overrides}
        recipe = {key: value for key, value in recipe_for(config.model).items()
                  if key not in given}
        if not recipe:
            return config
        return cls.from_dict(config.to_dict() | recipe, source=f"the recipe of {config.model}")

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
        return found + self._adversarial_problems()

    def _adversarial_problems(self) -> list[str]:
        found = []
        nonnegative = ("adversarial_weight", "adversarial_start", "feature_matching_weight",
                       "lecam_weight", "discriminator_lr")
        found += [f"{name} must be >= 0, got {getattr(self, name)}"
                  for name in nonnegative if not getattr(self, name) >= 0]
        found += [f"{name} must lie in [0, 1), got {getattr(self, name)}"
                  for name in ("lecam_decay", "discriminator_beta1", "discriminator_beta2",
                               "balancer_decay")
                  if not 0.0 <= getattr(self, name) < 1.0]
        if not (self.adaptive_weight_max > 0 and math.isfinite(self.adaptive_weight_max)):
            found.append(f"adaptive_weight_max must be a positive number, "
                         f"got {self.adaptive_weight_max}")
        if self.adversarial_loss not in GAN_LOSSES:
            found.append(f"adversarial_loss must be one of {', '.join(GAN_LOSSES)}, "
                         f"got {self.adversarial_loss!r}")
        names = self.adversarial.split("+") if self.adversarial else []
        unknown = [name for name in names if name not in DISCRIMINATORS]
        if unknown or len(set(names)) != len(names):
            found.append(f"adversarial must be empty or discriminator names joined by '+' "
                         f"({', '.join(DISCRIMINATORS.names())}), each once; got "
                         f"{self.adversarial!r}")
        for name, value in self.discriminator_options.items():
            if name not in names or not isinstance(value, dict):
                found.append(f"discriminator_options.{name} must be a table of options for a "
                             f"discriminator named in adversarial ({self.adversarial!r})")
        if not names:
            found += [f"{name} is set but adversarial is off (\"\")" for name in
                      ("feature_matching_weight", "lecam_weight") if getattr(self, name) > 0]
        if names and self.balancer and self.adaptive_weight:
            found.append("balancer and adaptive_weight both rescale the adversarial loss; "
                         "set adaptive_weight = false to use the balancer")
        if self.perceptual_weight != 0:
            found.append("perceptual_weight: no perceptual loss is built, because its "
                         "pretrained weights (LPIPS/VGG) cannot be downloaded at run time and "
                         "none ship with vqtok (docs/training.md); leave it at 0")
        return found
