"""Media bytes <-> model tensors, in memory (no temporary files).

`prepare` turns one sample's media bytes into `pieces: (N, C, *spatial) float in [-1, 1]`,
the model inputs for that sample (N = 1 for an image, N windows for audio, N clips for
video), plus `meta`, a JSON-able dict with what `restore` needs to give back the media at
its original size and length. Images go through Pillow, audio through soundfile (resampled
with torchaudio in fixed blocks, `BlockResampler`, cut into fixed windows), video through
PyAV (clips of T frames at a stride, optionally resized). docs/media.md says the same for
users.

Long files are never held whole where a reader does not need them: `read_pieces` gives
`prepare`'s pieces one at a time (training crops, windows and clips), `open_video` and
`open_audio` give a whole signal as a source the encoder reads box by box, and
`restore_stream` writes decoded slabs as they come. Each gives exactly what `prepare` or
`restore` gives (tested), bounded by `max_streamed_values` (work) instead of
`max_decoded_values` (memory).

Images. Every model input lies on the 256 levels of 8-bit data (x = v / 127.5 - 1,
v in 0..255), whatever the file held, because the discretized likelihoods and bits per
dimension assume that grid. EXIF orientation is applied first (`ImageOps.exif_transpose`),
so a portrait photo stored sideways is tokenized upright and restored upright, with its
upright width and height. Then, by Pillow mode:

| mode | what vqtok does |
|---|---|
| 1 | bilevel: black 0, white 255 |
| L | grey as is |
| P | palette expanded to RGB (RGBA when the palette has transparency) |
| PA, LA, La, RGBA, RGBa | alpha composited over white (`ALPHA_BACKGROUND`); alpha is not kept |
| RGB, RGBX | as is (RGBX: the padding byte dropped) |
| CMYK | Pillow's profile-free CMYK -> RGB (ICC print profiles are not applied) |
| YCbCr | JPEG (JFIF) YCbCr -> RGB |
| I;16, I;16B, I;16L, I;16N | 16-bit grey, scaled by its range: v = round(v16 * 255 / 65535) |
| I | 32-bit integer grey, read as 16-bit (0..65535); values outside it are refused |
| F | 32-bit float grey, read as 0..1; values outside [0, 1], NaN or Inf are refused |
| other (HSV, LAB, I;16S, ...) | refused |

Grey reaches a 3-channel model as three equal channels; colour reaches a 1-channel model
as ITU-R 601-2 luma (L = 0.299 R + 0.587 G + 0.114 B, as Pillow's "L"). Models with
another channel count take no images. Pillow reads 16-bit colour PNGs as 8-bit RGB or RGBA
(their high bytes; grey with alpha as RGBA), and they go on as those modes.
Restored images are 8-bit grey or RGB PNGs.

Audio. A file's channels are kept when the model has as many; a mono file reaches a
multichannel model as equal channels (and is restored mono). A multichannel file for a
1-channel model is refused unless `MediaConfig.mono` (`--mono`) asks for the downmix, the
mean of the channels: a downmix can cancel (opposite channels mix to silence), so it is
never silent. Other mismatches are refused.

Video. Frames of any pixel format are converted to 8-bit RGB by FFmpeg (10-bit video is
scaled, not cut). A display rotation (the container's display matrix, e.g. a phone's
portrait video) is applied, so frames are tokenized and restored upright; flips in the
matrix are not applied, and rotations that are not a multiple of 90 degrees are refused.

Inputs are untrusted: an image or video frame that declares more than `max_image_pixels`
is refused before its pixels are decoded (a decompression bomb), and audio with NaN or Inf
samples is refused rather than turned into meaningless codes. Every refusal raises
ValueError, which the jobs count as a skipped sample (stage "decode") with its message.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio.functional
from PIL import Image, ImageOps

from vqtok.pipelines.config import MAX_IMAGE_PIXELS

Modality = Literal["image", "audio", "video"]

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": ("jpg", "jpeg", "png", "webp", "tif", "tiff"),
    "audio": ("wav", "flac", "ogg", "mp3"),
    "video": ("mp4", "webm", "mkv"),
}
# A few kilobytes of FLAC or H.264 can decode to hours of silence or of black frames: refuse
# more than this many decoded values (samples x channels, frames x H x W x 3) per file.
# 2^30 float32 values are 4 GiB: 6 hours of 48 kHz stereo, 4 minutes of 256x256 video.
MAX_DECODED_VALUES = 1 << 30
# Video read as a stream (`open_video`) is never held whole, so its bound is on the work it
# makes, not on memory: 2^38 values are about 24 minutes of 1080p at 30 frames per second.
MAX_STREAMED_VALUES = 1 << 38
# torchaudio's resampling kernel has (rate / gcd) x (other rate / gcd) taps: bound it, as
# sample rates come from untrusted files and headers (16 kHz <-> 44.1 kHz needs 282 k taps).
MAX_RESAMPLE_TAPS = 1 << 24
# Input frames per block of the resampling to the model's rate (`BlockResampler`).
RESAMPLE_BLOCK = 1 << 16
# Transparent pixels are shown over this grey level (white), as a page or a viewer shows
# them; their stored colour is often arbitrary (black, or leftovers of an editor).
ALPHA_BACKGROUND = 255
# Pillow modes of 16-bit unsigned grey (native, little- and big-endian).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class MediaConfig:
    """How media is cut and scaled into model inputs.

    `sample_rate` is the model's audio rate; audio is cut into windows of `window_seconds`
    (None: one window, the whole file). Video is cut into clips of `clip_frames` frames
    (None: one clip, the whole video) starting every `clip_stride` frames (default:
    `clip_frames`, no overlap), resized to `frame_size` (H, W) when given. `max_side`
    shrinks images and frames whose longer side is larger, keeping the aspect ratio;
    restore gives back the original size.
    Images and frames larger than `max_image_pixels` (H * W) are refused before decoding;
    None leaves only Pillow's own decompression-bomb check. Audio and video that decode to
    more than `max_decoded_values` values are refused while decoding, before they fill memory.
    `mono` allows mixing multichannel audio down to one channel for a 1-channel model (the
    mean of the channels); without it such audio is refused, since a downmix can cancel.
    """

    modality: Modality
    channels: int = 3
    sample_rate: int | None = None
    window_seconds: float | None = 2.0
    clip_frames: int | None = None
    clip_stride: int | None = None
    frame_size: tuple[int, int] | None = None
    max_side: int | None = None
    max_image_pixels: int | None = MAX_IMAGE_PIXELS
    max_decoded_values: int = MAX_DECODED_VALUES
    max_streamed_values: int = MAX_STREAMED_VALUES
    mono: bool = False

    @property
    def window(self) -> int | None:
        """Audio window length in samples at the model's rate (None: the whole file)."""
        if self.window_seconds is None:
            return None
        return max(1, round(self.window_seconds * (self.sample_rate or 16000)))

    @property
    def stride(self) -> int:
        return self.clip_stride or self.clip_frames or 1


def find_media(fields: dict[str, bytes], modality: Modality) -> tuple[str, bytes]:
    """The (extension, bytes) of the sample's media field; KeyError when it has none."""
    for ext in fields:
        if ext.lower() in EXTENSIONS[modality]:
            return ext, fields[ext]
    raise KeyError(f"no {modality} field ({'/'.join(EXTENSIONS[modality])}) among {sorted(fields)}")


def prepare(data: bytes, config: MediaConfig) -> tuple[torch.Tensor, dict]:
    """Decode media bytes to `(pieces (N, C, *spatial) float32 in [-1, 1], meta)`."""
    return _PREPARE[config.modality](data, config)


def restore(
    x: torch.Tensor, meta: dict, modality: Modality, audio_format: str = "wav"
) -> tuple[str, bytes]:
    """Turn decoded pieces `x: (N, C, *spatial)` back into (extension, media bytes)."""
    if modality == "image":
        return "png", _png_bytes(_to_source_size(x[0], meta))
    if modality == "audio":
        return audio_format, _audio_bytes(x, meta, audio_format)
    return "mp4", _mp4_bytes(x, meta)


def restore_stream(
    slabs: Iterable[torch.Tensor], meta: dict, modality: Modality, audio_format: str = "wav"
) -> tuple[str, bytes]:
    """``restore`` of one whole-signal piece given as time slabs, holding one slab at a time.

    Audio is written block by block (soundfile) and resampled block by block
    (``StreamResampler``), video muxed frame by frame (PyAV). Only the encoded bytes grow.

    Args:
        slabs: (1, C, t, *rest) float slabs in time order that together make the piece,
            as ``VQTokenizer.decode_slabs`` yields them (cropped to the input size).
        meta: The sample's media description (one window or one clip from frame 0).
        modality: "audio" or "video".
        audio_format: "wav" or "flac".

    Returns:
        (extension, media bytes), as ``restore`` gives for the same decoded piece.

    Raises:
        ValueError: The description does not fit the slabs (``meta`` is untrusted).
    """
    if modality == "audio":
        return audio_format, _stream_audio(slabs, meta, audio_format)
    if modality == "video":
        return "mp4", _stream_mp4(slabs, meta)
    raise ValueError(f"{modality} is not streamed; use restore")


def _stream_audio(slabs: Iterable[torch.Tensor], meta: dict, audio_format: str) -> bytes:
    """Slabs (1, C, t) at the model's rate -> audio bytes at the file's rate and length."""
    window = _check_int(meta, "window", 1)
    _check_int(meta, "model_length", 1, window)
    rate, model_rate = _check_int(meta, "sample_rate", 1), _check_int(meta, "model_sample_rate", 1)
    length = _check_int(meta, "length", 1, math.ceil(meta["model_length"] * rate / model_rate) + 1)
    mono = meta.get("channels") == 1
    resampler = None if model_rate == rate else StreamResampler(model_rate, rate)
    buffer, model_left, left = io.BytesIO(), meta["model_length"], length
    channels = 1 if mono else None
    handle = None

    def write(waves: torch.Tensor) -> None:
        nonlocal left, handle
        waves = waves[:, :left]
        left -= waves.shape[1]
        if handle is None:
            handle = soundfile.SoundFile(buffer, "w", rate, waves.shape[0],
                                         format=audio_format.upper())
        if waves.shape[1]:
            handle.write(waves.clamp(-1, 1).T.numpy())

    for slab in slabs:
        waves = slab[0].float()[:, :model_left]
        model_left -= waves.shape[1]
        if (channels == 1) and waves.shape[0] > 1:
            waves = waves.mean(dim=0, keepdim=True)  # a mono file given to a multichannel model
        write(resampler.push(waves) if resampler else waves)
    if model_left > 0:
        raise ValueError(f"media description: model_length {meta['model_length']} exceeds "
                         "the decoded samples")
    if resampler is not None:
        write(resampler.finish())
    if handle is None:
        raise ValueError("no audio was decoded")
    if left > 0:
        write(torch.zeros(handle.channels, left))
    handle.close()
    return buffer.getvalue()


class StreamResampler:
    """``torchaudio.functional.resample`` of a signal given block by block.

    Each output depends on the input within the kernel's width of its position; blocks are
    resampled with that much of their neighbours (and the true zero padding at the ends),
    so the outputs are the whole signal's up to float rounding of the shorter convolutions.

    Args:
        rate: The input's rate.
        target: The output's rate.
    """

    def __init__(self, rate: int, target: int) -> None:
        divisor = math.gcd(rate, target)
        self.rate, self.target = rate, target
        self.p_in, self.p_out = rate // divisor, target // divisor
        if self.p_in * self.p_out > MAX_RESAMPLE_TAPS:
            raise ValueError(f"resampling {rate} Hz to {target} Hz is not supported "
                             "(rates too far from a common base)")
        # torchaudio's kernel reaches ceil(6 * p_in / (0.99 * min(p_in, p_out))) inputs on
        # each side (lowpass_filter_width 6, rolloff 0.99); one period more for safety.
        width = math.ceil(6 * self.p_in / (0.99 * min(self.p_in, self.p_out)))
        self.margin = (math.ceil(width / self.p_in) + 1) * self.p_in
        self.buffer: torch.Tensor | None = None
        self.offset = 0  # input index of buffer[:, 0]
        self.received = 0  # inputs pushed so far
        self.emitted = 0  # output periods (of p_out samples) computed so far
        self.given = 0  # output samples returned so far

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """block: (C, n) float -> (C, m) the outputs it completes (m may be 0)."""
        self.buffer = block if self.buffer is None else torch.cat([self.buffer, block], dim=1)
        self.received += block.shape[1]
        out = self._emit((self.received - self.margin) // self.p_in, final=False)
        self.given += out.shape[1]
        return out

    def finish(self) -> torch.Tensor:
        """(C, m): the remaining outputs, up to ceil(received * target / rate) in all."""
        total = math.ceil(self.p_out * self.received / self.p_in)
        out = self._emit(-(-total // self.p_out), final=True)[:, : total - self.given]
        self.given += out.shape[1]
        return out

    def _emit(self, stop: int, final: bool) -> torch.Tensor:
        """Outputs of periods [emitted, stop) (each p_out samples, from p_in inputs)."""
        assert self.buffer is not None
        start = self.emitted
        if stop <= start:
            return self.buffer.new_zeros(self.buffer.shape[0], 0)
        lo = max(0, start * self.p_in - self.margin)  # a multiple of p_in: same phase
        hi = self.received if final else stop * self.p_in + self.margin
        block = self.buffer[:, lo - self.offset : hi - self.offset]
        out = torchaudio.functional.resample(block, self.rate, self.target)
        first = (start * self.p_in - lo) // self.p_in * self.p_out
        out = out[:, first : first + (stop - start) * self.p_out]
        self.emitted = stop
        keep = max(self.offset, stop * self.p_in - self.margin)  # what later periods read
        self.buffer = self.buffer[:, keep - self.offset :]
        self.offset = keep
        return out


class BlockResampler:
    """Resampling of a file's audio to the model's rate in fixed blocks of output periods.

    Block k gives the outputs of periods [k P, (k + 1) P) (P periods of ``p_out`` outputs
    from ``p_in`` inputs, about ``RESAMPLE_BLOCK`` inputs), computed by torchaudio from its
    inputs and the margin its outputs depend on (the true zero padding at the signal's
    ends). Every reader of a file (whole, window by window, box by box) computes each block
    alike, so their samples are equal bit for bit: a convolution's float rounding can
    depend on its length, so resampling spans of other lengths would not be. The outputs
    are torchaudio's whole-signal resampling up to that rounding.

    Args:
        rate: The file's rate.
        target: The model's rate.

    Raises:
        ValueError: The rates are too far from a common base.
    """

    def __init__(self, rate: int, target: int) -> None:
        stream = StreamResampler(rate, target)  # the kernel's reach, and the taps bound
        self.rate, self.target = rate, target
        self.p_in, self.p_out, self.margin = stream.p_in, stream.p_out, stream.margin
        self.periods = max(1, RESAMPLE_BLOCK // self.p_in)

    def length(self, frames: int) -> int:
        """Outputs of ``frames`` inputs: ceil(frames * target / rate)."""
        return math.ceil(self.p_out * frames / self.p_in)

    def block_outputs(self) -> int:
        """Outputs per block (the last block of a signal may have fewer)."""
        return self.periods * self.p_out

    def span(self, block: int, frames: int | None = None) -> tuple[int, int]:
        """The inputs [lo, hi) that ``block`` is computed from; ``frames`` (when known)
        ends the signal."""
        lo = max(0, block * self.periods * self.p_in - self.margin)
        hi = (block + 1) * self.periods * self.p_in + self.margin
        return lo, hi if frames is None else min(frames, hi)

    def outputs(self, block: int, waves: torch.Tensor, lo: int, frames: int | None) -> torch.Tensor:
        """waves: (C, n) the inputs ``span`` names, from ``lo`` -> (C, m) the block's outputs.

        ``frames``: the signal's length when the span reaches its end (else None).
        """
        out = _resample(waves, self.rate, self.target)
        first = block * self.block_outputs() - lo // self.p_in * self.p_out
        count = self.block_outputs()
        if frames is not None:
            count = min(count, self.length(frames) - block * self.block_outputs())
        return out[:, first : first + count]

    def whole(self, waves: torch.Tensor) -> torch.Tensor:
        """waves: (C, T) the whole signal -> (C, length(T)), block by block."""
        frames = waves.shape[1]
        blocks = -(-self.length(frames) // self.block_outputs())
        pieces = []
        for block in range(blocks):
            lo, hi = self.span(block, frames)
            pieces.append(self.outputs(block, waves[:, lo:hi], lo, frames))
        return torch.cat(pieces, dim=1)


def _stream_mp4(slabs: Iterable[torch.Tensor], meta: dict) -> bytes:
    """Slabs (1, C, t, h, w) of one clip from frame 0 -> MP4 of the original frames and size."""
    if meta.get("clip_starts") != [0]:
        raise ValueError("media description: a streamed video is one clip from frame 0")
    frames = _check_int(meta, "frames", 1, _check_int(meta, "clip_frames", 1))
    height, width = _check_int(meta, "height", 1), _check_int(meta, "width", 1)
    _check_pixels(width, height, MediaConfig("video"), "video frame")
    fps = meta.get("fps")
    if fps is not None and not (isinstance(fps, int | float) and 0 < fps <= 1000):
        raise ValueError(f"media description: fps={fps!r} is not a frame rate")
    with Mp4Writer(height, width, fps or 8.0) as writer:
        left = frames
        for slab in slabs:
            video = slab[0, :, :left]
            left -= video.shape[1]
            if video.shape[1] and tuple(video.shape[-2:]) != (height, width):
                video = _resize_frames(video, (height, width))
            writer.write(to_uint8(video).permute(1, 2, 3, 0).numpy())
        if left > 0:
            raise ValueError(f"media description: frames={frames} exceeds the decoded frames")
    return writer.data


class Mp4Writer:
    """An H.264 MP4 written frame by frame into memory (see ``encode_mp4``).

    Args:
        height: Frame rows.
        width: Frame columns.
        fps: Frame rate.
        codec: The PyAV encoder.
        crf: Constant rate factor.
        preset: The encoder's speed preset.
    """

    def __init__(self, height: int, width: int, fps: float, *, codec: str = "libx264",
                 crf: int = 18, preset: str = "fast") -> None:
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, mode="w", format="mp4")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height = width, height
        # 4:2:0 chroma needs even sizes; odd ones keep 4:4:4.
        self.stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.data = b""

    def __enter__(self) -> Mp4Writer:
        return self

    def write(self, frames: np.ndarray) -> None:
        """frames: (t, H, W, 3) uint8, appended."""
        for pixels in frames:
            self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(pixels, "rgb24")))

    def __exit__(self, kind, *rest) -> None:
        if kind is None:
            self.container.mux(self.stream.encode())
        self.container.close()
        self.data = self.buffer.getvalue() if kind is None else b""


def _prepare_image(data: bytes, config: MediaConfig) -> tuple[torch.Tensor, dict]:
    if config.channels not in (1, 3):
        raise ValueError(f"images need a model of 1 or 3 channels, not {config.channels}")
    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        _check_pixels(image.width, image.height, config, "image")
        upright = ImageOps.exif_transpose(image)  # decodes; a copy turned as EXIF says
        pixels = image_levels(upright, config.channels)
    source = pixels.shape[:2]
    size = fit_side(*source, config.max_side)
    if size != source:
        pixels = _resize_levels(pixels, size)
    x = _to_unit_range(pixels.transpose(2, 0, 1))
    meta = {"height": x.shape[1], "width": x.shape[2]}
    if size != source:
        meta |= {"source_height": source[0], "source_width": source[1]}
    return x.unsqueeze(0), meta


def fit_side(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) shrunk so that the longer side is at most ``max_side``, keeping the
    aspect ratio (each side rounded, at least 1); unchanged when it already fits or when
    ``max_side`` is None.

    Args:
        height: Rows of the image or frame.
        width: Columns.
        max_side: The longest side allowed, or None.

    Returns:
        The (height, width) to encode at.
    """
    longer = max(height, width)
    if max_side is None or longer <= max_side:
        return height, width
    scale = max_side / longer
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_levels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pixels: (H, W, C) uint8 -> (*size, C) uint8 with Pillow's antialiasing Lanczos filter;
    8-bit levels stay on the 8-bit grid the model expects."""
    planes = [
        np.asarray(Image.fromarray(pixels[..., c]).resize(size[::-1], Image.Resampling.LANCZOS))
        for c in range(pixels.shape[2])
    ]
    return np.stack(planes, axis=2)


def image_levels(image: Image.Image, channels: int) -> np.ndarray:
    """The image as 8-bit levels for a model of ``channels`` (1 or 3), by the table of the
    module docstring.

    Args:
        image: A Pillow image of any mode (already upright).
        channels: 1 (grey) or 3 (RGB).

    Returns:
        (H, W, channels) uint8.

    Raises:
        ValueError: For a mode vqtok does not read, or values outside the mode's range.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        grey = _wide_grey_levels(np.asarray(image), mode)
        return np.repeat(grey[..., None], channels, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    elif mode in ("PA", "RGBa"):
        image = image.convert("RGBA")  # RGBa: premultiplied alpha, undone by Pillow
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "RGBX"):
        image = image.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(
            f"image mode {mode} is not read by vqtok (see docs/media.md); convert the file to "
            "RGB, grey or 16-bit grey first"
        )
    if image.mode in ("LA", "RGBA"):
        image = Image.fromarray(_over_background(np.asarray(image)))
    if channels == 1 and image.mode == "RGB":
        image = image.convert("L")  # ITU-R 601-2 luma, rounded to 8 bits
    levels = np.asarray(image)
    if levels.ndim == 2:
        levels = np.repeat(levels[..., None], channels, axis=2)
    return levels


def _wide_grey_levels(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float grey (H, W) -> (H, W) uint8 scaled by the range of
    the mode (not clipped at 255 as Pillow's conversion to "L" or "RGB" does)."""
    if mode == "F":
        if not np.isfinite(values).all():
            raise ValueError("float image has NaN or Inf pixels")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"float image has values in [{low:g}, {high:g}]; vqtok reads float images as "
                "0..1 (scale it, or save it as 8- or 16-bit)"
            )
        return np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)
    wide = values.astype(np.int64)
    if mode == "I" and (int(wide.min()) < 0 or int(wide.max()) > 65535):
        raise ValueError(
            f"32-bit integer image has values in [{int(wide.min())}, {int(wide.max())}]; vqtok "
            "reads mode I as 16-bit (0..65535): save it as 8- or 16-bit"
        )
    # round(v * 255 / 65535) = round(v / 257), exact in integers: (2v + 257) // 514.
    return ((2 * wide + 257) // 514).astype(np.uint8)


def _over_background(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C + 1) uint8 colour and alpha -> (H, W, C) uint8 composited over
    ALPHA_BACKGROUND: a * colour + (1 - a) * background, rounded."""
    colour, alpha = pixels[..., :-1].astype(np.float32), pixels[..., -1:].astype(np.float32)
    mixed = np.rint((colour * alpha + ALPHA_BACKGROUND * (255.0 - alpha)) / 255.0)
    return mixed.astype(np.uint8).squeeze(2) if mixed.shape[2] == 1 else mixed.astype(np.uint8)


def _check_pixels(width: int, height: int, config: MediaConfig, what: str) -> None:
    if config.max_image_pixels is not None and width * height > config.max_image_pixels:
        raise ValueError(
            f"{what} of {width}x{height} pixels exceeds the limit of "
            f"{config.max_image_pixels} pixels (MediaConfig.max_image_pixels)"
        )


def _to_source_size(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """x: (C, h, w) float -> (C, source_height, source_width) when the image was shrunk
    for the model (``max_side``), else x."""
    if "source_height" not in meta and "source_width" not in meta:
        return x
    height, width = _check_int(meta, "source_height", 1), _check_int(meta, "source_width", 1)
    _check_pixels(width, height, MediaConfig("image"), "image")
    levels = _resize_levels(to_uint8(x).permute(1, 2, 0).numpy(), (height, width))
    return _to_unit_range(levels.transpose(2, 0, 1))


def _png_bytes(x: torch.Tensor) -> bytes:
    """x: (C, H, W) float in [-1, 1] -> PNG bytes."""
    return png_bytes(to_uint8(x).permute(1, 2, 0).numpy())


def png_bytes(pixels: np.ndarray) -> bytes:
    """pixels: (H, W, C) uint8, C in 1/3/4 -> lossless PNG bytes (grey, RGB or RGBA)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _prepare_audio(data: bytes, config: MediaConfig) -> tuple[torch.Tensor, dict]:
    samples, rate = _read_audio_bounded(data, config.max_decoded_values, config.sample_rate)
    if samples.shape[0] == 0:
        raise ValueError("audio has no samples")
    bad = samples.size - int(np.isfinite(samples).sum())
    if bad:
        raise ValueError(f"audio has {bad} NaN or Inf samples")
    waves = _fit_channels(torch.from_numpy(samples).T, config)  # (C, T)
    target = config.sample_rate or rate
    if rate != target:
        waves = BlockResampler(rate, target).whole(waves)
    # Float files and resampling ringing can leave the range. In place where the tensor owns
    # its values (not a mono file repeated by expand): an hour of audio is not copied again.
    if min(waves.stride()) > 0:
        waves = waves.clamp_(-1.0, 1.0)
    else:
        waves = waves.clamp(-1.0, 1.0)
    length = waves.shape[1]
    window = config.window or length
    num_windows = max(1, math.ceil(length / window))
    extra = num_windows * window - length
    padded = F.pad(waves, (0, extra)) if extra else waves
    meta = {
        "sample_rate": rate,
        "length": samples.shape[0],
        "channels": samples.shape[1],
        "model_sample_rate": target,
        "model_length": length,
        "window": window,
        "num_windows": num_windows,
    }
    pieces = padded.reshape(waves.shape[0], num_windows, window).transpose(0, 1).contiguous()
    return pieces, meta


def _fit_channels(waves: torch.Tensor, config: MediaConfig) -> torch.Tensor:
    """waves: (channels of the file, T) -> (config.channels, T): kept when they match, a mono
    file repeated, a downmix (mean) only when `config.mono` asks for it; else ValueError."""
    have, want = waves.shape[0], config.channels
    if have == want:
        return waves
    if have == 1:
        return waves.expand(want, -1)  # equal channels: nothing is invented or lost
    if want == 1 and config.mono:
        return waves.mean(dim=0, keepdim=True)
    hint = (
        "pass --mono (MediaConfig.mono) to mix them down to one (their mean), "
        f"or use a model with {have} channels"
        if want == 1
        else f"use a model with {have} channels"
    )
    raise ValueError(f"audio has {have} channels and the model takes {want}: {hint}")


def _read_audio_bounded(
    data: bytes, max_values: int, target_rate: int | None
) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the rate; reads at most ``max_values`` values, counted
    after resampling to ``target_rate`` too, since the header's frame count can be absent
    or wrong and a low-rate file grows when resampled."""
    with soundfile.SoundFile(io.BytesIO(data)) as handle:
        growth = max(1.0, (target_rate or handle.samplerate) / handle.samplerate)
        cap = max(1, int(max_values / (handle.channels * growth)))
        samples = handle.read(frames=cap + 1, dtype="float32", always_2d=True)
        if samples.shape[0] > cap:
            raise ValueError(
                f"audio decodes to more than {max_values} values "
                f"({cap / handle.samplerate / 3600:.1f} h at {handle.samplerate} Hz)"
            )
        return samples, handle.samplerate


def _audio_bytes(x: torch.Tensor, meta: dict, audio_format: str) -> bytes:
    """x: (N, C, window) float -> audio of C channels (one when the file was mono) at the
    original rate and length."""
    per_channel = x.shape[0] * x.shape[2]
    _check_int(meta, "model_length", 1, per_channel)
    rate, model_rate = _check_int(meta, "sample_rate", 1), _check_int(meta, "model_sample_rate", 1)
    _check_int(meta, "length", 1, math.ceil(meta["model_length"] * rate / model_rate) + 1)
    waves = x.float().transpose(0, 1).reshape(x.shape[1], per_channel)[:, : meta["model_length"]]
    if meta.get("channels") == 1 and waves.shape[0] > 1:
        waves = waves.mean(dim=0, keepdim=True)  # a mono file given to a multichannel model
    if model_rate != rate:
        waves = _resample(waves, model_rate, rate)
    waves = F.pad(waves, (0, max(0, meta["length"] - waves.shape[1])))[:, : meta["length"]]
    buffer = io.BytesIO()
    soundfile.write(
        buffer, waves.clamp(-1, 1).T.numpy(), meta["sample_rate"], format=audio_format.upper()
    )
    return buffer.getvalue()


def _resample(waves: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """waves: (..., T) -> (..., T * target / rate), resampled along the last axis."""
    divisor = math.gcd(rate, target)
    if (rate // divisor) * (target // divisor) > MAX_RESAMPLE_TAPS:
        raise ValueError(
            f"resampling {rate} Hz to {target} Hz is not supported "
            "(rates too far from a common base)"
        )
    return torchaudio.functional.resample(waves, rate, target)


def _check_int(meta: dict, name: str, low: int, high: int | None = None) -> int:
    """meta[name], checked to be an int in [low, high].

    restore's meta comes from untrusted files.
    """
    value = meta.get(name)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        raise ValueError(
            f"media description: {name}={value!r} is not an integer in [{low}, {high or 'inf'}]"
        )
    return value


def _prepare_video(data: bytes, config: MediaConfig) -> tuple[torch.Tensor, dict]:
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        _check_pixels(
            stream.codec_context.width, stream.codec_context.height, config, "video frame"
        )
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        frames = _decode_frames_bounded(container, stream, config.max_decoded_values)
    if not frames:
        raise ValueError("video has no frames")
    height, width = frames[0].shape[:2]
    if (
        config.frame_size
        and len(frames) * 3 * math.prod(config.frame_size) > config.max_decoded_values
    ):
        raise ValueError(
            f"video resized to {config.frame_size} exceeds {config.max_decoded_values} values"
        )
    video = _to_unit_range(np.stack(frames).transpose(3, 0, 1, 2))
    size = frame_shape(height, width, config)
    if size != (height, width):
        video = _resize_frames(video, size)
    clip_frames = config.clip_frames or len(frames)
    if config.stride > clip_frames:
        raise ValueError(
            f"clip stride {config.stride} > clip frames {clip_frames} would drop frames"
        )
    starts = list(range(0, max(1, len(frames) - clip_frames + config.stride), config.stride))
    clips = [_clip(video, start, clip_frames) for start in starts]
    meta = {
        "fps": fps,
        "frames": len(frames),
        "height": height,
        "width": width,
        "clip_frames": clip_frames,
        "clip_starts": starts,
    }
    return torch.stack(clips), meta


def open_audio(data: bytes, config: MediaConfig) -> tuple[AudioSource, dict]:
    """Audio bytes -> (an ``AudioSource`` of the whole signal, the meta ``prepare`` gives
    without windows).

    One pass reads the file in blocks to count its frames and check its samples (NaN and
    Inf, the streamed bound), keeping none; the source reads them again as the encoder
    asks for them.

    Args:
        data: The file's bytes.
        config: The media options (the model's rate and channels, the streamed bound).

    Returns:
        The source, shape (1, C, T at the model's rate), and the meta (one window).

    Raises:
        ValueError: No samples, NaN or Inf samples, channels the model does not take, rates
            too far apart, or more than ``config.max_streamed_values`` values.
    """
    with soundfile.SoundFile(io.BytesIO(data)) as handle:
        rate, channels = handle.samplerate, handle.channels
        target = config.sample_rate or rate
        cap = max(1, int(config.max_streamed_values / (channels * max(1.0, target / rate))))
        frames = 0
        for block in handle.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            frames += block.shape[0]
            if frames > cap:
                raise ValueError(f"audio decodes to more than {config.max_streamed_values} "
                                 f"values ({cap / rate / 3600:.1f} h at {rate} Hz)")
            if not np.isfinite(block).all():
                raise ValueError("audio has NaN or Inf samples")
    if frames == 0:
        raise ValueError("audio has no samples")
    _fit_channels(torch.zeros(channels, 1), config)  # refuses what the model cannot take
    source = AudioSource(data, frames, rate, config)
    length = source.shape[2]
    meta = {"sample_rate": rate, "length": frames, "channels": channels,
            "model_sample_rate": target, "model_length": length, "window": length,
            "num_windows": 1}
    return source, meta


class AudioSource:
    """Audio read box by box at the model's rate (a ``vqtok.models.tiling.Source``).

    The file is read forward in blocks, keeping its samples from the start of the last box
    read (less the resampler's margin) on, so that a reader moving forward in time holds
    one box, never the whole signal. A box is resampled with the margin its outputs depend
    on (as ``StreamResampler``), so reads equal ``prepare``'s whole signal sample for
    sample.

    Args:
        data: The file's bytes.
        frames: The file's frames (counted by ``open_audio``).
        rate: The file's rate.
        config: The model's rate and channels, and the downmix option.
    """

    dtype = torch.float32

    def __init__(self, data: bytes, frames: int, rate: int, config: MediaConfig) -> None:
        self.data, self.frames, self.rate, self.config = data, frames, rate, config
        target = config.sample_rate or rate
        self.resampler = None if target == rate else BlockResampler(rate, target)
        length = frames if self.resampler is None else self.resampler.length(frames)
        self.shape = (1, config.channels, length)
        self.device = "cpu"
        self._reset()

    def _reset(self) -> None:
        self._handle = None  # the open file, from the first read on
        self._first = 0  # file frame of self._buffer[0]
        self._buffer = np.zeros((0, 1), dtype=np.float32)

    def __getstate__(self) -> dict:
        # Sent to another process before reading: the open file does not travel.
        return {k: v for k, v in self.__dict__.items() if k not in ("_handle", "_buffer")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        """Close the file and drop the buffered samples."""
        if self._handle is not None:
            self._handle.close()
        self._reset()

    def read(self, reads: Sequence[tuple[int, int]]) -> torch.Tensor:
        """The box ``reads`` ([start, stop) on time; stop may pass the end) of the padded
        signal -> (1, C, stop - start) float32, past the end the last sample repeated.

        Raises:
            ValueError: A box before an earlier box's start.
            MediaDecodeError: The file ends before its counted frames.
        """
        ((t0, t1),) = reads
        length = self.shape[2]
        start, stop = min(t0, length - 1), min(t1, length)
        box = self._model_rate(start, stop).clamp(-1.0, 1.0).unsqueeze(0)
        pad = (t1 - t0) - (stop - start)
        if pad:
            box = F.pad(box, (0, pad), mode="replicate")
        return box.to(self.device)

    def _model_rate(self, start: int, stop: int) -> torch.Tensor:
        """Samples [start, stop) at the model's rate -> (C, stop - start)."""
        blocks = self.resampler
        if blocks is None:
            return _fit_channels(torch.from_numpy(self._file(start, stop)).T, self.config)
        size = blocks.block_outputs()
        first, last = start // size, (stop - 1) // size
        spans = [blocks.span(block, self.frames) for block in range(first, last + 1)]
        inputs = self._file(spans[0][0], spans[-1][1])  # forward from the first block's inputs
        outputs = [
            blocks.outputs(block, _fit_channels(torch.from_numpy(
                inputs[lo - spans[0][0] : hi - spans[0][0]]).T, self.config), lo, self.frames)
            for block, (lo, hi) in zip(range(first, last + 1), spans, strict=True)
        ]
        return torch.cat(outputs, dim=1)[:, start - first * size : stop - first * size]

    def _file(self, lo: int, hi: int) -> np.ndarray:
        """File frames [lo, hi) -> (hi - lo, channels) float32, read forward."""
        if lo < self._first:
            raise ValueError(f"sample {lo} was read past already (the source moves forward)")
        if self._handle is None:
            self._handle = soundfile.SoundFile(io.BytesIO(self.data))
        held = self._first + self._buffer.shape[0]
        if hi > held:
            more = self._handle.read(frames=hi - held, dtype="float32", always_2d=True)
            if more.shape[0] < hi - held:
                raise MediaDecodeError(f"audio ended at frame {held + more.shape[0]}, before "
                                       f"its {self.frames} counted frames")
            self._buffer = more if self._buffer.shape[0] == 0 else np.concatenate(
                [self._buffer, more])
        self._buffer = self._buffer[lo - self._first :]
        self._first = lo
        return self._buffer[: hi - lo]


class _ModelRate:
    """A file's audio given block by block -> the model's rate, as ``BlockResampler``
    computes it (unchanged when the rates are equal)."""

    def __init__(self, rate: int, target: int) -> None:
        self.blocks = None if rate == target else BlockResampler(rate, target)
        self.inputs: torch.Tensor | None = None  # inputs from frame `offset` on
        self.offset = self.received = self.block = 0

    def push(self, waves: torch.Tensor, final: bool) -> torch.Tensor:
        """waves: (C, n) the next inputs (n = 0 with ``final``) -> (C, m) the outputs they
        complete (all the rest when ``final``)."""
        blocks = self.blocks
        if blocks is None:
            return waves
        self.inputs = waves if self.inputs is None else torch.cat([self.inputs, waves], dim=1)
        self.received += waves.shape[1]
        frames = self.received if final else None
        out = []
        while self.block * blocks.block_outputs() < blocks.length(self.received):
            lo, hi = blocks.span(self.block, frames)
            if hi > self.received:  # not all its inputs are here yet
                break
            inputs = self.inputs[:, lo - self.offset : hi - self.offset]
            out.append(blocks.outputs(self.block, inputs, lo, frames))
            self.block += 1
            keep = blocks.span(self.block)[0]  # what later blocks read
            self.inputs = self.inputs[:, keep - self.offset :]
            self.offset = keep
        return torch.cat(out, dim=1) if out else waves.new_zeros(waves.shape[0], 0)


def read_pieces(data: bytes, config: MediaConfig) -> PieceReader:
    """``prepare``'s pieces of one file, decoded one piece at a time (see ``PieceReader``).

    Args:
        data: The file's bytes.
        config: The media options.

    Returns:
        The reader; iterate it once.
    """
    return PieceReader(data, config)


class PieceReader:
    """The pieces ``prepare`` gives, each ``(C, *spatial)`` float32 in [-1, 1] and equal to
    ``prepare``'s, decoded as they are taken: audio windows from soundfile blocks (resampled
    block by block, ``StreamResampler``), video clips from frames decoded in order (a clip's
    frames, plus the overlap with the next clip, are held). An image, audio without windows
    or video without clips is one piece: ``prepare``'s, decoded whole.

    Long files are bounded by ``max_streamed_values`` (the work they make), not by
    ``max_decoded_values`` (memory): a streamed file is never held whole. ``meta`` is
    ``prepare``'s meta once the reader has been iterated to its end. A file that fails
    partway raises after the pieces before the failure.

    Args:
        data: The file's bytes.
        config: The media options.
    """

    def __init__(self, data: bytes, config: MediaConfig) -> None:
        self.data, self.config = data, config
        self.meta: dict = {}

    def __iter__(self) -> Iterator[torch.Tensor]:
        config = self.config
        if config.modality == "audio" and config.window_seconds is not None:
            return self._audio_windows()
        if config.modality == "video" and config.clip_frames is not None:
            return self._video_clips()
        return self._whole()

    def _whole(self) -> Iterator[torch.Tensor]:
        pieces, self.meta = prepare(self.data, self.config)
        yield from pieces

    def _audio_windows(self) -> Iterator[torch.Tensor]:
        """Windows (C, window) of the file at the model's rate, the last padded with zeros."""
        config, window = self.config, self.config.window
        with soundfile.SoundFile(io.BytesIO(self.data)) as handle:
            rate, channels = handle.samplerate, handle.channels
            target = config.sample_rate or rate
            cap = max(1, int(config.max_streamed_values / (channels * max(1.0, target / rate))))
            model_rate = _ModelRate(rate, target)
            pending, read, produced = None, 0, 0
            while True:
                samples = handle.read(frames=max(window, 1 << 16), dtype="float32",
                                      always_2d=True)
                last = samples.shape[0] == 0
                if last and read == 0:
                    raise ValueError("audio has no samples")
                read += samples.shape[0]
                if read > cap:
                    raise ValueError(f"audio decodes to more than {config.max_streamed_values} "
                                     f"values ({cap / rate / 3600:.1f} h at {rate} Hz)")
                if not np.isfinite(samples).all():
                    raise MediaDecodeError("audio has NaN or Inf samples")
                waves = model_rate.push(_fit_channels(torch.from_numpy(samples).T, config),
                                        final=last).clamp(-1.0, 1.0)
                produced += waves.shape[1]
                pending = waves if pending is None else torch.cat([pending, waves], dim=1)
                while pending.shape[1] >= window:
                    yield pending[:, :window].contiguous()
                    pending = pending[:, window:]
                if last:
                    break
        if pending.shape[1]:
            yield F.pad(pending, (0, window - pending.shape[1]))
        self.meta = {"sample_rate": rate, "length": read, "channels": channels,
                     "model_sample_rate": target, "model_length": produced, "window": window,
                     "num_windows": math.ceil(produced / window)}

    def _video_clips(self) -> Iterator[torch.Tensor]:
        """Clips (3, clip_frames, H, W) every ``stride`` frames, the last frame repeated past
        the end, as ``prepare`` cuts them."""
        config, clip, stride = self.config, self.config.clip_frames, self.config.stride
        if stride > clip:
            raise ValueError(f"clip stride {stride} > clip frames {clip} would drop frames")
        with av.open(io.BytesIO(self.data)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            _check_pixels(stream.codec_context.width, stream.codec_context.height, config,
                          "video frame")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
            held: list[np.ndarray] = []  # frames first, first + 1, ... as stored
            first = count = 0
            native = size = None
            for frame in _decoded_frames(container, stream):
                pixels = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                if native is None:
                    native = pixels.shape[:2]
                    size = frame_shape(*native, config)
                if pixels.shape[:2] != native:
                    raise MediaDecodeError(f"a frame of {pixels.shape[1]}x{pixels.shape[0]} "
                                           f"in a video of {native[1]}x{native[0]}")
                count += 1
                _check_streamed(count, pixels.size, config)
                held.append(pixels if size == native else _resize_frame(pixels, size))
                if len(held) == clip:  # the clip from `first` is complete
                    yield self._clip(held, clip, size == native)
                    del held[:stride]
                    first += stride
        if count == 0:
            raise ValueError("video has no frames")
        while first < max(1, count - clip + stride):  # the last clips run past the end
            yield self._clip(held, clip, size == native)
            del held[:stride]
            first += stride
        self.meta = {"fps": fps, "frames": count, "height": native[0], "width": native[1],
                     "clip_frames": clip,
                     "clip_starts": list(range(0, max(1, count - clip + stride), stride))}

    @staticmethod
    def _clip(held: list[np.ndarray], length: int, native: bool) -> torch.Tensor:
        """The first ``length`` held frames (the last repeated when fewer) -> (3, length, H, W)."""
        picked = held[:length] + held[-1:] * (length - len(held[:length]))
        if native:  # (H, W, 3) uint8
            return _to_unit_range(np.stack(picked).transpose(3, 0, 1, 2))
        return torch.from_numpy(np.stack(picked, axis=1))


def frame_shape(height: int, width: int, config: MediaConfig) -> tuple[int, int]:
    """The (H, W) frames of a ``height`` x ``width`` video are encoded at: ``frame_size``
    when given, else shrunk to ``max_side`` (see ``fit_side``), else native.

    Args:
        height: The upright frames' rows.
        width: Their columns.
        config: The media options.

    Returns:
        (H, W).
    """
    if config.frame_size:
        return tuple(config.frame_size)
    return fit_side(height, width, config.max_side)


def _decode_frames_bounded(
    container: av.container.InputContainer, stream: av.video.VideoStream, max_values: int
) -> list[np.ndarray]:
    frames, values = [], 0
    for frame in container.decode(stream):
        frames.append(_upright(frame.to_ndarray(format="rgb24"), frame.rotation))
        values += frames[-1].size
        if values > max_values:
            raise ValueError(
                f"video decodes to more than {max_values} values (stopped at frame {len(frames)})"
            )
    return frames


class MediaDecodeError(ValueError):
    """The media could not be decoded partway through a streamed read (a corrupt frame, a
    file that ends early): the sample's fault, not the model's, so jobs log it with stage
    "decode"."""


class FrameCountError(MediaDecodeError):
    """A video decoded to another number of frames than its container counted."""


def open_video(
    data: bytes, config: MediaConfig, count: Literal["container", "decode"] = "container"
) -> tuple[VideoSource, dict]:
    """Video bytes -> (a ``VideoSource`` of the whole video, the meta ``prepare`` gives).

    The frames are counted without decoding them (``count="container"``: the container's
    video packets, less those it marks to discard, and only the first frame decoded for
    its rotation), or by one decoding pass that keeps no frame (``count="decode"``). The
    source checks the count as it decodes and raises ``FrameCountError`` when the file
    decodes to another number (a corrupt frame dropped, packets without a picture); open
    it again with ``count="decode"`` then (``VideoSource.recounted``). The frames are
    decoded, a few at a time, as the encoder reads them. Clips are not cut: the source is
    the whole video, resized as ``frame_shape`` says.

    Args:
        data: The file's bytes.
        config: The media options (frame size or longest side, pixel and length limits).
        count: How the frames are counted.

    Returns:
        The source, shape (1, 3, T, H, W), and the meta (fps, frames, original height and
        width, one clip of all frames).

    Raises:
        ValueError: No video stream or no frames, a frame over the pixel limit, an
            unsupported rotation, or more than ``config.max_streamed_values`` values.
    """
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        coded = stream.codec_context
        _check_pixels(coded.width, coded.height, config, "video frame")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        frame_values = coded.width * coded.height * 3
        if count == "decode":
            frames, rotation = _count_decoded(container, stream, frame_values, config)
        else:
            frames = _count_packets(container, stream, frame_values, config)
    if count != "decode":
        rotation = _first_rotation(data) if frames else 0
    if not frames:
        raise ValueError("video has no frames")
    if rotation % 90:
        raise ValueError(f"video display rotation of {rotation} degrees is not supported")
    turned = (rotation // 90) % 2 == 1
    height, width = (coded.width, coded.height) if turned else (coded.height, coded.width)
    source = VideoSource(data, frames, (height, width), frame_shape(height, width, config))
    meta = {"fps": fps, "frames": frames, "height": height, "width": width,
            "clip_frames": frames, "clip_starts": [0]}
    return source, meta


def _check_streamed(frames: int, frame_values: int, config: MediaConfig) -> None:
    if frames * frame_values > config.max_streamed_values:
        raise ValueError(
            f"video decodes to more than {config.max_streamed_values} values "
            f"(stopped at frame {frames})"
        )


def _count_packets(container, stream, frame_values: int, config: MediaConfig) -> int:
    """The video packets that carry a picture: demuxed, not decoded (a fraction of the cost)."""
    frames = 0
    for packet in container.demux(stream):
        if packet.size and not packet.is_discard:
            frames += 1
            _check_streamed(frames, frame_values, config)
    return frames


def _count_decoded(container, stream, frame_values: int, config: MediaConfig) -> tuple[int, int]:
    """(frames, rotation of the first), decoding every frame and keeping none."""
    frames, rotation = 0, 0
    try:
        for frame in container.decode(stream):
            rotation = frame.rotation if frames == 0 else rotation
            frames += 1
            _check_streamed(frames, frame_values, config)
    except av.error.FFmpegError as error:
        raise ValueError(f"video cannot be decoded: {error}") from None
    return frames, rotation


def _first_rotation(data: bytes) -> int:
    """The display rotation PyAV reads for the first frame (0 when none decodes)."""
    with av.open(io.BytesIO(data)) as container:
        try:
            frame = next(container.decode(container.streams.video[0]), None)
        except av.error.FFmpegError as error:
            raise ValueError(f"video cannot be decoded: {error}") from None
        return 0 if frame is None else frame.rotation


class VideoSource:
    """A video read box by box, decoded as it is read (a ``vqtok.models.tiling.Source``).

    Frames are decoded in order and kept from the start of the last box read on, so that
    a reader moving forward in time holds one box's frames (plus what the decoder buffers),
    never the whole video. Frames are stored as decoded (8-bit), or as float when resized.
    Reads give exactly what ``prepare`` gives of the same frames (resized frame by frame).
    A reader that has read every box calls ``finish`` to learn whether the file held more
    frames than counted.

    Args:
        data: The file's bytes.
        frames: The frames the file decodes to (counted by ``open_video``).
        native: The upright frames' (H, W).
        size: The (H, W) the model is given.
    """

    dtype = torch.float32

    def __init__(
        self, data: bytes, frames: int, native: tuple[int, int], size: tuple[int, int]
    ) -> None:
        self.data, self.frames, self.native, self.size = data, frames, native, size
        self.shape = (1, 3, frames, *size)
        self.device = "cpu"
        self._reset()

    def _reset(self) -> None:
        self._decoded = None  # the frame generator, opened at the first read
        self._first = 0  # index of self._buffer[0]
        self._buffer: list[np.ndarray] = []

    def __getstate__(self) -> dict:
        # Sent to another process before reading: the open decoder does not travel.
        return {k: v for k, v in self.__dict__.items() if k not in ("_decoded", "_buffer")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def frame_bytes(self) -> int:
        """Bytes one buffered frame holds."""
        per_value = 1 if self.size == self.native else 4
        return 3 * math.prod(self.size) * per_value

    def close(self) -> None:
        """Stop decoding and drop the buffered frames."""
        if self._decoded is not None:
            self._decoded.close()
        self._reset()

    def recounted(self) -> VideoSource:
        """This video with its frames counted by decoding them (after a ``FrameCountError``).

        Returns:
            A new source, not read yet.

        Raises:
            ValueError: The video cannot be decoded, or has no frames.
        """
        with av.open(io.BytesIO(self.data)) as container:
            stream = container.streams.video[0]
            values = 3 * math.prod(self.native)
            frames, _ = _count_decoded(container, stream, values, MediaConfig("video"))
        if not frames:
            raise ValueError("video has no frames")
        return VideoSource(self.data, frames, self.native, self.size)

    def finish(self) -> None:
        """Check, after the last box, that the file holds no frame past the counted ones.

        Raises:
            FrameCountError: It holds more.
        """
        self._fill(self.frames)
        extra = sum(1 for _ in self._decoded)
        if extra:
            raise FrameCountError(f"video decoded to {self.frames + extra} frames, not the "
                                  f"{self.frames} its container counted")

    def read(self, reads: Sequence[tuple[int, int]]) -> torch.Tensor:
        """The box ``reads`` ([start, stop) on time, rows, columns; stops may pass the end)
        of the padded video -> (1, 3, *(stop - start)) float32, past the end filled by
        replicating the last frame, row or column.

        Raises:
            ValueError: A box before an earlier box's start.
            MediaDecodeError: The file cannot be decoded this far, or decodes to fewer
                frames than counted (``FrameCountError``).
        """
        (t0, t1), *space = reads
        last = self.frames - 1
        if min(t0, last) < self._first:
            raise ValueError(f"frame {t0} was read past already (the source moves forward)")
        self._fill(min(t1, self.frames))
        drop = min(t0, last) - self._first
        del self._buffer[:drop]
        self._first += drop
        start, stop = min(t0, last), min(t1, self.frames)
        picked = self._buffer[start - self._first : stop - self._first]
        pads, index = [(t1 - t0) - (stop - start)], []
        for (lo, hi), n in zip(space, self.size, strict=True):
            begin = min(lo, n - 1)
            index.append(slice(begin, min(hi, n)))
            pads.append((hi - lo) - (min(hi, n) - begin))
        if self.size == self.native:  # (H, W, 3) uint8 frames
            box = _to_unit_range(np.stack([f[index[0], index[1]] for f in picked]))
            box = box.permute(3, 0, 1, 2)
        else:  # (3, H, W) float frames
            box = torch.from_numpy(np.stack([f[:, index[0], index[1]] for f in picked], axis=1))
        box = box.unsqueeze(0)
        if any(pads):
            box = F.pad(box, [0, pads[2], 0, pads[1], 0, pads[0]], mode="replicate")
        return box.to(self.device)

    def _fill(self, stop: int) -> None:
        """Decode until frame ``stop - 1`` is buffered."""
        if self._decoded is None:
            self._decoded = self._frames()
        while self._first + len(self._buffer) < stop:
            try:
                self._buffer.append(next(self._decoded))
            except StopIteration:
                raise FrameCountError(
                    f"video decoded to {self._first + len(self._buffer)} frames, not the "
                    f"{self.frames} counted"
                ) from None

    def _frames(self) -> Iterator[np.ndarray]:
        with av.open(io.BytesIO(self.data)) as container:
            stream = container.streams.video[0]
            for frame in _decoded_frames(container, stream):
                pixels = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                if pixels.shape[:2] != self.native:
                    raise MediaDecodeError(f"a frame of {pixels.shape[1]}x{pixels.shape[0]} "
                                           f"in a video of {self.native[1]}x{self.native[0]}")
                if self.size == self.native:
                    yield pixels
                else:
                    yield _resize_frame(pixels, self.size)


def _decoded_frames(container, stream) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, a decoder failure raised as ``MediaDecodeError``."""
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except av.error.FFmpegError as error:
            raise MediaDecodeError(f"video cannot be decoded: {error}") from None
        yield frame


def _resize_frame(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pixels: (H, W, 3) uint8 -> (3, *size) float32 in [-1, 1], as ``prepare`` resizes."""
    one = _to_unit_range(pixels.transpose(2, 0, 1)[:, None])  # (3, 1, H, W)
    return _resize_frames(one, size)[:, 0].numpy()


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """pixels: (H, W, 3) as stored -> as displayed, turned ``rotation`` degrees
    counter-clockwise (PyAV's reading of the display matrix; a portrait phone video is
    stored landscape with -90)."""
    if rotation % 90:
        raise ValueError(f"video display rotation of {rotation} degrees is not supported")
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, k=turns)) if turns else pixels


def _clip(video: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """video: (C, T, H, W) -> (C, length, H, W) from `start`.

    The last frame repeats past the end.
    """
    index = torch.arange(start, start + length).clamp(max=video.shape[1] - 1)
    return video[:, index]


def _resize_frames(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """video: (C, T, H, W) float -> (C, T, *size)."""
    frames = video.permute(1, 0, 2, 3)
    resized = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.permute(1, 0, 2, 3)


def _mp4_bytes(x: torch.Tensor, meta: dict) -> bytes:
    """x: (N clips, C, T, h, w) float -> MP4 (H.264) of the original frame count and size."""
    starts = meta.get("clip_starts")
    if not isinstance(starts, list) or len(starts) != x.shape[0]:
        raise ValueError(f"media description: clip_starts must list {x.shape[0]} clip starts")
    frames = _check_int(
        meta,
        "frames",
        1,
        max((_check_int({"start": s}, "start", 0) for s in starts), default=0) + x.shape[2],
    )
    height, width = _check_int(meta, "height", 1), _check_int(meta, "width", 1)
    _check_pixels(width, height, MediaConfig("video"), "video frame")
    fps = meta.get("fps")
    if fps is not None and not (isinstance(fps, int | float) and 0 < fps <= 1000):
        raise ValueError(f"media description: fps={fps!r} is not a frame rate")
    video = assemble_clips(x, starts, frames)
    if tuple(video.shape[-2:]) != (height, width):
        video = _resize_frames(video, (height, width))
    return encode_mp4(to_uint8(video).permute(1, 2, 3, 0).numpy(), fps or 8.0)


def assemble_clips(clips: torch.Tensor, starts: list[int], frames: int) -> torch.Tensor:
    """clips: (N, C, T, h, w) float -> the video (C, frames, h, w) they cover; where clips
    overlap, the later one wins.

    Every frame must lie in some clip (ValueError otherwise): `starts` can come from an
    untrusted header or shard, and a gap would fill its frames with uninitialized memory,
    different on every run, in the output.
    """
    video = torch.empty(clips.shape[1], frames, *clips.shape[-2:])
    covered = torch.zeros(frames, dtype=torch.bool)
    for clip, start in zip(clips, starts, strict=True):
        if not 0 <= start < frames:
            raise ValueError(
                f"media description: clip start {start} lies outside the {frames} frames"
            )
        stop = min(start + clip.shape[1], frames)
        video[:, start:stop] = clip[:, : stop - start]
        covered[start:stop] = True
    if not bool(covered.all()):
        gap = int((~covered).nonzero()[0])
        raise ValueError(
            f"media description: clip_starts {starts} leave frame {gap} of {frames} in no clip"
        )
    return video


def encode_mp4(
    frames: np.ndarray, fps: float, *, codec: str = "libx264", crf: int = 18, preset: str = "fast"
) -> bytes:
    """frames: (T, H, W, 3) uint8 -> MP4 bytes at constant rate factor ``crf``; 4:2:0 chroma
    needs even sizes, so odd ones keep 4:4:4."""
    with Mp4Writer(*frames.shape[1:3], fps, codec=codec, crf=crf, preset=preset) as writer:
        writer.write(frames)
    return writer.data


def _to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]; numpy, because small torch ops stall on busy CPUs."""
    x = pixels.astype(np.float32)
    x /= 127.5
    x -= 1.0
    return torch.from_numpy(x)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """x: float in [-1, 1] (clamped) -> uint8 in [0, 255], same shape."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


_PREPARE = {"image": _prepare_image, "audio": _prepare_audio, "video": _prepare_video}
