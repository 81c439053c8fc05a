"""Training crops come from pieces decoded one at a time (`media.read_pieces`), and are the
very crops that decoding each file whole (`media.prepare`) and cropping gave, in the same
order, from the same random draws; an epoch replays exactly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from vqtok.pipelines.data.media import find_media, prepare
from vqtok.pipelines.errors import SampleError
from vqtok.pipelines.training.data import CropBatches, binarize, crop_piece, media_for

DATA = Path(__file__).parents[2] / "data"


class _AudioConfig:
    """The fields of an audio model's config that `media_for` reads."""

    modality, dims, channels, sample_rate = "audio", 1, 1, 16000


class _VideoConfig:
    """The fields of a video model's config that `media_for` reads."""

    modality, dims, channels, clip_frames = "video", 3, 3, 5


class _WholeFiles(CropBatches):
    """The reference: each file decoded whole by `prepare`, then cropped piece by piece."""

    def _sample_pieces(self, url, sample, generator):
        _, data = find_media(sample.fields, self.media.modality)
        pieces, _ = prepare(data, self.media)
        for piece in pieces:
            cropped = crop_piece(piece, self.crop, generator if self.train else None)
            yield binarize(cropped, generator) if self.binarize else cropped


def _shard(path: Path, members: list[tuple[str, str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for key, ext, data in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _long_audio(rate: int) -> bytes:
    speech, _ = soundfile.read(DATA / "audio" / "weather.flac", dtype="float32")
    signal = np.tile(speech, 8)  # ~19 s, several of the reader's blocks
    stretched = np.interp(np.arange(0, len(signal), 16000 / rate), np.arange(len(signal)), signal)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([stretched, 0.5 * stretched], axis=1), rate, format="FLAC")
    return buffer.getvalue()


def _batches(dataset: CropBatches) -> list[torch.Tensor]:
    items = list(dataset)
    assert not [item for item in items if isinstance(item, SampleError)]
    return items


@pytest.mark.parametrize("train", [True, False])
def test_audio_crops_equal_the_whole_files_crops(tmp_path, train):
    hello = (DATA / "audio" / "hello.wav").read_bytes()
    shard = _shard(tmp_path / "a.tar", [("long", "flac", _long_audio(44100)),
                                       ("hello", "wav", hello)])
    media = media_for(_AudioConfig(), [8000], mono=True)
    options = {"batch_size": 3, "train": train, "shuffle_buffer": 5, "seed": 3}
    streamed = _batches(CropBatches([shard], media, [8000], **options))
    whole = _batches(_WholeFiles([shard], media, [8000], **options))
    assert len(streamed) == len(whole) > 5
    assert all(a.equal(b) for a, b in zip(streamed, whole, strict=True))


@pytest.mark.parametrize("binary", [False, True])
def test_video_crops_equal_the_whole_files_crops(tmp_path, binary):
    members = [(name.split(".")[0], "mp4", (DATA / "video" / name).read_bytes())
               for name in ("zoom.mp4", "pan.mp4")]
    shard = _shard(tmp_path / "v.tar", members)
    media = media_for(_VideoConfig(), [5, 40, 48])
    options = {"batch_size": 2, "train": True, "shuffle_buffer": 4, "seed": 11,
               "binarize": binary}
    streamed = _batches(CropBatches([shard], media, [5, 40, 48], **options))
    whole = _batches(_WholeFiles([shard], media, [5, 40, 48], **options))
    assert len(streamed) == len(whole) == 5  # 4 + 5 clips of 5 frames
    assert all(a.equal(b) for a, b in zip(streamed, whole, strict=True))
    again = _batches(CropBatches([shard], media, [5, 40, 48], **options))
    assert all(a.equal(b) for a, b in zip(streamed, again, strict=True))


def test_a_file_failing_partway_keeps_its_crops_and_says_so(tmp_path):
    """A FLAC cut short decodes up to the cut (decoding it whole fails): the windows before
    it are trained on, and the error names the sample and how many crops it gave."""
    data = _long_audio(16000)
    shard = _shard(tmp_path / "cut.tar", [("cut", "flac", data[: len(data) * 2 // 3])])
    media = media_for(_AudioConfig(), [8000], mono=True)
    items = list(CropBatches([shard], media, [8000], batch_size=4, train=False))
    crops = sum(len(item) for item in items if not isinstance(item, SampleError))
    errors = [item for item in items if isinstance(item, SampleError)]
    whole_file_windows = len(prepare(data, media)[0])
    assert 0 < crops < whole_file_windows
    assert [(e.key, e.stage) for e in errors] == [("cut", "decode")]
    assert f"after {crops} pieces" in errors[0].message

