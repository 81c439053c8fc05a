"""`vqtok lm sample`: sample code sequences from a token LM and decode them to media files.

For each output file the LM samples pieces (one for an image or a video clip, as many
audio windows as ``seconds`` needs), the tokenizer decodes them, and the media writers of
``data.media`` turn them into PNG, WAV or MP4. Sampling uses the KV cache and a fixed
seed, so a run is reproducible; files are written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqtok import VQTokenizer
from vqtok.checkpoint import CheckpointError
from vqtok.lm import TokenLM, load_lm, sample
from vqtok.pipelines.config import JobConfig, RuntimeOptions
from vqtok.pipelines.data.media import restore
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.common import load_model


@dataclass
class SampleConfig(JobConfig):
    """What to sample.

    num: files to write. classes: the class of each file, cycled (empty: unconditional,
    the null class of a conditional LM). temperature, top_k, guidance: as for
    ``vqtok.lm.sample``. size: image or video frame size [H, W] (default: the LM's layout
    times the tokenizer's strides); seconds: audio length per file (default: one piece).
    seed: the generator's seed.
    """

    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    num: int = 8
    classes: list[int] = field(default_factory=list)
    temperature: float = 1.0
    top_k: int = 0
    guidance: float = 1.0
    size: list[int] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0

    def problems(self) -> list[str]:
        found = [] if self.num >= 1 else [f"num must be at least 1, got {self.num}"]
        if not self.temperature > 0:
            found.append(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            found.append(f"top_k must be >= 0, got {self.top_k}")
        if not self.guidance >= 0:
            found.append(f"guidance must be >= 0, got {self.guidance}")
        if self.seconds < 0 or any(n < 1 for n in self.size) or len(self.size) not in (0, 2):
            found.append("size must be [H, W] of positive sizes and seconds >= 0")
        return found


@dataclass
class SampleSummary:
    """What a sampling run wrote."""

    files: list[str]
    classes: list[int | None]
    lm_id: str
    tokenizer_id: str
    seconds: float
    tokens_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return asdict(self)


def sample_media(lm_path: str | Path, tokenizer: str | Path, out: str | Path,
                 config: SampleConfig | None = None) -> SampleSummary:
    """Sample ``config.num`` media files into the folder ``out``.

    Args:
        lm_path: The LM checkpoint directory.
        tokenizer: The checkpoint of the tokenizer the LM was trained on.
        out: The output folder (created).
        config: What to sample.

    Returns:
        The files written, their classes and the sampling speed.

    Raises:
        UsageError: Unreadable checkpoints, an LM of another tokenizer, classes an LM
            cannot take, or a size or length that does not fit the modality.
    """
    config = config or SampleConfig()
    config.check()
    lm, model = _load(lm_path, tokenizer, config.runtime.device)
    labels = _labels(lm, config)
    grid, pieces, meta = _shape(lm, model, config)
    generator = torch.Generator(config.runtime.device).manual_seed(config.seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files, start, tokens = [], time.monotonic(), 0
    for index in range(config.num):
        label = labels[index]
        codes = _sample(lm, pieces, grid, label, config, generator)
        tokens += codes.numel()
        extension, data = _decode(model, codes, meta, lm.config.modality)
        name = f"{'' if label is None else f'class{label}-'}{index:04d}.{extension}"
        _write_atomic(folder / name, data)
        files.append(str(folder / name))
    seconds = time.monotonic() - start
    summary = SampleSummary(files, labels, lm.lm_id, model.model_id, round(seconds, 3),
                            round(tokens / max(seconds, 1e-9), 1))
    (folder / "sample-summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _load(lm_path: str | Path, tokenizer: str | Path, device: str) -> tuple[TokenLM,
                                                                              VQTokenizer]:
    try:
        lm = load_lm(lm_path, device)
    except CheckpointError as error:
        raise UsageError(f"cannot load the LM: {error}") from None
    model = load_model(tokenizer, device)
    if lm.config.tokenizer_id and lm.config.tokenizer_id != model.model_id:
        raise UsageError(f"the LM models the codes of tokenizer {lm.config.tokenizer_id}, not "
                         f"of {model.model_id} ({model.config.preset}); pass the tokenizer it "
                         "was trained on")
    return lm, model


def _labels(lm: TokenLM, config: SampleConfig) -> list[int | None]:
    if config.classes and not lm.config.num_classes:
        raise UsageError("this LM is unconditional; it takes no --class")
    bad = [c for c in config.classes if not 0 <= c < lm.config.num_classes]
    if bad:
        raise UsageError(f"class {bad[0]} is outside the LM's {lm.config.num_classes} classes")
    if config.guidance != 1.0 and not config.classes:
        raise UsageError("--guidance needs a class-conditional LM and --class")
    if not config.classes:
        return [None] * config.num
    return [config.classes[i % len(config.classes)] for i in range(config.num)]


def _shape(lm: TokenLM, model: VQTokenizer, config: SampleConfig
           ) -> tuple[tuple[int, ...], int, dict]:
    """(latent grid of a piece, pieces per file, media description for ``restore``)."""
    strides, layout = model.config.strides, lm.config.layout
    modality = lm.config.modality or model.config.modality
    if modality == "audio":
        if config.size:
            raise UsageError("--size is for images and video; audio takes --seconds")
        window = layout[0] * strides[0]
        rate = model.config.sample_rate
        length = round(config.seconds * rate) if config.seconds else window
        meta = {"model_length": length, "length": length, "sample_rate": rate,
                "model_sample_rate": rate, "channels": model.config.channels,
                "input_size": [window]}
        return layout, math.ceil(length / window), meta
    if config.seconds:
        raise UsageError(f"--seconds is for audio; {modality} takes --size HxW")
    grid = layout
    if config.size:
        grid = (*layout[:-2], *(math.ceil(n / s) for n, s in zip(config.size, strides[-2:],
                                                                  strict=True)))
    size = [g * s for g, s in zip(grid, strides, strict=True)]
    if config.size:
        size[-2:] = config.size
    if modality == "video":  # frames and size follow from the decoded clip (see _decode)
        return grid, 1, {"clip_starts": [0], "fps": model.config.fps,
                         **({"height": size[1], "width": size[2]} if config.size else {})}
    return grid, 1, {"input_size": size}


def _sample(lm: TokenLM, pieces: int, grid: tuple[int, ...], label: int | None,
            config: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    try:
        return sample(lm, pieces, grid, labels=None if label is None else [label] * pieces,
                      temperature=config.temperature, top_k=config.top_k,
                      guidance=config.guidance, generator=generator)
    except ValueError as error:
        raise UsageError(str(error)) from None


@torch.inference_mode()
def _decode(model: VQTokenizer, codes: torch.Tensor, meta: dict, modality: str
            ) -> tuple[str, bytes]:
    """Codes (pieces, [Q,] *grid) -> (extension, media bytes) through the tokenizer."""
    media = model.decode(codes, size=meta.get("input_size")).cpu()
    if modality == "video":  # a causal clip of t latent frames decodes to its own frame count
        meta = {"frames": media.shape[2], "height": media.shape[3], "width": media.shape[4],
                **meta}
    return restore(media, meta, modality)


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
