"""`compress` and `decompress` of audio and video go through the streamed, budgeted paths:
a whole video is decoded as the encoder reads it, windows and clips one at a time, and a
whole signal is decoded and written in time slabs; the files equal the whole-input ones."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch
from helpers.media import photo_frames

import vqtok
from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    compress_bytes,
    decode_codes,
    decompress_bytes,
    media_meta,
    read_vqt,
)
from vqtok.pipelines.config import MediaOptions, RuntimeOptions
from vqtok.pipelines.data.media import MediaConfig, prepare, restore
from vqtok.pipelines.errors import UsageError

DATA = Path(__file__).parents[2] / "data"


def _clip(frames: int, side: int) -> bytes:
    """An H.264 clip of `frames` frames of `side` x `side` panning over a real photo."""
    photo = photo_frames(1)[0].resize((side * 2, side))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for t in range(frames):
            view = photo.crop((t % side, 0, t % side + side, side))
            container.mux(stream.encode(av.VideoFrame.from_image(view)))
        container.mux(stream.encode())
    return buffer.getvalue()


def _codes(model, vqt: bytes) -> np.ndarray:
    header, payload = read_vqt(vqt)
    return decode_codes(model, header, payload)


def _config(budget: str = "1GiB", **media) -> CompressConfig:
    return CompressConfig(media=MediaOptions(**media),
                          runtime=RuntimeOptions(batch_size=3, max_memory=budget))


def test_a_whole_video_compresses_to_the_whole_clips_codes(checkpoints):
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    data = _clip(30, 48)
    whole, meta = prepare(data, MediaConfig("video"))
    vqt, _ = compress_bytes(model, data, _config())
    assert (_codes(model, vqt) == model.encode(whole).numpy()).all()
    assert read_vqt(vqt)[0]["media"]["frames"] == meta["frames"] == 30


@pytest.mark.parametrize("media", [{"clip_frames": 8}, {"clip_frames": 8, "clip_stride": 4}])
def test_video_clips_are_read_one_at_a_time_with_the_same_codes(checkpoints, media):
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    data = (DATA / "video" / "pan.mp4").read_bytes()
    clips, _ = prepare(data, MediaConfig("video", clip_frames=8,
                                         clip_stride=media.get("clip_stride")))
    vqt, _ = compress_bytes(model, data, _config(**media))
    assert (_codes(model, vqt) == model.encode(clips).numpy()).all()
    _, restored = decompress_bytes(model, vqt)
    _, expected = restore(model.decode(torch.from_numpy(_codes(model, vqt)), clips.shape[2:]),
                          media_meta(model, read_vqt(vqt)[0]), "video")
    assert restored == expected


def test_audio_windows_are_read_one_at_a_time_with_the_same_codes(checkpoints):
    model = vqtok.load(checkpoints["audio-vq-16k"])
    data = (DATA / "audio" / "hello.flac").read_bytes()
    windows, _ = prepare(data, MediaConfig("audio", channels=1, sample_rate=16000,
                                           window_seconds=0.5))
    vqt, _ = compress_bytes(model, data, _config(window_seconds=0.5))
    assert (_codes(model, vqt) == model.encode(windows).numpy()).all()


def test_a_whole_audio_signal_is_read_as_the_encoder_asks_with_the_same_codes(checkpoints):
    """44.1 kHz stereo for a 16 kHz mono model: read in boxes (resampled block by block,
    mixed down) under a budget that cuts it in time, the codes of the whole signal."""
    model = vqtok.load(checkpoints["audio-vq-16k"])
    speech, _ = soundfile.read(DATA / "audio" / "weather.flac", dtype="float32")
    stretched = np.interp(np.arange(0, len(speech), 16000 / 44100), np.arange(len(speech)),
                          speech)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([stretched, 0.5 * stretched], axis=1), 44100, format="WAV")
    data = buffer.getvalue()
    whole, meta = prepare(data, MediaConfig("audio", channels=1, sample_rate=16000,
                                            window_seconds=None, mono=True))
    expected = model.encode(whole).numpy()
    for budget in ("1GiB", "1MiB"):  # 1 MiB: pieces of 30 code positions
        vqt, _ = compress_bytes(model, data, _config(budget, mono=True))
        assert (_codes(model, vqt) == expected).all()
        assert read_vqt(vqt)[0]["media"]["model_length"] == meta["model_length"]


@pytest.mark.parametrize(("preset", "name", "small"),  # 8 time slabs of the audio, 2 of the video
                         [("audio-vq-16k", "audio/hello.wav", 1 << 20),
                          ("video-vq-t4s8", "video/zoom.mp4", 4 << 20)])
def test_a_whole_signal_decompresses_in_slabs_to_the_whole_decodes_file(
    checkpoints, preset, name, small
):
    model = vqtok.load(checkpoints[preset])
    vqt, _ = compress_bytes(model, (DATA / name).read_bytes(), _config())
    header = read_vqt(vqt)[0]
    media = media_meta(model, header)
    codes = torch.from_numpy(_codes(model, vqt))
    decoded = model.decode(codes, media["input_size"]).detach()
    _, expected = restore(decoded, media, header["modality"])
    for budget in (1 << 30, small):
        _, streamed = decompress_bytes(model, vqt, max_bytes=budget)
        # Slabs equal the whole decode up to float reassociation (a few 1e-6), which can
        # move a 16-bit sample or an 8-bit pixel by one level before the MP4 is coded.
        got, want = _media(streamed, header["modality"]), _media(expected, header["modality"])
        assert got.shape == want.shape
        if header["modality"] == "audio":
            assert np.abs(got - want).max() <= 1
        else:
            assert np.abs(got - want).mean() < 0.05


def _media(data: bytes, modality: str) -> np.ndarray:
    """Audio bytes -> int16 samples (T, C) as int32; MP4 -> frames (T, H, W, 3) as int32."""
    if modality == "audio":
        return soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)[0].astype(np.int32)
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
                        ).astype(np.int32)


def test_a_budget_too_small_for_one_piece_is_a_usage_error_naming_it(checkpoints):
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    with pytest.raises(UsageError, match="needs at least .* raise --max-memory"):
        compress_bytes(model, (DATA / "video" / "pan.mp4").read_bytes(), _config("1KiB"))


def _peak_rss_of_compress(checkpoint: Path, source: Path, target: Path) -> int:
    """Peak RSS in bytes of `vqtok compress` in a child process (RUSAGE_CHILDREN of a fresh
    parent: the child's own peak)."""
    script = (
        "import resource, subprocess, sys\n"
        "code = subprocess.call([sys.executable, '-m', 'vqtok.cli.main', 'compress', "
        f"{str(checkpoint)!r}, {str(source)!r}, {str(target)!r}, '--max-side', '16', "
        "'--max-memory', '256MiB'], stdout=subprocess.DEVNULL)\n"
        "assert code == 0, code\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip())


@pytest.mark.slow  # two CLI processes: importing torch alone takes seconds on a small CPU
def test_compressing_a_long_video_holds_a_few_frames_not_the_video(checkpoints, tmp_path):
    """300 frames of 512x512 (236 MB as 8-bit frames, 944 MB as the float video a whole
    decode builds) encoded at 16x16: compress peaks within 64 MiB of a one-frame clip's."""
    checkpoint = checkpoints["video-vq-t4s8"]
    (tmp_path / "long.mp4").write_bytes(_clip(300, 512))
    (tmp_path / "short.mp4").write_bytes(_clip(1, 512))
    long = _peak_rss_of_compress(checkpoint, tmp_path / "long.mp4", tmp_path / "long.vqt")
    short = _peak_rss_of_compress(checkpoint, tmp_path / "short.mp4", tmp_path / "short.vqt")
    assert long - short < 64 * 2**20, (long, short)
