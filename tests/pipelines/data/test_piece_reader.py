"""`read_pieces`: the pieces `prepare` gives (audio windows, video clips), decoded one at a
time, equal value for value, with the same meta; `open_video` counting frames from the
container, checked as the frames are decoded; `open_audio` reading boxes of the whole
signal as an encoder asks for them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from vqtok.models.tiling import replicate_read
from vqtok.pipelines.data.media import (
    BlockResampler,
    FrameCountError,
    MediaConfig,
    VideoSource,
    open_audio,
    open_video,
    prepare,
    read_pieces,
)

DATA = Path(__file__).parents[2] / "data"


def _long_speech(rate: int, channels: int) -> bytes:
    """Real speech (hello.wav, 16 kHz) resampled by soundfile's reader and tiled to ~13 s
    at `rate`, stereo channels phase-shifted: several of the reader's 65536-frame blocks."""
    speech, _ = soundfile.read(DATA / "audio" / "hello.wav", dtype="float32")
    stretched = np.interp(np.arange(0, len(speech), 16000 / rate), np.arange(len(speech)), speech)
    signal = np.tile(stretched, 4)
    columns = [np.roll(signal, 7 * c) * (0.9 - 0.2 * c) for c in range(channels)]
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack(columns, axis=1), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _assert_same(data: bytes, config: MediaConfig) -> int:
    whole, meta = prepare(data, config)
    reader = read_pieces(data, config)
    pieces = list(reader)
    assert len(pieces) == whole.shape[0]
    for piece, expected in zip(pieces, whole, strict=True):
        assert piece.dtype == torch.float32 and piece.equal(expected)
    assert reader.meta == meta
    return len(pieces)


@pytest.mark.parametrize(
    ("rate", "channels", "model_channels", "model_rate"),
    [(16000, 1, 1, 16000), (44100, 2, 1, 16000), (22050, 1, 2, 24000), (48000, 2, 2, 16000)],
)
def test_audio_windows_equal_prepares(rate, channels, model_channels, model_rate):
    data = _long_speech(rate, channels)
    config = MediaConfig("audio", channels=model_channels, sample_rate=model_rate,
                         window_seconds=0.7, mono=True)
    assert _assert_same(data, config) > 10


@pytest.mark.parametrize("name", ["hello.ogg", "weather.flac"])
def test_compressed_audio_windows_equal_prepares(name):
    config = MediaConfig("audio", channels=1, sample_rate=24000, window_seconds=0.25)
    _assert_same((DATA / "audio" / name).read_bytes(), config)


@pytest.mark.parametrize(
    "options",
    [{"clip_frames": 4}, {"clip_frames": 5, "clip_stride": 3}, {"clip_frames": 40},
     {"clip_frames": 6, "max_side": 40}, {"clip_frames": 7, "frame_size": (30, 20)}],
)
@pytest.mark.parametrize("name", ["zoom.mp4", "pan.mp4"])
def test_video_clips_equal_prepares(name, options):
    _assert_same((DATA / "video" / name).read_bytes(), MediaConfig("video", **options))


def test_a_file_too_large_to_hold_is_read_piece_by_piece():
    """`prepare` refuses a file that decodes to more values than it may hold; the reader
    holds a piece at a time, so only the streamed bound applies to it."""
    video = (DATA / "video" / "pan.mp4").read_bytes()  # 24 frames of 64x64
    small = MediaConfig("video", clip_frames=4, max_decoded_values=64 * 64 * 3 * 10)
    with pytest.raises(ValueError, match="more than"):
        prepare(video, small)
    assert len(list(read_pieces(video, small))) == 6
    audio = _long_speech(16000, 1)
    small = MediaConfig("audio", channels=1, sample_rate=16000, window_seconds=1.0,
                        max_decoded_values=50_000)
    with pytest.raises(ValueError, match="more than"):
        prepare(audio, small)
    assert len(list(read_pieces(audio, small))) == 14
    with pytest.raises(ValueError, match="more than"):
        list(read_pieces(audio, MediaConfig("audio", channels=1, sample_rate=16000,
                                            window_seconds=1.0, max_streamed_values=50_000)))


def test_the_container_count_is_the_decoded_count():
    for name in ("zoom.mp4", "pan.mp4"):
        data = (DATA / "video" / name).read_bytes()
        by_container, meta = open_video(data, MediaConfig("video"))
        by_decoding, decoded_meta = open_video(data, MediaConfig("video"), count="decode")
        assert by_container.frames == by_decoding.frames == meta["frames"]
        assert meta == decoded_meta == prepare(data, MediaConfig("video"))[1]


@pytest.mark.parametrize("wrong", [20, 30])
def test_a_wrong_count_is_found_while_decoding_and_recounted(wrong):
    data = (DATA / "video" / "pan.mp4").read_bytes()  # 24 frames
    source = VideoSource(data, wrong, (64, 64), (64, 64))
    with pytest.raises(FrameCountError, match="24 frames"):
        source.read([(0, wrong), (0, 64), (0, 64)])
        source.finish()
    recounted = source.recounted()
    assert recounted.frames == 24
    whole, _ = prepare(data, MediaConfig("video"))
    assert recounted.read([(0, 24), (0, 64), (0, 64)]).equal(whole)
    recounted.finish()  # nothing past the count


BOXES = [(0, 5000), (3000, 70001), (70000, 150000), (140000, 250000)]


@pytest.mark.parametrize(
    ("rate", "channels", "model_channels", "model_rate"),
    [(16000, 1, 1, 16000), (44100, 2, 1, 16000), (22050, 1, 2, 24000), (48000, 2, 2, 16000)],
)
def test_an_audio_source_reads_the_boxes_of_the_whole_signal(rate, channels, model_channels,
                                                             model_rate):
    """Boxes in time order, overlapping as an encoder's halos do, the last past the end."""
    data = _long_speech(rate, channels)
    config = MediaConfig("audio", channels=model_channels, sample_rate=model_rate,
                         window_seconds=None, mono=True)
    whole, meta = prepare(data, config)
    source, source_meta = open_audio(data, config)
    assert source.shape == tuple(whole.shape) and source_meta == meta
    for box in BOXES:
        assert source.read([box]).equal(replicate_read(whole, [box]))
    with pytest.raises(ValueError, match="read past already"):
        source.read([(0, 10)])


def test_resampling_in_blocks_stays_within_rounding_of_torchaudio():
    """The blocks make every reader compute the same samples; they are torchaudio's
    whole-signal resampling up to the convolution's float rounding."""
    data = _long_speech(44100, 1)
    waves = torch.from_numpy(soundfile.read(io.BytesIO(data), dtype="float32")[0])[None]
    blocked = BlockResampler(44100, 16000).whole(waves)
    whole = torchaudio.functional.resample(waves, 44100, 16000)
    assert blocked.shape == whole.shape
    assert (blocked - whole).abs().max() < 1e-6
