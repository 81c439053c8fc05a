"""Classical codecs as rate-distortion baselines, in memory: Pillow for images, PyAV for
audio (Opus, MP3) and video (H.264).

Each codec has a default sweep of settings (`SWEEPS`); `encode` gives the bytes a user
would store and `decode` what they would get back, in the same form as the reference
(uint8 RGB pixels, or mono float audio at the original rate and length).
"""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image, features

from vqtok.pipelines.data.media import encode_mp4

IMAGE_CODECS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
AUDIO_CODECS = {"opus": ("libopus", "ogg", 48000), "mp3": ("libmp3lame", "mp3", None)}
VIDEO_CODECS = {"h264": "libx264"}
# Qualities for images, kbps for audio, CRF for video (lower CRF: higher quality).
SWEEPS = {
    "jpeg": (10, 30, 50, 70, 90),
    "webp": (10, 30, 50, 70, 90),
    "avif": (10, 30, 50, 70, 90),
    "opus": (6, 12, 24, 48),
    "mp3": (32, 64, 128),
    "h264": (44, 38, 32, 26, 20),
}


def modality_of(codec: str) -> str:
    """"image", "audio" or "video"; ValueError for a codec this module does not know."""
    for modality, codecs in (
        ("image", IMAGE_CODECS),
        ("audio", AUDIO_CODECS),
        ("video", VIDEO_CODECS),
    ):
        if codec in codecs:
            return modality
    raise ValueError(f"unknown baseline {codec!r}; choose from {', '.join(SWEEPS)}")


def unavailable(codec: str) -> str | None:
    """Why `codec` cannot run here (e.g. Pillow built without AVIF), or None when it can."""
    if codec in IMAGE_CODECS and codec != "jpeg" and not features.check(codec):
        return f"this Pillow build has no {codec.upper()} support"
    name = AUDIO_CODECS[codec][0] if codec in AUDIO_CODECS else VIDEO_CODECS.get(codec)
    if name is not None and name not in av.codecs_available:
        return f"this PyAV/FFmpeg build has no {name} encoder"
    return None


def encode_image(pixels: np.ndarray, codec: str, quality: int) -> bytes:
    """pixels: (H, W, 3) uint8 -> compressed bytes at `quality` (0-100)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=IMAGE_CODECS[codec], quality=quality)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Compressed image bytes -> (H, W, 3) uint8."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode_audio(samples: np.ndarray, sample_rate: int, codec: str, kbps: int) -> bytes:
    """samples: mono (T,) float32 in [-1, 1] -> compressed bytes at `kbps`."""
    encoder, container_format, codec_rate = AUDIO_CODECS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=codec_rate or sample_rate, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(
            samples.astype(np.float32)[None], format="flt", layout="mono"
        )
        frame.sample_rate = sample_rate
        for frame_in in (frame, None):
            for packet in stream.encode(frame_in):
                container.mux(packet)
    return buffer.getvalue()


def decode_audio(data: bytes, sample_rate: int, length: int) -> np.ndarray:
    """Compressed audio bytes -> mono (length,) float32 at `sample_rate` (padded or cut)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    parts = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.pad(samples, (0, max(0, length - samples.size)))[:length]


def encode_video(frames: np.ndarray, fps: float, codec: str, crf: int) -> bytes:
    """frames: (T, H, W, 3) uint8 -> MP4 bytes at constant rate factor `crf`."""
    return encode_mp4(frames, fps, codec=VIDEO_CODECS[codec], crf=crf, preset="medium")


def decode_video(data: bytes) -> tuple[np.ndarray, float]:
    """Video bytes -> (frames (T, H, W, 3) uint8, fps)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError("video has no frames")
    return np.stack(frames), fps
