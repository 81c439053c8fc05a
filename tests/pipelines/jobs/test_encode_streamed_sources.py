"""Encoding streamed sources: a video's frames counted from the container, a wrong count
found while decoding and the video encoded again with the decoded count; a decoder failure
partway logged with stage "decode", not "model"; a whole audio signal read box by box."""

from __future__ import annotations

from pathlib import Path

import pytest

import vqtok
from vqtok.pipelines.config import ErrorOptions, RuntimeOptions
from vqtok.pipelines.data.batches import PreparedBatch, PreparedSample, ShardEnd
from vqtok.pipelines.data.media import (
    MediaConfig,
    VideoSource,
    open_audio,
    open_video,
    prepare,
)
from vqtok.pipelines.data.tario import read_samples
from vqtok.pipelines.errors import ErrorPolicy
from vqtok.pipelines.jobs.codes import code_meta, unpack_codes
from vqtok.pipelines.jobs.common import ShardOutputs
from vqtok.pipelines.jobs.encode import EncodeConfig, ShardEncoder, encode_video

VIDEO = Path(__file__).parents[2] / "data" / "video"
AUDIO = Path(__file__).parents[2] / "data" / "audio"


@pytest.mark.parametrize("counted", [20, 24, 30])
def test_a_wrong_container_count_is_recounted_and_the_codes_are_the_whole_videos(
    checkpoints, counted
):
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    data = (VIDEO / "pan.mp4").read_bytes()  # 24 frames of 64x64
    whole, _ = prepare(data, MediaConfig("video"))
    codes, source = encode_video(model, VideoSource(data, counted, (64, 64), (64, 64)), 1 << 30)
    assert source.frames == 24
    assert (codes == model.encode(whole).numpy()).all()


def test_a_decoder_failure_partway_is_logged_as_decode(checkpoints, tmp_path):
    """A stream whose frames change size partway (here: a source told the wrong size)
    fails while the model reads it; the log names the decoder, not the model."""
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    good, meta = open_video((VIDEO / "pan.mp4").read_bytes(), MediaConfig("video"))
    bad = VideoSource((VIDEO / "zoom.mp4").read_bytes(), 17, (64, 64), (64, 64))  # 64x96
    config = EncodeConfig(errors=ErrorOptions(on_error="skip"), progress=False)
    outputs = ShardOutputs(tmp_path)
    with ShardEncoder(model, outputs, config, ErrorPolicy("skip")) as encoder:
        for key, source in (("good", good), ("bad", bad)):
            sample = PreparedSample(key, 1, {"source": "mp4", **meta})
            encoder.handle(PreparedBatch("shard", [sample], source))
        errors = encoder.open_shards["shard"].errors
    assert [(e.key, e.stage) for e in errors] == [("bad", "decode")]
    assert "a frame of 96x64 in a video of 64x64" in errors[0].message


def test_an_audio_source_is_encoded_to_the_whole_signals_codes(checkpoints, tmp_path):
    """A shard reader that gives a whole signal as a source (`open_audio`) gets the codes
    of the signal decoded whole, written with the meta `prepare` gives."""
    model = vqtok.load(checkpoints["audio-vq-16k"])
    data = (AUDIO / "weather.flac").read_bytes()
    config = MediaConfig("audio", channels=1, sample_rate=16000, window_seconds=None)
    whole, meta = prepare(data, config)
    source, source_meta = open_audio(data, config)
    outputs = ShardOutputs(tmp_path)
    encode = EncodeConfig(progress=False, runtime=RuntimeOptions(max_memory="1MiB"))
    with ShardEncoder(model, outputs, encode, ErrorPolicy("raise")) as encoder:
        sample = PreparedSample("weather", 1, {"source": "flac", **source_meta})
        assert encoder.handle(PreparedBatch("shard", [sample], source))[:2] == (1, 0)
        stats = encoder.handle(ShardEnd("shard", 1))[2]
    assert stats["count"] == 1
    (codes_sample,) = list(read_samples(str(outputs.tar("shard"))))
    codes, _ = unpack_codes(codes_sample.fields, None)
    assert (codes == model.encode(whole).numpy()).all()
    assert code_meta(codes_sample.fields)["media"]["model_length"] == meta["model_length"]
