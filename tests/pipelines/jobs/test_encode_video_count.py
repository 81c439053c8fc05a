"""Encoding a streamed video: frames counted from the container, a wrong count found while
decoding and the video encoded again with the decoded count; a decoder failure partway is
logged with stage "decode", not "model"."""

from __future__ import annotations

from pathlib import Path

import pytest

import vqtok
from vqtok.pipelines.config import ErrorOptions
from vqtok.pipelines.data.batches import PreparedBatch, PreparedSample
from vqtok.pipelines.data.media import MediaConfig, VideoSource, open_video, prepare
from vqtok.pipelines.errors import ErrorPolicy
from vqtok.pipelines.jobs.common import ShardOutputs
from vqtok.pipelines.jobs.encode import EncodeConfig, ShardEncoder, encode_video

VIDEO = Path(__file__).parents[2] / "data" / "video"


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
