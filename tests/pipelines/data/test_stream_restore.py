"""`restore_stream`: media written slab by slab (audio blocks resampled as they come, video
muxed frame by frame) is byte for byte what `restore` writes from the whole decoded piece."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import soundfile
import torch
import torchaudio

from vqtok.pipelines.data.media import (
    MediaConfig,
    StreamResampler,
    prepare,
    restore,
    restore_stream,
)

DATA = Path(__file__).parents[2] / "data"


def _slabs(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """x: (1, C, T, ...) cut along T into slabs of the given sizes (the last takes the rest)."""
    bounds = [0]
    for size in sizes:
        bounds.append(min(bounds[-1] + size, x.shape[2]))
    bounds.append(x.shape[2])
    return [x[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


@pytest.mark.parametrize(("file_rate", "channels"), [(16000, 1), (22050, 1), (44100, 2)])
@pytest.mark.parametrize("audio_format", ["wav", "flac"])
def test_streamed_audio_equals_the_whole_restore(file_rate, channels, audio_format):
    """Speech at the model's rate, below it and above it; mono to a stereo model (restored
    mono); slabs of odd sizes, one shorter than the resampler's kernel."""
    waves, rate = soundfile.read(DATA / "audio" / "hello.wav", dtype="float32")
    waves = torchaudio.functional.resample(torch.from_numpy(waves)[None], rate, file_rate)
    buffer = io.BytesIO()
    soundfile.write(buffer, waves[0].numpy(), file_rate, format="WAV")
    config = MediaConfig("audio", channels=channels, sample_rate=16000, window_seconds=None)
    x, meta = prepare(buffer.getvalue(), config)
    # A decoded piece is longer than the input (padded to the stride): extra samples trail.
    decoded = torch.cat([x, x[:, :, :37]], dim=2).clamp(-0.9, 0.9) * 0.5
    whole = restore(decoded, meta, "audio", audio_format)
    for sizes in ([decoded.shape[2]], [7000, 3, 20000], [1] * 5 + [12345]):
        assert restore_stream(_slabs(decoded, sizes), meta, "audio", audio_format) == whole


def test_streamed_video_equals_the_whole_restore():
    """Frames resized back from max_side 40 to 64x96, in slabs of 1, 5 and the rest."""
    data = (DATA / "video" / "zoom.mp4").read_bytes()
    x, meta = prepare(data, MediaConfig("video", max_side=40))
    decoded = torch.cat([x, x[:, :, -3:]], dim=2)  # a causal decode may run past the frames
    whole = restore(decoded, meta, "video")
    assert restore_stream(_slabs(decoded, [1, 5]), meta, "video") == whole


def test_a_description_longer_than_the_slabs_is_refused():
    x, meta = prepare((DATA / "video" / "pan.mp4").read_bytes(), MediaConfig("video"))
    with pytest.raises(ValueError, match="exceeds the decoded frames"):
        restore_stream(_slabs(x[:, :, :10], [4]), {**meta, "clip_frames": 30, "frames": 30},
                       "video")


def test_block_resampling_equals_the_whole_resampling():
    signal = torch.randn(2, 30001, generator=torch.Generator().manual_seed(0))
    for rate, target in ((16000, 44100), (48000, 16000), (22050, 16000)):
        resampler = StreamResampler(rate, target)
        parts = [resampler.push(signal[:, a : a + 4099]) for a in range(0, 30001, 4099)]
        out = torch.cat([*parts, resampler.finish()], dim=1)
        assert out.equal(torchaudio.functional.resample(signal, rate, target))
        assert resampler.buffer.shape[1] < 4099 + resampler.margin  # never the whole signal
