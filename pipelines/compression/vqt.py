"""Single-file compression: media file -> `.vqt` (codes, entropy-coded) -> media file.

`compress_bytes`/`decompress_bytes` work in memory; `compress_file`/`decompress_file` add
file IO and write outputs atomically (a temporary file renamed into place), so a failure
never leaves a partial output. Every failure the user can act on is a `UsageError`
(bad input, wrong model, unreadable .vqt) or `PipelineError`, never a traceback.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vqtok.checkpoint import CheckpointError
from vqtok.entropy import (
    CODERS,
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
from vqtok.entropy.lm_coder import LM_CODER, decode_lm, encode_tables, lm_tables, table_bits
from vqtok.lm import TokenLM, load_lm
from vqtok.models.memory import BudgetError
from vqtok.pipelines.config import (
    JobConfig,
    MediaOptions,
    RuntimeOptions,
    default_max_memory,
)
from vqtok.pipelines.data.media import (
    MediaConfig,
    MediaDecodeError,
    open_audio,
    open_video,
    read_pieces,
    restore,
    restore_stream,
)
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.jobs.decode import slab_limit
from vqtok.pipelines.jobs.encode import encode_audio, encode_pieces, encode_video, media_config
from vqtok.pipelines.jobs.preflight import check_output_file

# What restore() needs but the header does not store, because the model or the codes say it
# (see media_meta); video stores clip_stride instead of the list of clip starts.
DERIVED_MEDIA_KEYS = {
    "image": ("input_size",),
    "audio": ("input_size", "num_windows", "model_sample_rate"),
    "video": ("clip_frames", "clip_starts"),
}

AUTO_CODER = "auto"


@dataclass
class CompressConfig(JobConfig):
    """How media is cut into model inputs (as for `vqtok encode`) and where the model runs.

    `levels` keeps only the first residual-VQ levels (a lower rate); None keeps them all.
    `coder` is one of `vqtok.entropy.CODERS`, or "auto": code with each and keep the
    shortest payload (the file's header names the one used), since the adaptive model wins
    on images and can lose to the static prior on short, flat code streams such as speech.
    `coder = "lm"` codes with a token LM's next-code distributions
    (`vqtok.entropy.lm_coder`); it needs the LM and keeps every residual level. Given an
    LM, "auto" tries it too and keeps the shortest whole file: an LM trained on too little
    data can write more bits than the prior (BENCHMARKS.md, token LM), and then is not used.
    """

    media: MediaOptions = field(default_factory=MediaOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    levels: int | None = None
    coder: str = AUTO_CODER

    def problems(self) -> list[str]:
        found = (
            []
            if self.levels is None or self.levels >= 1
            else [f"levels must be at least 1, got {self.levels}"]
        )
        if self.coder not in (*CODERS, LM_CODER, AUTO_CODER):
            found.append(f"coder must be one of {', '.join(CODERS)}, {LM_CODER} or {AUTO_CODER}, "
                         f"got {self.coder!r}")
        return found


@dataclass
class Rates:
    """The three rates of one compressed file, over its `codes` codes (all levels).

    `uniform_bits` is log2 K per code (a fixed-width code), `entropy_bits` the empirical
    entropy of this file's codes per level, `prior_bits` the cross-entropy under the stored
    static prior, `coded_bits` that under the coder's model (what an ideal coder would
    write; equal to `prior_bits` for `ans-static`), `header_bytes` everything of the .vqt
    but the payload and `written_bytes` the whole .vqt file.
    """

    codes: int
    uniform_bits: float
    entropy_bits: float
    prior_bits: float
    coded_bits: float
    payload_bytes: int
    header_bytes: int
    written_bytes: int

    def to_dict(self) -> dict:
        per_code = {
            "uniform_bits_per_code": self.uniform_bits / max(self.codes, 1),
            "entropy_bits_per_code": self.entropy_bits / max(self.codes, 1),
            "prior_bits_per_code": self.prior_bits / max(self.codes, 1),
            "coded_bits_per_code": self.coded_bits / max(self.codes, 1),
            "written_bits_per_code": 8 * self.written_bytes / max(self.codes, 1),
        }
        return {**asdict(self), **{k: round(v, 4) for k, v in per_code.items()}}


@torch.inference_mode()
def encode_media(model, data: bytes, config: CompressConfig) -> tuple[np.ndarray, dict]:
    """Media bytes -> (codes int64 `(N, [Q,] *latent)`, media meta for `restore`).

    A whole video (no `clip_frames`) or audio signal (no `window_seconds`) is decoded as the
    encoder reads it, in time pieces (`media.open_video`, `media.open_audio`); audio windows
    and video clips are decoded one at a time (`media.read_pieces`) and encoded
    `batch_size` at a time; an image is decoded whole. Every model call stays within
    `--max-memory`.

    Raises:
        UsageError: The input is not media of the model's modality, cannot be decoded, or
            not even one piece of it fits the memory budget.
    """
    media, runtime = media_config(model, config.media), config.runtime
    try:
        if media.modality == "video" and media.clip_frames is None:
            return _encode_whole_video(model, data, media, runtime)
        if media.modality == "audio" and media.window_seconds is None:
            return _encode_whole_audio(model, data, media, runtime)
        reader = read_pieces(data, media)
        codes, shape = [], None
        for batch in _batches(_decoded(reader, model.config.modality), runtime.batch_size):
            shape = list(batch.shape[2:])
            codes += encode_pieces(model, batch, [batch.shape[0]], runtime)
    except BudgetError as error:
        raise UsageError(f"{error}; raise --max-memory") from None
    return np.concatenate(codes), {"input_size": shape, **reader.meta}


def _encode_whole_video(model, data: bytes, media: MediaConfig, runtime: RuntimeOptions
                        ) -> tuple[np.ndarray, dict]:
    """A whole video's codes, its frames decoded as the encoder reads them."""
    try:
        source, meta = open_video(data, media)
    except Exception as error:  # any decoder failure means the input is not usable media
        raise UsageError(f"cannot read the input as video: {error}") from None
    try:
        codes, source = encode_video(model, source, runtime.max_bytes(), runtime.device)
    except MediaDecodeError as error:  # partway: the frames are read as the model needs them
        raise UsageError(f"cannot read the input as video: {error}") from None
    meta.update(frames=source.frames, clip_frames=source.frames)
    return codes, {"input_size": list(source.shape[2:]), **meta}


def _encode_whole_audio(model, data: bytes, media: MediaConfig, runtime: RuntimeOptions
                        ) -> tuple[np.ndarray, dict]:
    """A whole audio signal's codes, its samples read as the encoder asks for them."""
    try:
        source, meta = open_audio(data, media)
    except Exception as error:  # any decoder failure means the input is not usable media
        raise UsageError(f"cannot read the input as audio: {error}") from None
    try:
        codes = encode_audio(model, source, runtime.max_bytes(), runtime.device)
    except MediaDecodeError as error:  # partway: the samples are read as the model needs them
        raise UsageError(f"cannot read the input as audio: {error}") from None
    return codes, {"input_size": list(source.shape[2:]), **meta}


def _decoded(pieces: Iterable[torch.Tensor], modality: str) -> Iterator[torch.Tensor]:
    """`pieces`, a decoder failure raised as a UsageError (the input is not usable media)."""
    try:
        yield from pieces
    except Exception as error:  # any decoder failure means the input is not usable media
        raise UsageError(f"cannot read the input as {modality}: {error}") from None


def _batches(pieces: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Pieces (C, *spatial) -> batches (<= size, C, *spatial), in order."""
    batch: list[torch.Tensor] = []
    for piece in pieces:
        batch.append(piece)
        if len(batch) == size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def compress_bytes(
    model, data: bytes, config: CompressConfig | None = None, checkpoint: str | None = None,
    lm: TokenLM | None = None, lm_checkpoint: str | None = None,
) -> tuple[bytes, Rates]:
    """Compress media bytes with `model`; returns (.vqt bytes, rates).

    `checkpoint` and `lm_checkpoint`, when given, are recorded as hints for decompressing
    without --checkpoint and --lm. `lm` is the token LM of `coder = "lm"`.
    """
    config = config or CompressConfig()
    config.check()  # before the model runs
    levels = _levels_kept(model, config.levels)
    _check_lm_use(model, config, lm, levels)
    codes, meta = encode_media(model, data, config)
    if model.num_levels > 1:
        codes = codes[:, :levels]
    prior = model_prior(model)
    header = {
        "model": model.model_id,
        "prior": prior_id(prior),
        "modality": model.config.modality,
        "levels": levels,
        "codes": list(codes.shape),
        "media": _stored_media(meta, model.config.modality),
        **({"checkpoint": checkpoint} if checkpoint else {}),
    }
    vqt, payload_bytes, coder, coded_bits = min(
        _candidates(codes, prior[:levels], config.coder, lm, lm_checkpoint, header,
                    config.runtime.batch_size),
        key=lambda candidate: len(candidate[0]))
    rates = Rates(
        codes=int(codes.size),
        uniform_bits=codes.size * math.log2(model.codebook_size),
        entropy_bits=empirical_entropy_bits(codes, levels),
        prior_bits=ideal_bits(codes, prior[:levels]),
        coded_bits=coded_bits,
        payload_bytes=payload_bytes,
        header_bytes=len(vqt) - payload_bytes,
        written_bytes=len(vqt),
    )
    return vqt, rates


def _candidates(codes: np.ndarray, prior, coder: str, lm: TokenLM | None,
                lm_checkpoint: str | None, header: dict, batch_size: int):
    """(.vqt bytes, payload bytes, coder, ideal bits) for each coder `coder` asks for:
    "auto" tries the static and adaptive coders, and the LM too when one is given."""
    if coder == LM_CODER or (coder == AUTO_CODER and lm is not None):
        symbols, tables = lm_tables(lm, codes, batch_size)
        payload = encode_tables(symbols, tables)
        yield (pack({**header, "coder": LM_CODER, **_lm_header(lm, codes, lm_checkpoint)},
                    payload), len(payload), LM_CODER, table_bits(symbols, tables))
    if coder != LM_CODER:
        for name in CODERS if coder == AUTO_CODER else (coder,):
            payload = encode_payload(codes, prior, name)
            yield (pack({**header, "coder": name}, payload), len(payload), name,
                   ideal_bits(codes, prior, name))


def _check_lm_use(model, config: CompressConfig, lm: TokenLM | None, levels: int) -> None:
    """UsageError unless an LM comes with `coder` "lm" (where it is needed) or "auto",
    fits `model`, and every residual level is kept."""
    if config.coder not in (LM_CODER, AUTO_CODER):
        if lm is not None:
            raise UsageError(f"--lm is used by --coder {LM_CODER} or {AUTO_CODER} only, "
                             f"not {config.coder}")
        return
    if lm is None:
        if config.coder == LM_CODER:
            raise UsageError(f"--coder {LM_CODER} needs --lm, a token LM trained on this "
                             "tokenizer's codes")
        return
    check_lm_fits(model, lm)
    if levels != model.num_levels:
        raise UsageError("an LM codes every residual level; drop --levels")


def check_lm_fits(model, lm: TokenLM) -> None:
    """UsageError unless `lm` was trained on the codes of the tokenizer `model`."""
    if lm.config.tokenizer_id != model.model_id:
        raise UsageError(
            f"the LM models the codes of tokenizer {lm.config.tokenizer_id or 'unknown'}, not "
            f"of this checkpoint ({model.model_id}); pass the LM trained on its tokens"
        )
    if (lm.config.codebook_size, lm.config.num_levels) != (model.codebook_size,
                                                           model.num_levels):
        raise UsageError("the LM's codebook or levels do not match the tokenizer's")


def codes_crc(codes: np.ndarray) -> int:
    """CRC32 of the codes as little-endian int64: catches an LM that decodes differently."""
    return zlib.crc32(np.ascontiguousarray(codes, dtype="<i8").tobytes())


def _lm_header(lm: TokenLM, codes: np.ndarray, lm_checkpoint: str | None) -> dict:
    return {"lm": lm.lm_id, "codes_crc": codes_crc(codes),
            **({"lm_checkpoint": lm_checkpoint} if lm_checkpoint else {})}


def load_lm_for_coding(path: str | Path, device: str = "cpu") -> TokenLM:
    """The LM checkpoint at `path`; UsageError when it is missing or corrupt.

    Args:
        path: The LM directory.
        device: Where it runs.

    Returns:
        The LM in eval mode.

    Raises:
        UsageError: The directory is not a readable LM checkpoint.
    """
    try:
        return load_lm(path, device)
    except CheckpointError as error:
        raise UsageError(f"cannot load the LM: {error}") from None


def _stored_media(meta: dict, modality: str) -> dict:
    """`prepare`'s media description less what `media_meta` derives again."""
    stored = {key: value for key, value in meta.items() if key not in DERIVED_MEDIA_KEYS[modality]}
    if modality == "video":  # clips start every `stride` frames (media.prepare)
        starts = meta["clip_starts"]
        stored["clip_stride"] = starts[1] - starts[0] if len(starts) > 1 else 1
    return stored


def _levels_kept(model, levels: int | None) -> int:
    if levels is None:
        return model.num_levels
    if not 1 <= levels <= model.num_levels:
        raise UsageError(
            f"--levels must lie in [1, {model.num_levels}] for this model, got {levels}"
        )
    return levels


def read_vqt(data: bytes) -> tuple[dict, bytes]:
    """Parse a .vqt file -> (header, payload); UsageError when it is unreadable or malformed."""
    try:
        container = unpack(data)
    except ContainerError as error:
        raise UsageError(f"cannot read .vqt: {error}") from None
    header = container.header
    _check_header_fields(header)
    return header, container.payload


def _check_header_fields(header: dict) -> None:
    expected = {
        "model": str,
        "prior": str,
        "modality": str,
        "coder": str,
        "levels": int,
        "codes": list,
        "media": dict,
    }
    for name, kind in expected.items():
        if not isinstance(header.get(name), kind):
            raise UsageError(
                f"cannot read .vqt: header field {name!r} is missing or not a {kind.__name__}"
            )
    shape = header["codes"]
    if not shape or not all(isinstance(n, int) and n > 0 for n in shape):
        raise UsageError(f"cannot read .vqt: bad codes shape {shape}")
    if header["coder"] not in (*CODERS, LM_CODER):
        raise UsageError(f"cannot read .vqt: coder {header['coder']!r} is not one of "
                         f"{', '.join(CODERS)}, {LM_CODER}")
    if header["coder"] == LM_CODER and not (isinstance(header.get("lm"), str)
                                            and isinstance(header.get("codes_crc"), int)):
        raise UsageError("cannot read .vqt: an LM-coded file lacks its 'lm' or 'codes_crc'")


def decode_codes(model, header: dict, payload: bytes, lm: TokenLM | None = None,
                 batch_size: int = 16) -> np.ndarray:
    """The codes int64 of shape `header["codes"]` of a parsed .vqt.

    Checks first that `model` made them (and for an LM-coded file, that `lm` is its LM).
    """
    if header["model"] != model.model_id:
        raise UsageError(
            f"the .vqt was made with model {header['model']}, not with this checkpoint "
            f"({model.model_id}, {model.config.preset}); pass the matching --checkpoint"
        )
    prior = model_prior(model)
    if header["prior"] != prior_id(prior):
        raise UsageError(
            f"the .vqt was coded with prior {header['prior']}, but this checkpoint "
            f"holds prior {prior_id(prior)}; use the checkpoint it was compressed with"
        )
    shape, levels = tuple(header["codes"]), header["levels"]
    multi = model.num_levels > 1
    if (
        len(shape) != 1 + multi + model.config.dims
        or not 1 <= levels <= model.num_levels
        or (multi and shape[1] != levels)
    ):
        raise UsageError(
            f"cannot read .vqt: codes shape {list(shape)} with {levels} level(s) "
            f"does not fit a {model.config.modality} model with {model.num_levels}"
        )
    if header["coder"] == LM_CODER:
        return _decode_with_lm(model, header, payload, lm, batch_size)
    try:
        return decode_payload(payload, prior[:levels], shape, header["coder"])
    except PayloadError as error:
        raise UsageError(f"cannot read .vqt: {error}") from None


def _decode_with_lm(model, header: dict, payload: bytes, lm: TokenLM | None,
                    batch_size: int) -> np.ndarray:
    if lm is None:
        raise UsageError(f"the .vqt was coded with token LM {header['lm']}; pass --lm with "
                         "that LM's directory")
    if lm.lm_id != header["lm"]:
        raise UsageError(f"the .vqt was coded with token LM {header['lm']}, not with this one "
                         f"({lm.lm_id}); pass the LM it was compressed with")
    check_lm_fits(model, lm)
    try:
        codes = decode_lm(lm, payload, tuple(header["codes"]), batch_size)
    except ValueError as error:
        raise UsageError(f"cannot read .vqt: {error}") from None
    if codes_crc(codes) != header["codes_crc"]:
        raise UsageError("cannot read .vqt: the LM-decoded codes fail their checksum (the file "
                         "is corrupt, or this machine computes the LM differently)")
    return codes


def media_meta(model, header: dict) -> dict:
    """The media description `media.restore` needs: the header's, plus what model and codes say.

    `input_size` is the spatial size of one model input; audio adds `model_sample_rate` and
    `num_windows`; video `clip_frames` and `clip_starts`. Values are checked by `restore`.
    """
    media, modality, pieces = dict(header["media"]), header["modality"], header["codes"][0]
    if modality == "image":
        return media | {"input_size": [media.get("height"), media.get("width")]}
    if modality == "audio":
        return media | {
            "input_size": [media.get("window")],
            "num_windows": pieces,
            "model_sample_rate": getattr(model.config, "sample_rate", None),
        }
    size, stride = media.get("input_size"), media.get("clip_stride")
    if (
        not isinstance(size, list)
        or not size
        or not isinstance(size[0], int)
        or not isinstance(stride, int)
        or not 1 <= stride <= size[0]
    ):
        raise ValueError(f"input_size {size} and clip_stride {stride} do not describe clips")
    return media | {"clip_frames": size[0], "clip_starts": [i * stride for i in range(pieces)]}


@torch.inference_mode()
def decompress_bytes(
    model, data: bytes, audio_format: str = "wav", device: str = "cpu", batch_size: int = 16,
    lm: TokenLM | None = None, max_bytes: int | None = None,
) -> tuple[str, bytes]:
    """Inverse of `compress_bytes`: .vqt bytes -> (extension, media bytes).

    `max_bytes` bounds the decoder's activations per call (None: `default_max_memory()`);
    pieces too large for it are decoded in tiles that give the same media. A whole audio
    signal or video is decoded in time slabs that are written as they come
    (`media.restore_stream`): only the encoded output grows, never the decoded signal.
    """
    budget = default_max_memory() if max_bytes is None else max_bytes
    header, payload = read_vqt(data)
    codes = torch.from_numpy(decode_codes(model, header, payload, lm, batch_size))
    modality = header["modality"]
    try:
        media = media_meta(model, header)
        size = tuple(media["input_size"])
        if streams(modality, media, codes.shape[0]):
            slabs = model.decode_slabs_within(codes.to(device), budget, size,
                                              slab_limit(model, size, budget // 4))
            return restore_stream((slab.cpu() for slab in slabs), media, modality, audio_format)
        decoded = [
            model.decode_within(chunk.to(device), budget, size).cpu()
            for chunk in codes.split(batch_size)
        ]
        return restore(torch.cat(decoded), media, modality, audio_format)
    except BudgetError as error:  # before ValueError, which it is: the file is fine
        raise UsageError(f"{error}; raise --max-memory") from None
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise UsageError(
            f"cannot read .vqt: its media description does not fit its codes ({error})"
        ) from None


def streams(modality: str, media: dict, pieces: int) -> bool:
    """Whether decoded media is one whole signal that `restore_stream` writes slab by slab
    (not an image, nor windows or clips cut from the signal).

    Args:
        modality: "image", "audio" or "video".
        media: The media description (`media_meta`).
        pieces: The pieces the codes hold.

    Returns:
        True for one audio piece or one video clip from frame 0.
    """
    if modality not in ("audio", "video") or pieces != 1:
        return False
    return modality == "audio" or media.get("clip_starts") == [0]


def compress_file(
    checkpoint: str | Path,
    source: str | Path,
    target: str | Path,
    config: CompressConfig | None = None,
    lm: str | Path | None = None,
) -> Rates:
    """Compress the media file `source` into the .vqt file `target` with the checkpoint's model
    (and, for `coder = "lm"`, the token LM at `lm`)."""
    config = config or CompressConfig()
    config.check()
    target = Path(target)
    if target.suffix.lower() != ".vqt":
        raise UsageError(f"{target}: compressed files are named .vqt (e.g. "
                         f"{target.with_suffix('.vqt').name}); the name says what the bytes are")
    check_output_file(target, "the .vqt file")
    model = load_model(checkpoint, config.runtime.device)
    language_model = None if lm is None else load_lm_for_coding(lm, config.runtime.device)
    data = _read(Path(source))
    vqt, rates = compress_bytes(
        model, data, config, checkpoint=str(Path(checkpoint).resolve()), lm=language_model,
        lm_checkpoint=None if lm is None else str(Path(lm).resolve()),
    )
    _write_atomic(Path(target), vqt)
    return rates


def decompress_file(
    source: str | Path,
    target: str | Path,
    checkpoint: str | Path | None = None,
    runtime: RuntimeOptions | None = None,
    lm: str | Path | None = None,
) -> Path:
    """Decompress the .vqt `source` to `target`; without `checkpoint`, use the one it records.

    An LM-coded file needs its token LM: `lm`, or the one it records when that exists here.

    The media format follows the model's modality (PNG, MP4, or WAV/FLAC by `target`'s
    suffix). Returns `target`.
    """
    runtime = runtime or RuntimeOptions()
    runtime.check()
    data = _read(Path(source))
    header, _ = read_vqt(data)
    _check_media_target(Path(target), header.get("modality"))
    if checkpoint is None:
        checkpoint = header.get("checkpoint")
        if not isinstance(checkpoint, str) or not Path(checkpoint).is_dir():
            raise UsageError(
                "the .vqt does not name a checkpoint that exists here; pass --checkpoint"
            )
    model = load_model(checkpoint, runtime.device)
    language_model = _lm_for(header, lm, runtime.device)
    audio_format = "flac" if Path(target).suffix.lower() == ".flac" else "wav"
    _, media = decompress_bytes(
        model, data, audio_format=audio_format, device=runtime.device,
        batch_size=runtime.batch_size, lm=language_model, max_bytes=runtime.max_bytes(),
    )
    _write_atomic(Path(target), media)
    return Path(target)


# The media files a .vqt decodes to, by modality: the suffix of TARGET chooses among them.
MEDIA_SUFFIXES = {"image": (".png",), "audio": (".wav", ".flac"), "video": (".mp4",)}


def _check_media_target(target: Path, modality: object) -> None:
    """TARGET's suffix names a format this modality is written in, and it can be written.

    Raises:
        UsageError: The suffix is missing or names another format (the bytes would not be
            what the name says), or the path cannot be written.
    """
    suffixes = MEDIA_SUFFIXES.get(str(modality))
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise UsageError(
            f"{target}: a .vqt of {modality} decodes to {' or '.join(suffixes)}; name the "
            f"output so (e.g. {target.with_suffix(suffixes[0]).name})"
        )
    check_output_file(target, "the output file")


def _lm_for(header: dict, lm: str | Path | None, device: str) -> TokenLM | None:
    """The LM given, else the one an LM-coded header records if it exists here."""
    if lm is None and header.get("coder") == LM_CODER:
        hint = header.get("lm_checkpoint")
        if not isinstance(hint, str) or not Path(hint).is_dir():
            raise UsageError(f"the .vqt was coded with token LM {header.get('lm')}, and the "
                             "LM it records is not here; pass --lm")
        lm = hint
    return None if lm is None else load_lm_for_coding(lm, device)


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
