"""Single-file compression: media file -> `.vqt` (codes, entropy-coded) -> media file.

`compress_bytes`/`decompress_bytes` work in memory; `compress_file`/`decompress_file` add
file IO and write outputs atomically (a temporary file renamed into place), so a failure
never leaves a partial output. Every failure the user can act on is a `UsageError`
(bad input, wrong model, unreadable .vqt) or `PipelineError`, never a traceback.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vqtok.compress import (
    CODER,
    PRIOR_TOTAL,
    ContainerError,
    PayloadError,
    decode_payload,
    empirical_entropy_bits,
    encode_payload,
    ideal_bits,
    model_prior,
    pack,
    prior_id,
    unpack,
)
from vqtok.pipelines.encode import EncodeConfig, media_config
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs import load_model
from vqtok.pipelines.media import prepare, restore

FORMAT = "vqt"


@dataclass
class CompressConfig:
    """How media is cut into model inputs (as for `vqtok encode`) and where the model runs.

    `levels` keeps only the first residual-VQ levels (a lower rate); None keeps them all.
    """

    device: str = "cpu"
    batch_size: int = 16
    window_seconds: float = 2.0
    clip_stride: int | None = None
    frame_size: tuple[int, int] | None = None
    levels: int | None = None


@dataclass
class Rates:
    """The three rates of one compressed file, over its `codes` codes (all levels).

    `uniform_bits` is log2 K per code (a fixed-width code), `entropy_bits` the empirical
    entropy of this file's codes per level, `prior_bits` the cross-entropy under the stored
    prior (what an ideal coder would write) and `written_bytes` the whole .vqt file.
    """

    codes: int
    uniform_bits: float
    entropy_bits: float
    prior_bits: float
    payload_bytes: int
    written_bytes: int

    def to_dict(self) -> dict:
        per_code = {
            "uniform_bits_per_code": self.uniform_bits / max(self.codes, 1),
            "entropy_bits_per_code": self.entropy_bits / max(self.codes, 1),
            "prior_bits_per_code": self.prior_bits / max(self.codes, 1),
            "written_bits_per_code": 8 * self.written_bytes / max(self.codes, 1),
        }
        return {**asdict(self), **{k: round(v, 4) for k, v in per_code.items()}}


@torch.inference_mode()
def encode_media(model, data: bytes, config: CompressConfig) -> tuple[np.ndarray, dict]:
    """Media bytes -> (codes int64 `(N, [Q,] *latent)`, media meta for `restore`)."""
    options = EncodeConfig(window_seconds=config.window_seconds, clip_stride=config.clip_stride,
                           frame_size=config.frame_size)
    try:
        pieces, meta = prepare(data, media_config(model, options))
    except Exception as error:  # any decoder failure means the input is not usable media
        raise UsageError(f"cannot read the input as {model.config.modality}: {error}") from None
    chunks = [model.encode(chunk.to(config.device)).cpu() for chunk in pieces.split(config.batch_size)]
    return torch.cat(chunks).numpy(), {"input_size": list(pieces.shape[2:]), **meta}


def compress_bytes(model, data: bytes, config: CompressConfig | None = None,
                   checkpoint: str | None = None) -> tuple[bytes, Rates]:
    """Compress media bytes with `model`; returns (.vqt bytes, rates).

    `checkpoint`, when given, is recorded as a hint for decompressing without --checkpoint.
    """
    config = config or CompressConfig()
    levels = _levels_kept(model, config.levels)
    codes, meta = encode_media(model, data, config)
    if model.num_levels > 1:
        codes = codes[:, :levels]
    prior = model_prior(model)
    payload = encode_payload(codes, prior[:levels])
    header = {
        "format": FORMAT,
        "model_id": model.model_id,
        "prior_id": prior_id(prior),
        "preset": model.config.preset,
        "modality": model.config.modality,
        "codebook_size": model.codebook_size,
        "levels": levels,
        "codes_shape": list(codes.shape),
        "coder": {"name": CODER, "prior_total": PRIOR_TOTAL},
        "source_bytes": len(data),
        "media": meta,
        **({"checkpoint": checkpoint} if checkpoint else {}),
    }
    vqt = pack(header, payload)
    rates = Rates(
        codes=int(codes.size),
        uniform_bits=codes.size * math.log2(model.codebook_size),
        entropy_bits=empirical_entropy_bits(codes, levels),
        prior_bits=ideal_bits(codes, prior[:levels]),
        payload_bytes=len(payload),
        written_bytes=len(vqt),
    )
    return vqt, rates


def _levels_kept(model, levels: int | None) -> int:
    if levels is None:
        return model.num_levels
    if not 1 <= levels <= model.num_levels:
        raise UsageError(f"--levels must lie in [1, {model.num_levels}] for this model, got {levels}")
    return levels


def read_vqt(data: bytes) -> tuple[dict, bytes]:
    """Parse a .vqt file -> (header, payload); UsageError when it is unreadable or malformed."""
    try:
        container = unpack(data)
    except ContainerError as error:
        raise UsageError(f"cannot read .vqt: {error}") from None
    header = container.header
    if header.get("format") != FORMAT:
        raise UsageError("cannot read .vqt: the header does not describe vqtok codes")
    _check_header_fields(header)
    return header, container.payload


def _check_header_fields(header: dict) -> None:
    expected = {"model_id": str, "prior_id": str, "modality": str, "levels": int,
                "codes_shape": list, "media": dict}
    for name, kind in expected.items():
        if not isinstance(header.get(name), kind):
            raise UsageError(f"cannot read .vqt: header field {name!r} is missing or not a {kind.__name__}")
    shape = header["codes_shape"]
    if not shape or not all(isinstance(n, int) and n > 0 for n in shape):
        raise UsageError(f"cannot read .vqt: bad codes_shape {shape}")


def decode_codes(model, header: dict, payload: bytes) -> np.ndarray:
    """The codes int64 `codes_shape` of a parsed .vqt, after checking that `model` made them."""
    if header["model_id"] != model.model_id:
        raise UsageError(f"the .vqt was made with model {header['model_id']} "
                         f"({header.get('preset', 'unknown preset')}), not with this checkpoint "
                         f"({model.model_id}, {model.config.preset}); pass the matching --checkpoint")
    prior = model_prior(model)
    if header["prior_id"] != prior_id(prior):
        raise UsageError(f"the .vqt was coded with prior {header['prior_id']}, but this checkpoint "
                         f"holds prior {prior_id(prior)}; use the checkpoint it was compressed with")
    shape, levels = tuple(header["codes_shape"]), header["levels"]
    multi = model.num_levels > 1
    if len(shape) != 1 + multi + model.config.dims or not 1 <= levels <= model.num_levels \
            or (multi and shape[1] != levels):
        raise UsageError(f"cannot read .vqt: codes_shape {list(shape)} with {levels} level(s) "
                         f"does not fit a {model.config.modality} model with {model.num_levels}")
    try:
        return decode_payload(payload, prior[:levels], shape)
    except PayloadError as error:
        raise UsageError(f"cannot read .vqt: {error}") from None


@torch.inference_mode()
def decompress_bytes(model, data: bytes, audio_format: str = "wav",
                     device: str = "cpu", batch_size: int = 16) -> tuple[str, bytes]:
    """Inverse of `compress_bytes`: .vqt bytes -> (extension, media bytes)."""
    header, payload = read_vqt(data)
    codes = torch.from_numpy(decode_codes(model, header, payload))
    media = header["media"]
    try:
        size = tuple(media["input_size"])
        decoded = [model.decode(chunk.to(device), size=size).cpu() for chunk in codes.split(batch_size)]
        return restore(torch.cat(decoded), media, header["modality"], audio_format)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise UsageError(f"cannot read .vqt: its media description does not fit its codes ({error})") from None


def compress_file(checkpoint: str | Path, source: str | Path, target: str | Path,
                  config: CompressConfig | None = None) -> Rates:
    """Compress the media file `source` into the .vqt file `target` with the checkpoint's model."""
    config = config or CompressConfig()
    model = load_model(checkpoint, config.device)
    data = _read(Path(source))
    vqt, rates = compress_bytes(model, data, config, checkpoint=str(Path(checkpoint).resolve()))
    _write_atomic(Path(target), vqt)
    return rates


def decompress_file(source: str | Path, target: str | Path, checkpoint: str | Path | None = None,
                    device: str = "cpu") -> Path:
    """Decompress the .vqt `source` to `target`; without `checkpoint`, use the one it records.

    The media format follows the model's modality (PNG, MP4, or WAV/FLAC by `target`'s
    suffix). Returns `target`.
    """
    data = _read(Path(source))
    header, _ = read_vqt(data)
    if checkpoint is None:
        checkpoint = header.get("checkpoint")
        if not isinstance(checkpoint, str) or not Path(checkpoint).is_dir():
            raise UsageError("the .vqt does not name a checkpoint that exists here; pass --checkpoint")
    model = load_model(checkpoint, device)
    audio_format = "flac" if Path(target).suffix.lower() == ".flac" else "wav"
    _, media = decompress_bytes(model, data, audio_format=audio_format, device=device)
    _write_atomic(Path(target), media)
    return Path(target)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
