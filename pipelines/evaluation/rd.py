"""Rate-distortion evaluation: vqtok checkpoints against classical codecs on the same inputs.

For every input file and every method setting (a checkpoint, each residual-VQ level count,
each quality of a baseline codec) the rate comes from the bytes actually written (the whole
.vqt file, or the codec's file) and the distortion from what a user gets back: 8-bit RGB
for images and video, mono audio at the original rate. Points are averaged over inputs per
setting, as CompressAI does, and written as one CompressAI-style JSON per method
(`name`, `description`, `results`), a CSV of every measurement and PNG plots.

A token LM given with a checkpoint adds one point to that checkpoint: every residual level
coded by the LM (`--coder lm`), decoded back through the LM, so that its rate is the whole
file a user would keep and its quality what the user gets back.

Memory. The models encode and decode within `--max-memory` as `vqtok compress` and
`decompress` do (a whole video decoded as the encoder reads it, and decoded back in time
slabs that are compared with the input as they come). The metrics compare whole signals, so
each input's decoded reference is held with one decoded version and the metrics' workspace:
an input that would need more than `--max-memory` for that (`HELD_BYTES_PER_VALUE` bytes
per decoded value; e.g. with 2 GiB, about 5 seconds of 1080p video at 30 fps, or 10 minutes of
44.1 kHz audio) is refused before it is decoded, with a message naming the size.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image

from vqtok.entropy.lm_coder import LM_CODER
from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    check_lm_fits,
    compress_bytes,
    decode_codes,
    decompress_bytes,
    load_lm_for_coding,
    media_meta,
    read_vqt,
    streams,
)
from vqtok.pipelines.config import JobConfig, MediaOptions, RuntimeOptions, format_size
from vqtok.pipelines.data.media import (
    EXTENSIONS,
    MediaConfig,
    assemble_clips,
    open_video,
    to_uint8,
)
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.evaluation import codecs as baselines
from vqtok.pipelines.evaluation.quality import (
    SquaredError,
    log_mel_distance,
    ms_ssim,
    psnr,
    si_snr,
)
from vqtok.pipelines.evaluation.rdplot import plot_curves
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.jobs.decode import slab_limit

RATE_KEY = {"image": "bpp", "audio": "kbps", "video": "bpp"}
QUALITY_KEYS = {
    "image": ("psnr-rgb", "ms-ssim-rgb"),
    "audio": ("si-snr", "mel-distance"),
    "video": ("psnr-rgb",),
}
# What rd holds per value of an input's reference (uint8 pixels, or float32 samples of mono
# audio) while it measures it (`check_held`): images, the reference and decoded pixels and
# MS-SSIM's float64 planes and blurs; audio, the reference, the decoded file (16-bit, up to
# two channels, read back as float32) and both log-mel spectrograms with their STFTs (n_fft
# 1024 at hop 256); video, the reference and a codec's decoded frames (the model's frames
# come in slabs within the budget, compared as they come).
HELD_BYTES_PER_VALUE = {"image": 100, "audio": 80, "video": 2}


@dataclass
class RDConfig(JobConfig):
    """Options of an RD evaluation.

    `sweeps` overrides a codec's default settings. `lms` are token LM directories; each is
    paired with the checkpoint whose codes it models and adds an LM-coded point to it.
    """

    baselines: list[str] = field(default_factory=list)
    sweeps: dict[str, list[int]] = field(default_factory=dict)
    lms: list[str] = field(default_factory=list)
    media: MediaOptions = field(default_factory=MediaOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def problems(self) -> list[str]:
        """Every swept codec is a baseline, and every sweep lists a setting.

        Returns:
            One message per broken rule.
        """
        unused = sorted(set(self.sweeps) - set(self.baselines))
        found = (
            [
                f"sweeps (--sweep) name {', '.join(unused)}, "
                "which baselines (--baselines) does not include"
            ]
            if unused
            else []
        )
        found += [
            f"sweeps.{codec} must list at least one setting"
            for codec, values in self.sweeps.items()
            if not values
        ]
        return found


@dataclass
class Reference:
    """An input as the user has it: `data` (file bytes) and its decoded content.

    image: pixels (H, W, 3) uint8; audio: samples (T,) float32 mono at `rate`; video:
    frames (T, H, W, 3) uint8 at `rate` fps.
    """

    name: str
    data: bytes
    content: np.ndarray
    rate: float = 0.0

    def rate_of(self, size: int, modality: str) -> float:
        """bpp (images, video) or kbps (audio) of `size` bytes for this input.

        Args:
            size: Compressed size in bytes.
            modality: "image", "audio" or "video".

        Returns:
            Bits per pixel over all frames, or kilobits per second of audio.
        """
        if modality == "audio":
            return 8 * size / (self.content.size / self.rate) / 1000
        return 8 * size / math.prod(self.content.shape[:-1])  # pixels, over all frames


@dataclass
class Measurement:
    """One method setting on one input."""

    method: str
    setting: str
    input: str
    values: dict[str, float]


Codec = Callable[[Reference], tuple[bytes, Callable[[], np.ndarray]]]


def evaluate_rd(
    checkpoints: Sequence[str | Path],
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: RDConfig | None = None,
) -> list[dict]:
    """Measure every checkpoint and baseline on `inputs`.

    JSON, CSV, PNG and the resolved config (rd_config.json) are written to `out_dir`.

    Args:
        checkpoints: Tokenizer checkpoint directories.
        inputs: Media files, all of the checkpoints' and baselines' one modality.
        out_dir: Folder for the curves, the per-input measurements, the plot and config.
        config: Baselines, their sweeps, media cutting, batch size and device.

    Returns:
        The curves (CompressAI schema), one per method.

    Raises:
        UsageError: For bad options, an unloadable checkpoint, mixed modalities, unknown
            or unavailable baselines, no inputs and unreadable inputs.
    """
    config = config or RDConfig()
    config.check()
    models = [load_model(path, config.runtime.device) for path in checkpoints]
    modality = _modality(models, config.baselines)
    budget = config.runtime.max_bytes()
    references = [_reference(Path(path), modality, budget) for path in inputs]
    if not references:
        raise UsageError("no inputs to evaluate")
    lms = _pair_lms(models, config)
    measurements: list[Measurement] = []
    for model in models:
        measurements += _measure_model(model, references, config)
        for lm in lms.get(id(model), []):
            measurements += _measure_lm(model, lm, references, config)
    for codec in config.baselines:
        measurements += _measure_codec(codec, modality, references, config.sweeps.get(codec))
    curves = [_curve(method, group, modality) for method, group in _by_method(measurements).items()]
    _write_outputs(Path(out_dir), curves, measurements, modality)
    config.save(Path(out_dir) / "rd_config.json")
    return curves


def split_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """Checkpoint directories (holding config.json) apart from media files.

    Args:
        paths: Checkpoint directories, media files and folders of media, mixed.

    Returns:
        (checkpoints, media files); folders other than checkpoints are expanded to their
        media files, sorted.

    Raises:
        UsageError: For a path that does not exist.
    """
    paths = [Path(p) for p in paths]
    checkpoints = [path for path in paths if (path / "config.json").is_file()]
    media_ext = {f".{ext}" for exts in EXTENSIONS.values() for ext in exts}
    inputs = []
    for path in paths:
        if path in checkpoints:
            continue
        if path.is_dir():
            inputs += sorted(p for p in path.rglob("*") if p.suffix.lower() in media_ext)
        elif path.is_file():
            inputs.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return checkpoints, inputs


def _pair_lms(models: list, config: RDConfig) -> dict[int, list]:
    """The LMs of `config.lms`, keyed by id() of the model whose codes each one models.

    Raises:
        UsageError: For an unreadable LM, or one that models none of the `models`' codes.
    """
    paired: dict[int, list] = {}
    for path in config.lms:
        lm = load_lm_for_coding(path, config.runtime.device)
        fitting = [model for model in models if model.model_id == lm.config.tokenizer_id]
        if not fitting:
            named = ", ".join(f"{m.config.preset} {m.model_id[:8]}" for m in models) or "none"
            raise UsageError(f"the LM {path} models the codes of tokenizer "
                             f"{(lm.config.tokenizer_id or 'unknown')[:8]}, which is not among "
                             f"the checkpoints given ({named})")
        check_lm_fits(fitting[0], lm)
        paired.setdefault(id(fitting[0]), []).append(lm)
    return paired


def _modality(models: list, codecs: Sequence[str]) -> str:
    modalities = {model.config.modality for model in models}
    try:
        modalities |= {baselines.modality_of(codec) for codec in codecs}
    except ValueError as error:
        raise UsageError(str(error)) from None
    if len(modalities) != 1:
        raise UsageError(
            f"checkpoints and baselines must share one modality, got {sorted(modalities) or 'none'}"
        )
    modality = modalities.pop()
    for codec in codecs:
        reason = baselines.unavailable(codec)
        if reason:
            raise UsageError(f"baseline {codec}: {reason}")
    return modality


def _reference(path: Path, modality: str, budget: int) -> Reference:
    """The input at `path`, decoded once its size is known to fit what rd may hold.

    Raises:
        UsageError: The file is unreadable, or too large (`check_held`).
    """
    try:
        data = path.read_bytes()
        values = content_values(data, modality)
    except Exception as error:  # any decoder failure means the input is unusable
        raise UsageError(
            f"cannot read {path} as {modality} ({'/'.join(EXTENSIONS[modality])}): {error}"
        ) from None
    check_held(path.name, modality, values, budget)
    try:
        if modality == "image":
            return Reference(path.name, data, baselines.decode_image(data))
        if modality == "audio":
            samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
            return Reference(path.name, data, samples.mean(axis=1), rate)
        frames, fps = baselines.decode_video(data)
        return Reference(path.name, data, frames, fps)
    except Exception as error:  # any decoder failure means the input is unusable
        raise UsageError(
            f"cannot read {path} as {modality} ({'/'.join(EXTENSIONS[modality])}): {error}"
        ) from None


def content_values(data: bytes, modality: str) -> int:
    """The values an input decodes to, read from its header, before it is decoded.

    Pixels x 3 of an image, samples of the mono reference of audio, frames x pixels x 3 of
    a video (its container's frame count, as ``media.open_video`` reads it; only its first
    frame is decoded).

    Args:
        data: The file's bytes.
        modality: "image", "audio" or "video".

    Returns:
        The count.

    Raises:
        ValueError: The header cannot be read (and other decoder errors).
    """
    if modality == "image":
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height * 3
    if modality == "audio":
        return soundfile.info(io.BytesIO(data)).frames
    _, meta = open_video(data, MediaConfig("video", max_image_pixels=None))
    return meta["frames"] * meta["height"] * meta["width"] * 3


def check_held(name: str, modality: str, values: int, budget: int) -> None:
    """Refuse an input whose comparison would hold more than ``budget`` bytes.

    The metrics compare whole signals, so rd holds each input's reference and one decoded
    version at once, with the workspace of the metrics that need all of it: about
    ``HELD_BYTES_PER_VALUE`` bytes per value of the reference (the model's own passes stay
    within the same budget, apart from this).

    Args:
        name: The input's name, for the message.
        modality: "image", "audio" or "video".
        values: What ``content_values`` counts.
        budget: The most bytes (``--max-memory``).

    Raises:
        UsageError: The input would need more.
    """
    held = values * HELD_BYTES_PER_VALUE[modality]
    if held > budget:
        raise UsageError(
            f"{name}: eval rd compares whole signals and would hold about {format_size(held)} "
            f"for this {modality} ({values} values x {HELD_BYTES_PER_VALUE[modality]} bytes), "
            f"more than --max-memory {format_size(budget)}; evaluate a shorter or smaller "
            "excerpt, or raise --max-memory"
        )


def _measure_model(model, references: list[Reference], config: RDConfig) -> list[Measurement]:
    name = f"vqtok-{model.config.preset}-{model.model_id[:8]}"
    results = []
    for levels in range(1, model.num_levels + 1):
        options = CompressConfig(media=config.media, runtime=config.runtime, levels=levels)

        def codec(reference: Reference, options=options):
            vqt, _ = compress_bytes(model, reference.data, options)
            return vqt, lambda: _model_decode(model, vqt, config.runtime)

        setting = f"{levels} level{'s' * (levels > 1)}"
        results += [_measure(name, setting, codec, r, model.config.modality) for r in references]
    return results


def _measure_lm(model, lm, references: list[Reference], config: RDConfig) -> list[Measurement]:
    """One point: every level, coded and decoded with the token LM `lm`."""
    name = f"vqtok-{model.config.preset}-{model.model_id[:8]}+lm-{lm.lm_id[:8]}"
    options = CompressConfig(media=config.media, runtime=config.runtime, coder=LM_CODER)

    def codec(reference: Reference):
        vqt, _ = compress_bytes(model, reference.data, options, lm=lm)
        return vqt, lambda: _model_decode(model, vqt, config.runtime, lm)

    setting = f"{model.num_levels} level{'s' * (model.num_levels > 1)}, LM coder"
    return [_measure(name, setting, codec, r, model.config.modality) for r in references]


def _model_decode(model, vqt: bytes, runtime: RuntimeOptions, lm=None
                  ) -> np.ndarray | Iterator[np.ndarray]:
    """What decompressing `vqt` (through `lm` if LM-coded) gives, as a `Reference` holds it.

    Decoded within the runtime's memory budget; a video as blocks of frames (t, H, W, 3)
    uint8, before MP4 coding, so that only a slab of it is held.
    """
    header, _ = read_vqt(vqt)
    if header["modality"] == "video":
        return _video_frames(model, vqt, runtime, lm)
    _, data = decompress_bytes(model, vqt, device=runtime.device, batch_size=runtime.batch_size,
                               lm=lm, max_bytes=runtime.max_bytes())
    if header["modality"] == "image":
        return baselines.decode_image(data)
    return soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)[0].mean(axis=1)


@torch.inference_mode()
def _video_frames(model, vqt: bytes, runtime: RuntimeOptions, lm=None) -> Iterator[np.ndarray]:
    """The decoded frames of a video .vqt in time slabs (one whole clip), or whole (clips)."""
    header, payload = read_vqt(vqt)
    codes = torch.from_numpy(decode_codes(model, header, payload, lm, runtime.batch_size))
    media, budget = media_meta(model, header), runtime.max_bytes()
    size = tuple(media["input_size"])
    if not streams("video", media, codes.shape[0]):
        decoded = torch.cat([model.decode_within(chunk.to(runtime.device), budget, size).cpu()
                             for chunk in codes.split(runtime.batch_size)])
        video = assemble_clips(decoded, media["clip_starts"], media["frames"])
        yield to_uint8(video).permute(1, 2, 3, 0).numpy()
        return
    left = media["frames"]
    for slab in model.decode_slabs_within(codes.to(runtime.device), budget, size,
                                          slab_limit(model, size, budget // 4)):
        video = slab[0, :, :left].cpu()
        left -= video.shape[1]
        if video.shape[1]:
            yield to_uint8(video).permute(1, 2, 3, 0).numpy()


def _measure_codec(codec: str, modality: str, references: list[Reference],
                   sweep: Sequence[int] | None) -> list[Measurement]:
    results = []
    for setting in sweep or baselines.SWEEPS[codec]:
        def run(reference: Reference, setting=setting):
            data = _codec_encode(codec, modality, reference, setting)
            return data, lambda: _codec_decode(modality, data, reference)

        results += [_measure(codec, str(setting), run, r, modality) for r in references]
    return results


def _codec_encode(codec: str, modality: str, reference: Reference, setting: int) -> bytes:
    if modality == "image":
        return baselines.encode_image(reference.content, codec, setting)
    if modality == "audio":
        return baselines.encode_audio(reference.content, int(reference.rate), codec, setting)
    return baselines.encode_video(reference.content, reference.rate, codec, setting)


def _codec_decode(modality: str, data: bytes, reference: Reference) -> np.ndarray:
    if modality == "image":
        return baselines.decode_image(data)
    if modality == "audio":
        return baselines.decode_audio(data, int(reference.rate), reference.content.size)
    return baselines.decode_video(data)[0]


def _measure(
    method: str, setting: str, codec: Codec, reference: Reference, modality: str
) -> Measurement:
    start = time.perf_counter()
    data, decode = codec(reference)
    encoded = time.perf_counter()
    decoded = decode()
    decoding = time.perf_counter() - encoded
    if not isinstance(decoded, np.ndarray):  # blocks decoded as the metric takes them
        decoded = _Timed(decoded)
    quality = _quality(modality, reference, decoded)
    if isinstance(decoded, _Timed):
        decoding += decoded.seconds
    values = {RATE_KEY[modality]: reference.rate_of(len(data), modality), "bytes": len(data),
              **quality, "encoding_time": encoded - start, "decoding_time": decoding}
    return Measurement(method, setting, reference.name, values)


class _Timed:
    """An iterator of decoded blocks that counts the seconds spent making them.

    Args:
        blocks: The blocks, made as they are taken.
    """

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self.blocks, self.seconds = blocks, 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            start = time.perf_counter()
            block = next(self.blocks, None)
            self.seconds += time.perf_counter() - start
            if block is None:
                return
            yield block


def _video_psnr(reference: Reference, blocks: Iterable[np.ndarray]) -> float:
    """PSNR of frame blocks (t, H, W, 3) uint8 against the reference frames, in order.

    Raises:
        UsageError: The blocks are not the reference's frames in number or size.
    """
    error, frames = SquaredError(), reference.content
    done = 0
    for block in blocks:
        if done + len(block) > len(frames) or block.shape[1:] != frames.shape[1:]:
            raise UsageError(f"{reference.name}: decoded frames {block.shape[1:]} from frame "
                             f"{done} do not fit the input's {frames.shape}")
        error.add(frames[done : done + len(block)], block)
        done += len(block)
    if done != len(frames):
        raise UsageError(f"{reference.name}: decoded {done} frames, the input has {len(frames)}")
    return error.psnr()


def _quality(modality: str, reference: Reference, decoded: np.ndarray | Iterable[np.ndarray]
             ) -> dict[str, float]:
    if modality == "video":
        blocks = [decoded] if isinstance(decoded, np.ndarray) else decoded
        return {"psnr-rgb": _video_psnr(reference, blocks)}
    if decoded.shape != reference.content.shape:
        raise UsageError(
            f"{reference.name}: decoded shape {decoded.shape} differs from the input's "
            f"{reference.content.shape}"
        )
    if modality == "image":
        return {
            "psnr-rgb": psnr(reference.content, decoded),
            "ms-ssim-rgb": ms_ssim(reference.content, decoded),
        }
    return {"si-snr": si_snr(reference.content, decoded),
            "mel-distance": log_mel_distance(reference.content, decoded, int(reference.rate))}


def _by_method(measurements: list[Measurement]) -> dict[str, list[Measurement]]:
    groups: dict[str, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.method, []).append(m)
    return groups


def _curve(method: str, measurements: list[Measurement], modality: str) -> dict:
    """CompressAI's schema: one point per setting, each the mean over inputs, sorted by rate."""
    settings: dict[str, list[Measurement]] = {}
    for m in measurements:
        settings.setdefault(m.setting, []).append(m)
    keys = [RATE_KEY[modality], *QUALITY_KEYS[modality], "encoding_time", "decoding_time"]
    points = [
        {key: float(np.mean([m.values[key] for m in group])) for key in keys}
        for group in settings.values()
    ]
    order = np.argsort([p[RATE_KEY[modality]] for p in points], kind="stable")
    inputs = len({m.input for m in measurements})
    return {
        "name": method,
        "description": f"{method} on {inputs} {modality} input(s); settings {', '.join(settings)}; "
                       f"rate from the bytes written (headers included)",
        "results": {key: [_finite(points[i][key]) for i in order] for key in keys},
        "settings": [list(settings)[i] for i in order],
    }


def _finite(value: float) -> float | None:
    """JSON has no infinity: a lossless point (infinite PSNR) is written as null."""
    return value if math.isfinite(value) else None


def _write_outputs(
    out_dir: Path, curves: list[dict], measurements: list[Measurement], modality: str
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for curve in curves:
        (out_dir / f"{curve['name']}.json").write_text(json.dumps(curve, indent=2) + "\n")
    columns = ["method", "setting", "input", RATE_KEY[modality], "bytes", *QUALITY_KEYS[modality],
               "encoding_time", "decoding_time"]
    with open(out_dir / "rd.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for m in measurements:
            row = {"method": m.method, "setting": m.setting, "input": m.input, **m.values}
            writer.writerow([row[c] for c in columns])
    for quality in QUALITY_KEYS[modality]:
        plot_curves(curves, RATE_KEY[modality], quality, out_dir / f"rd-{quality}.png")
