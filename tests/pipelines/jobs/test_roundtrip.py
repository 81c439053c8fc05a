"""Media shards -> codes -> media, for each modality, on small real data."""

from __future__ import annotations

import io

import av
import numpy as np
import soundfile
from PIL import Image

import vqtok
from vqtok.pipelines import (
    DecodeConfig,
    EncodeConfig,
    decode_shards,
    encode_shards,
    read_samples,
    unpack_codes,
)
from vqtok.pipelines.config import MediaOptions, RuntimeOptions


def _samples(folder):
    return {s.key: s.fields for tar in sorted(folder.glob("*.tar")) for s in read_samples(str(tar))}


def _encode_decode(checkpoint, shards, tmp_path, **media):
    config = EncodeConfig(
        workers=1, progress=False, media=MediaOptions(**media), runtime=RuntimeOptions(batch_size=4)
    )
    summary = encode_shards(checkpoint, str(shards), tmp_path / "codes", config)
    decode_shards(
        checkpoint, str(tmp_path / "codes"), tmp_path / "media", DecodeConfig(progress=False)
    )
    inputs, codes, media = (
        _samples(shards),
        _samples(tmp_path / "codes"),
        _samples(tmp_path / "media"),
    )
    assert list(codes) == list(inputs) == list(media)  # same keys, same order
    assert summary.samples == len(inputs) and summary.skipped == 0
    assert [p.name for p in sorted((tmp_path / "codes").glob("*.tar"))] == [
        p.name for p in sorted(shards.glob("*.tar"))
    ]
    return inputs, codes, media


def test_image_round_trip_keeps_size_and_codes(image_shards, checkpoints, tmp_path):
    checkpoint = checkpoints["image-vq-f8"]
    inputs, codes, media = _encode_decode(checkpoint, image_shards, tmp_path)
    model = vqtok.load(checkpoint)
    for key, fields in inputs.items():
        ext = next(e for e in fields if e != "cls")
        original = Image.open(io.BytesIO(fields[ext]))
        restored = Image.open(io.BytesIO(media[key]["png"]))
        assert restored.size == original.size and restored.mode == "RGB"
        array, meta = unpack_codes(codes[key])
        assert array.dtype == np.uint16 and meta["model_id"] == model.model_id
        width, height = original.size
        assert array.shape == (1, *model.latent_shape((height, width)))
        assert meta["media"]["height"] == height and meta["media"]["width"] == width


def test_rvq_codes_keep_their_levels(image_shards, checkpoints, tmp_path):
    _, codes, _ = _encode_decode(checkpoints["image-rvq-f8"], image_shards, tmp_path)
    array, meta = unpack_codes(next(iter(codes.values())))
    assert array.shape[1] == meta["num_levels"] == 4 and meta["layout"] == "pieces,levels,latent"


def test_audio_round_trip_keeps_rate_and_length(audio_shards, checkpoints, tmp_path):
    inputs, codes, media = _encode_decode(
        checkpoints["audio-vq-16k"], audio_shards, tmp_path, window_seconds=1.0
    )
    for key, fields in inputs.items():
        ext = next(iter(fields))
        info = soundfile.info(io.BytesIO(fields[ext]))
        restored, rate = soundfile.read(io.BytesIO(media[key]["wav"]))
        assert rate == info.samplerate and restored.shape == (info.frames,)
        array, meta = unpack_codes(codes[key])
        window = meta["media"]["window"]
        assert window == 16000 and array.shape == (meta["media"]["num_windows"], window // 320)
        assert meta["media"]["num_windows"] == -(-info.frames // window)


def test_video_round_trip_keeps_frames_and_size(video_shards, checkpoints, tmp_path):
    inputs, codes, media = _encode_decode(checkpoints["video-vq-t4s8"], video_shards, tmp_path)
    for key, fields in inputs.items():
        with (
            av.open(io.BytesIO(fields["mp4"])) as original,
            av.open(io.BytesIO(media[key]["mp4"])) as restored,
        ):
            source, out = original.streams.video[0], restored.streams.video[0]
            assert (out.width, out.height) == (source.width, source.height)
            assert sum(1 for _ in restored.decode(out)) == sum(1 for _ in original.decode(source))
        array, meta = unpack_codes(codes[key])
        clips = len(meta["media"]["clip_starts"])
        assert clips == -(-meta["media"]["frames"] // 17)
        assert array.shape == (clips, 5, source.height // 8, source.width // 8)


def test_video_resized_overlapping_clips_restore_original(video_shards, checkpoints, tmp_path):
    inputs, codes, media = _encode_decode(checkpoints["video-vq-t4s8"], video_shards, tmp_path,
                                          frame_size=(32, 32), clip_stride=8)
    for key, fields in inputs.items():
        with (
            av.open(io.BytesIO(fields["mp4"])) as original,
            av.open(io.BytesIO(media[key]["mp4"])) as restored,
        ):
            source, out = original.streams.video[0], restored.streams.video[0]
            assert (out.width, out.height) == (source.width, source.height)
            assert sum(1 for _ in restored.decode(out)) == sum(1 for _ in original.decode(source))
        array, meta = unpack_codes(codes[key])
        starts = meta["media"]["clip_starts"]
        assert (
            starts == list(range(0, len(starts) * 8, 8))
            and starts[-1] + 17 >= meta["media"]["frames"]
        )
        assert array.shape[-2:] == (4, 4)


def test_decode_to_files_named_by_key(image_shards, checkpoints, tmp_path):
    checkpoint = checkpoints["image-vq-f8"]
    encode_shards(
        checkpoint, str(image_shards), tmp_path / "codes", EncodeConfig(workers=0, progress=False)
    )
    decode_shards(checkpoint, str(tmp_path / "codes"), tmp_path / "files",
                  DecodeConfig(output_format="files", progress=False))
    assert sorted(p.stem for p in (tmp_path / "files").glob("*.png")) == sorted(
        _samples(image_shards)
    )
