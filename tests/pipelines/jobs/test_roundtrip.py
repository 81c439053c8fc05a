"""Media shards -> codes -> media, for each modality, on small real data."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
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
from vqtok.pipelines.data.media import prepare
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.encode import whole_media_config


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
    inputs, codes, media = _encode_decode(checkpoints["audio-vq-16k"], audio_shards, tmp_path)
    model = vqtok.load(checkpoints["audio-vq-16k"])
    for key, fields in inputs.items():
        ext = next(iter(fields))
        info = soundfile.info(io.BytesIO(fields[ext]))
        restored, rate = soundfile.read(io.BytesIO(media[key]["wav"]))
        assert rate == info.samplerate and restored.shape == (info.frames,)
        array, meta = unpack_codes(codes[key])
        # One code stream for the whole file: the codes of the whole signal.
        length = meta["media"]["model_length"]
        assert array.shape == (1, -(-length // 320)) and "cut" not in meta
        waves = prepare(fields[ext], whole_media_config(model, MediaOptions()))[0]
        assert np.array_equal(array, model.encode(waves).numpy())


def test_audio_windows_are_cut_from_the_whole_stream(audio_shards, checkpoints, tmp_path):
    """--window-seconds 1: windows of 50 codes sliced from the whole file's codes (the last
    padded with the last code), and decode joins them back into the same audio."""
    checkpoint = checkpoints["audio-vq-16k"]
    whole_in, whole, whole_media = _encode_decode(checkpoint, audio_shards, tmp_path / "w")
    _, cut, cut_media = _encode_decode(checkpoint, audio_shards, tmp_path / "c",
                                       window_seconds=1.0)
    for key in whole_in:
        stream, _ = unpack_codes(whole[key])
        windows, meta = unpack_codes(cut[key])
        total = stream.shape[1]
        assert meta["cut"] == {"length": 50, "stride": 50, "total": total}
        assert windows.shape == (-(-total // 50), 50)
        flat = windows.reshape(-1)
        assert np.array_equal(flat[:total], stream[0]) and (flat[total:] == stream[0, -1]).all()
        assert cut_media[key]["wav"] == whole_media[key]["wav"]


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
        frames = meta["media"]["frames"]
        assert meta["media"]["clip_starts"] == [0] and "cut" not in meta
        assert array.shape == (1, 1 + -(-(frames - 1) // 4), source.height // 8, source.width // 8)


def test_video_resized_overlapping_clips_restore_original(video_shards, checkpoints, tmp_path):
    inputs, codes, media = _encode_decode(checkpoints["video-vq-t4s8"], video_shards, tmp_path,
                                          frame_size=(32, 32), clip_frames=17, clip_stride=8)
    for key, fields in inputs.items():
        with (
            av.open(io.BytesIO(fields["mp4"])) as original,
            av.open(io.BytesIO(media[key]["mp4"])) as restored,
        ):
            source, out = original.streams.video[0], restored.streams.video[0]
            assert (out.width, out.height) == (source.width, source.height)
            assert sum(1 for _ in restored.decode(out)) == sum(1 for _ in original.decode(source))
        array, meta = unpack_codes(codes[key])
        # Clips of 5 latent frames (17 frames) every 2 latent frames (8 frames), cut from
        # the whole video's stream of `total` latent frames.
        total = 1 + -(-(meta["media"]["frames"] - 1) // 4)
        assert meta["cut"] == {"length": 5, "stride": 2, "total": total}
        assert array.shape == (1 + max(0, -(-(total - 5) // 2)), 5, 4, 4)
        # Overlapping clips share their codes.
        for before, after in zip(array[:-1], array[1:], strict=True):
            assert np.array_equal(after[:3], before[2:])


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


def test_max_side_shrinks_for_the_model_and_decode_restores_the_size(
    image_shards, video_shards, checkpoints, tmp_path
):
    """--max-side 32: images and video frames (all larger) code with their longer side at
    32 pixels, aspect kept; the decoded media has the original size."""
    for preset, shards in (("image-vq-f8", image_shards), ("video-vq-t4s8", video_shards)):
        model = vqtok.load(checkpoints[preset])
        inputs, codes, media = _encode_decode(checkpoints[preset], shards, tmp_path / preset,
                                              max_side=32)
        for key, fields in inputs.items():
            array, meta = unpack_codes(codes[key])
            if preset == "image-vq-f8":
                original = Image.open(io.BytesIO(fields[next(e for e in fields if e != "cls")]))
                width, height = original.size
                assert Image.open(io.BytesIO(media[key]["png"])).size == original.size
            else:
                with av.open(io.BytesIO(fields["mp4"])) as source:
                    height, width = source.streams.video[0].height, source.streams.video[0].width
                with av.open(io.BytesIO(media[key]["mp4"])) as restored:
                    out = restored.streams.video[0]
                    assert (out.height, out.width) == (height, width)
            scale = 32 / max(height, width)
            shrunk = [round(height * scale), round(width * scale)]
            assert meta["media"]["input_size"][-2:] == shrunk and 32 in shrunk
            spatial = meta["media"]["input_size"][:-2] + shrunk  # (T,) for video
            assert array.shape[-2:] == model.latent_shape(spatial)[-2:]


def test_clip_stride_without_clip_frames_is_refused(video_shards, checkpoints, tmp_path):
    config = EncodeConfig(progress=False, media=MediaOptions(clip_stride=8))
    with pytest.raises(UsageError, match="clip_stride needs clip_frames"):
        encode_shards(checkpoints["video-vq-t4s8"], str(video_shards), tmp_path / "c", config)
    assert not (tmp_path / "c").exists()
