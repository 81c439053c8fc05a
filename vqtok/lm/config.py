"""LMConfig: the architecture and token layout of a token LM, as a JSON-able dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class LMConfig:
    """A decoder-only transformer over the codes of one tokenizer.

    Vocabulary: codes ``[0, K)``, then BOS ``K``, EOS ``K + 1``, then (when ``num_classes``
    is C > 0) the class tokens ``K + 2 + c`` and the null class ``K + 2 + C`` that
    classifier-free guidance samples against. A sequence starts with BOS, or with its class
    token in a conditional model.

    Attributes:
        preset: The registry name it was built from.
        codebook_size: K, the tokenizer's codes.
        num_levels: Q, residual levels, interleaved per position (see ``vqtok.lm.layout``).
        layout: The latent grid of one piece: (T,) audio, (H, W) image, (T, H, W) video.
            Positions beyond it are clamped to its last row or column.
        num_classes: C, 0 for an unconditional LM.
        class_dropout: Training probability of replacing the class by the null class.
        d_model, num_layers, num_heads, mlp_ratio, dropout: The transformer.
        max_len: The context in tokens, the start token included.
        tokenizer_id: ``model_id`` of the tokenizer whose codes this LM models.
        modality: The tokenizer's modality ("image", "audio", "video"), for sampling.
        relative_time: Axis 0 of the layout is time, counted from each chunk's first
            position instead of the piece's (``vqtok.lm.layout``): sequences of any length
            (whole audio files, long videos) are then trained, coded and sampled alike,
            and ``layout[0]`` only needs to cover one chunk. False for images.
        output_bias: A learned logit bias per residual level, added to the tied output
            layer; training starts it at the code frequencies of the training tokens, so
            the LM starts at the frequency coder's rate instead of uniform codes. False in
            checkpoints written before it existed.
    """

    preset: str = "custom"
    codebook_size: int = 1024
    num_levels: int = 1
    layout: tuple[int, ...] = (16, 16)
    num_classes: int = 0
    class_dropout: float = 0.1
    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    max_len: int = 1024
    tokenizer_id: str = ""
    modality: str = ""
    relative_time: bool = False
    output_bias: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", tuple(int(n) for n in self.layout))
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is out of range, in words; empty when the config is valid."""
        found = [f"{name} must be at least 1, got {getattr(self, name)}"
                 for name in ("codebook_size", "num_levels", "d_model", "num_layers",
                              "num_heads", "mlp_ratio")
                 if getattr(self, name) < 1]
        if not 1 <= len(self.layout) <= 3 or any(n < 1 for n in self.layout):
            found.append(f"layout must be 1 to 3 positive sizes, got {list(self.layout)}")
        if self.num_classes < 0:
            found.append(f"num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.class_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            found.append("class_dropout and dropout must lie in [0, 1)")
        if self.d_model % max(self.num_heads, 1):
            found.append(f"d_model {self.d_model} is not a multiple of num_heads "
                         f"{self.num_heads}")
        if self.max_len < 2:
            found.append(f"max_len must be at least 2, got {self.max_len}")
        return found

    @property
    def bos_id(self) -> int:
        return self.codebook_size

    @property
    def eos_id(self) -> int:
        return self.codebook_size + 1

    @property
    def null_class_id(self) -> int:
        """The token of "no class"; only in a conditional LM."""
        return self.codebook_size + 2 + self.num_classes

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 2 + (self.num_classes + 1 if self.num_classes else 0)

    @property
    def piece_tokens(self) -> int:
        """Code tokens of one whole piece: prod(layout) * Q."""
        return math.prod(self.layout) * self.num_levels

    def start_id(self, label: int | None) -> int:
        """The first token of a sequence: BOS, the class token, or the null class (None).

        Args:
            label: A class in [0, C), or None for the null class; ignored when C == 0.

        Returns:
            The token id.
        """
        if not self.num_classes:
            return self.bos_id
        if label is None:
            return self.null_class_id
        if not 0 <= label < self.num_classes:
            raise ValueError(f"class {label} is outside [0, {self.num_classes})")
        return self.codebook_size + 2 + label

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data (the layout as a list)."""
        data = asdict(self)
        data["layout"] = list(self.layout)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        """Inverse of ``to_dict``; unknown keys are refused.

        Raises:
            ValueError: A key names no field, or a value is out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LM config keys: {', '.join(unknown)}")
        return cls(**data)

    def with_overrides(self, **overrides: Any) -> LMConfig:
        """A copy with fields changed (``ValueError`` for a name that is no field)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown LM config keys: {', '.join(unknown)}")
        return replace(self, **overrides)
