"""TrainConfig: every setting of a training run, as a dataclass that round-trips through TOML.

A run is configured by a TOML file, then flags, then ``--set key=value`` overrides, in that
order; unknown keys and values of the wrong type are refused with a message naming them,
before any work starts. The resolved config is written beside the run's outputs.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from vqtok.pipelines.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16")
BEST_METRICS = {"mse": "min", "psnr": "max", "mel_distance": "min", "loss": "min"}


@dataclass
class TrainConfig:
    """A training run.

    model, model_options: a registry name and its config overrides (``vqtok.create_model``).
    train, val: shard specs (paths, folders, brace patterns); ``val`` may be empty.
    out: run directory (config, metrics, checkpoints, pictures, final and best models).
    crop: spatial size of a training input, e.g. [128, 128] (image), [16000] (audio
        samples), [17, 64, 64] (video frames, H, W); empty picks the modality's default.
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

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise UsageError naming the first field whose type or value is not allowed."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        positive = ("batch_size", "shuffle_buffer", "steps", "log_every", "checkpoint_every",
                    "keep_last", "val_every", "val_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        nonnegative = ("num_workers", "warmup_steps", "weight_decay", "grad_clip", "l1_weight",
                       "l2_weight", "stft_weight", "mel_weight")
        for name in nonnegative:
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be a positive number, got {self.lr}")
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise UsageError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.best_metric not in BEST_METRICS:
            raise UsageError(f"best_metric must be one of {', '.join(BEST_METRICS)}, got {self.best_metric!r}")
        if any(size < 1 for size in self.crop):
            raise UsageError(f"crop sizes must be positive, got {self.crop}")

    def to_toml(self) -> str:
        """The config as TOML text (``from_toml`` reads it back)."""
        return tomli_w.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict, refusing unknown keys (``source`` names where they came from)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(
                f"unknown key{'s' * (len(unknown) > 1)} in {source}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a TOML file; unreadable files and unknown keys raise UsageError."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_toml())
        return path

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings; a value is read as TOML (``lr=1e-3``, ``crop=[32, 32]``,
        ``model_options.widths=[8, 8, 8, 8]``), and as a plain string when it is not TOML."""
        data = dataclasses.asdict(self)
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--set expects key=value, got {assignment!r}")
            _assign(data, key.strip().split("."), parse_value(text.strip()))
        return type(self).from_dict(data, source="--set")


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, list, inline table, quoted string), else the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(data: dict[str, Any], path: list[str], value: Any) -> None:
    head, *rest = path
    if not rest:
        data[head] = value
        return
    if head != "model_options":
        raise UsageError(f"only model_options takes dotted keys, got {'.'.join(path)}")
    _nested_set(data.setdefault(head, {}), rest, value)


def _nested_set(table: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        table = table.setdefault(key, {})
    table[path[-1]] = value


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise UsageError unless ``value`` fits ``hint`` (int for float is fine, bool for int is not)."""
    if not _fits(value, hint):
        shown = getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint)
        raise UsageError(
            f"{name} must be {shown or hint}, got {value!r} ({type(value).__name__})"
        )


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)
