"""TokenizerConfig: everything needed to rebuild a tokenizer's architecture, as a JSON-able
dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

MODALITY_DIMS = {"audio": 1, "image": 2, "video": 3}


class ConvGeometry:
    """Axes and total strides of a config with ``modality`` and ``stage_strides`` fields."""

    modality: str
    stage_strides: tuple[tuple[int, ...], ...]

    @property
    def dims(self) -> int:
        """Number of spatial axes: 1 audio, 2 image, 3 video."""
        return MODALITY_DIMS[self.modality]

    @property
    def strides(self) -> tuple[int, ...]:
        """Total downsampling per axis, e.g. (320,) for audio or (4, 8, 8) for video; ()
        for a network without stages."""
        return tuple(math.prod(axis) for axis in zip(*self.stage_strides, strict=True))


@dataclass
class TokenizerConfig(ConvGeometry):
    """Architecture of a VQTokenizer.

    ``stage_strides`` lists one per-axis stride tuple per encoder stage, e.g. ((2, 2),) * 3
    for an image 8x per side; ``strides`` is their per-axis product. ``widths`` has one
    channel count per stage boundary (len(stage_strides) + 1). ``quantizer`` names an entry of
    ``vqtok.registry.QUANTIZERS``; ``quantizer_options`` are its builder's keyword arguments
    (all but ``dim``, which is ``latent_dim``). ``causal_time`` makes axis 0 (time) causal.
    """

    preset: str
    modality: str
    channels: int
    stage_strides: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]
    latent_dim: int = 64
    blocks_per_stage: int = 1
    mid_blocks: int = 1
    dilation_growth: int = 1
    causal_time: bool = False
    quantizer: str = "vq"
    quantizer_options: dict[str, Any] = field(default_factory=dict)
    sample_rate: int | None = None
    fps: float | None = None
    clip_frames: int | None = None

    def __post_init__(self) -> None:
        self.stage_strides = tuple(tuple(int(s) for s in stage) for stage in self.stage_strides)
        self.widths = tuple(int(w) for w in self.widths)
        self.quantizer_options = dict(self.quantizer_options)
        self._check()

    def _check(self) -> None:
        if self.modality not in MODALITY_DIMS:
            raise ValueError(
                f"modality must be one of {sorted(MODALITY_DIMS)}, got {self.modality!r}"
            )
        dims = MODALITY_DIMS[self.modality]
        if not self.stage_strides or any(len(s) != dims for s in self.stage_strides):
            raise ValueError(
                f"{self.modality} needs stage_strides of {dims}-tuples, got {self.stage_strides}"
            )
        if any(s < 1 for stage in self.stage_strides for s in stage):
            raise ValueError(f"strides must be >= 1, got {self.stage_strides}")
        if len(self.widths) != len(self.stage_strides) + 1:
            raise ValueError(
                f"widths needs {len(self.stage_strides) + 1} entries (one per stage boundary), "
                f"got {len(self.widths)}"
            )
        if self.causal_time and dims < 2:
            raise ValueError("causal_time applies to video (time is axis 0 of 3)")
        if min(self.channels, self.latent_dim, *self.widths) < 1:
            raise ValueError("channels, latent_dim and widths must be positive")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["stage_strides"] = [list(s) for s in self.stage_strides]
        out["widths"] = list(self.widths)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown tokenizer config keys: {', '.join(unknown)}")
        return cls(**data)

    def with_overrides(self, **overrides: Any) -> TokenizerConfig:
        """A copy with fields replaced.

        ``quantizer_options`` are merged into the current ones while the quantizer stays the
        same; when ``quantizer`` changes, only the given options are kept.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown tokenizer config keys: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        changes = dict(overrides)
        if "quantizer_options" in changes or "quantizer" in changes:
            same = changes.get("quantizer", self.quantizer) == self.quantizer
            base = self.quantizer_options if same else {}
            changes["quantizer_options"] = {**base, **changes.get("quantizer_options", {})}
        return dataclasses.replace(self, **changes)
