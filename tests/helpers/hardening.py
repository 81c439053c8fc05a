"""What the tests/hardening modules share: small real media made in memory, a time limit."""

from __future__ import annotations

import contextlib
import io
import signal
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from vqtok.pipelines.data.tario import Sample, read_samples
from vqtok.pipelines.errors import SampleError

DATA = Path(__file__).parents[1] / "data"


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) when the block runs longer than `seconds`: a hang is a bug too."""
    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A random RGB PNG of width x height."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def declare_png_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming width x height (CRC fixed), its pixel data unchanged."""
    start = 8 + 8  # signature, then the IHDR chunk's length and type
    body = struct.pack(">II", width, height) + png[start + 8 : start + 13]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return png[:start] + body + crc + png[start + 13 + 4 :]


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "FLOAT") -> bytes:
    """samples: (T,) float -> WAV bytes (32-bit float by default, so NaN and Inf survive)."""
    buffer = io.BytesIO()
    soundfile.write(
        buffer, np.asarray(samples, dtype=np.float32), rate, format="WAV", subtype=subtype
    )
    return buffer.getvalue()


def split_events(url: str, **limits) -> tuple[list[Sample], list[SampleError]]:
    """Read a shard to its end: (samples, errors)."""
    events = list(read_samples(url, **limits))
    return (
        [e for e in events if isinstance(e, Sample)],
        [e for e in events if isinstance(e, SampleError)],
    )
